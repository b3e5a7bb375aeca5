"""all-MiniLM-L6-v2 in ONNX Runtime with the `tokenizers` package: the label path without torch.

The torch encoder (``MiniLMEncoder``) costs the process about 1 GB of RSS and 7 s of imports
(torch + sentence-transformers) for a dozen words per label change. Here the same
computation runs from two files: the ONNX graph of BERT + mean pooling + L2 norm (what
sentence-transformers' Transformer, Pooling and Normalize modules do), exported once from
the package's weights where torch exists, and the package's own ``tokenizer.json`` read by
`tokenizers` (the Rust tokenizer that the HF fast tokenizer wraps, so token ids are the
same by construction).

An export is stored with a manifest naming the sha256 of the weights it came from and of
the ONNX bytes; ``load`` serves a file only when both still match (a reinstalled or
changed MiniLM, or a damaged file, is re-exported where torch exists, refused otherwise).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from lgseg_ros.labels import LabelSetError
from lgseg_ros.runtime.engine_cache import (check_artefact_size, read_manifest_file, read_verified_bytes,
                                            sha256_file)
from lgseg_ros.text.encoders import apply_template, check_labels, check_template, minilm_model_dir

log = logging.getLogger(__name__)

FORMAT = 1
OPSET = 17
# How the export is laid out, recorded in the manifest; a file of another layout is stale.
# 2: the embedding tables (word: 30522 x 384, position) stored as fp16 and cast after the
# lookup, which takes 22 MB off the node's RSS (the file: 90 -> 66 MB) for a cosine to
# the fp32 export of at least 0.9999996 (int8 dynamic quantisation of the MatMuls gave
# 0.974, below the 0.9999 the encoder must keep).
LAYOUT = 2
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# sentence-transformers truncates all-MiniLM-L6-v2 inputs here (sentence_bert_config.json).
DEFAULT_MAX_SEQ = 256
# A label is at most a few hundred characters (labels.validate_labels); refuse tokenising
# anything that would make a batch this large rather than allocate for it.
MAX_TOKENS_PER_BATCH = 1 << 18


class TextArtefactError(RuntimeError):
    """A text-encoder artefact that is missing, stale or damaged, and cannot be rebuilt here."""


def _max_seq_length(model_dir: Path) -> int:
    try:
        return int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, KeyError, ValueError, TypeError, RecursionError):
        return DEFAULT_MAX_SEQ


def source_fingerprint(model_dir: Path) -> dict:
    """What an export depends on: the weights, the tokenizer and the model config."""
    return {"weights_sha256": sha256_file(model_dir / "model.safetensors"),
            "config_sha256": sha256_file(model_dir / "config.json"),
            "max_seq_length": _max_seq_length(model_dir)}


def default_text_dir() -> Path:
    from lgseg_ros.runtime.artefacts import ArtefactError, artefact_write_dir

    try:
        return artefact_write_dir("text")
    except ArtefactError as exc:
        raise TextArtefactError(str(exc)) from None


def export_minilm_onnx(model_dir: Path, path: Path, opset: int = OPSET) -> Path:
    """BERT + mask-weighted mean pooling + L2 norm -> ONNX (needs torch and transformers)."""
    import torch
    from transformers import AutoModel

    from lgseg_ros.text.encoders import _quiet_hf

    _quiet_hf()
    # The eager attention exports as plain MatMul/Softmax; SDPA would work too, but eager is
    # what every exporter version has handled the same way.
    bert = AutoModel.from_pretrained(str(model_dir), local_files_only=True,
                                     attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            # sentence-transformers' Pooling(mean): padding tokens do not count.
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            mean = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    ids = torch.tensor([[101, 7592, 102, 0], [101, 2482, 2482, 102]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    start = time.perf_counter()
    import warnings

    from lgseg_ros.runtime.artefacts import BUILD_LOCK

    # BUILD_LOCK: torch.onnx.export is not reentrant, and the frame path may export at once.
    try:   # a failure (a full disk, a check that fails) leaves no half-written .tmp behind
        with BUILD_LOCK, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(Pooled(bert), (ids, mask, torch.zeros_like(ids)), str(tmp),
                              input_names=list(INPUTS), output_names=["embedding"],
                              dynamic_axes={n: {0: "K", 1: "T"} for n in INPUTS} | {"embedding": {0: "K"}},
                              opset_version=opset, do_constant_folding=True, dynamo=False)
        _embedding_tables_to_fp16(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported the MiniLM text encoder to %s in %.1f s", path, time.perf_counter() - start)
    return path


def _embedding_tables_to_fp16(path: Path) -> None:
    """Store every large initializer that only Gather reads (the embedding tables) as fp16,
    with a Cast to fp32 after each lookup. Only looked-up rows are cast, per call, so the
    table stays fp16 in memory; a Cast of a whole initializer would be constant-folded
    back to fp32 when the session loads."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    tables = set()
    for init in graph.initializer:
        users = readers.get(init.name, [])
        if (init.data_type == TensorProto.FLOAT and int(np.prod(init.dims)) >= 1 << 16 and users
                and all(u.op_type == "Gather" and u.input[0] == init.name for u in users)):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
            tables.add(init.name)
    nodes = []
    for node in graph.node:
        nodes.append(node)
        if node.op_type == "Gather" and node.input[0] in tables:
            out = node.output[0]
            node.output[0] = out + "_fp16"
            nodes.append(helper.make_node("Cast", [out + "_fp16"], [out], to=TensorProto.FLOAT,
                                          name=node.name + "_to_fp32"))
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _manifest_path(onnx_path: Path) -> Path:
    return onnx_path.with_suffix(".json")


def ensure_minilm_onnx(model_dir: Path | None = None, directory: Path | None = None,
                       allow_export: bool = True) -> tuple[Path, dict]:
    """The verified ONNX export of this MiniLM and its manifest; exports on a miss when
    ``allow_export`` and torch are available, else raises TextArtefactError saying why."""
    model_dir = Path(model_dir) if model_dir else minilm_model_dir()
    source = source_fingerprint(model_dir)
    dirs = [Path(directory)] if directory else _search_dirs()
    name = f"minilm_{source['weights_sha256'][:16]}.onnx"
    reasons = []
    from lgseg_ros.runtime.artefacts import trusted_file

    for folder in dirs:
        why = None if directory else trusted_file(folder / name)
        if why:
            reasons.append(why)
            continue
        try:
            manifest = verify(folder / name, source)
            return folder / name, manifest
        except TextArtefactError as exc:
            reasons.append(str(exc))
        except OSError as exc:
            # A 5,000-character $LGSEG_ARTEFACTS raised "File name too long" here and ended
            # the search before the shipped folder was tried (audit round 19).
            reasons.append(f"{str(folder)[:200]}: {exc.strerror}")
    if not allow_export or not _torch_installed():
        raise TextArtefactError(
            "no usable ONNX text encoder (" + "; ".join(reasons) + "). Build it where torch "
            "is installed: `lgseg artefacts` (or `make artefacts`), then copy models/artefacts")
    path = (Path(directory) if directory else default_text_dir()) / name
    export_minilm_onnx(model_dir, path)
    manifest = {"format": FORMAT, "kind": "minilm-text-encoder", "source": source,
                "onnx_sha256": sha256_file(path), "opset": OPSET, "layout": LAYOUT}
    _manifest_path(path).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return path, verify(path, source)


def verify(path: Path, source: dict) -> dict:
    """The manifest of ``path`` if it was exported from ``source`` and its bytes are intact."""
    manifest = read_manifest_file(path, _manifest_path(path), FORMAT, TextArtefactError)
    if manifest.get("source") != source:
        raise TextArtefactError(f"{path}: exported from other MiniLM weights (stale)")
    if manifest.get("layout") != LAYOUT:
        raise TextArtefactError(f"{path}: exported with another layout (stale)")
    check_artefact_size(path, TextArtefactError)
    if sha256_file(path) != manifest.get("onnx_sha256"):
        raise TextArtefactError(f"{path}: bytes fail their recorded sha256 (damaged)")
    return manifest


def _search_dirs() -> list[Path]:
    from lgseg_ros.runtime.artefacts import artefact_dirs

    return [d / "text" for d in artefact_dirs()]


def _torch_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


class OnnxMiniLMEncoder:
    """Same interface and name as ``MiniLMEncoder`` ("minilm": its embeddings are the same,
    so the embedding cache and the model's recorded encoder still apply); returns numpy."""

    dim = 384
    runtime = "onnxruntime"

    def __init__(self, model_dir: str | Path | None = None, template: str | None = None,
                 onnx_path: str | Path | None = None, allow_export: bool = True,
                 threads: int = 1):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.template = check_template(template)
        self.name = "minilm" if model_dir is None else f"minilm:{Path(model_dir).resolve()}"
        folder = Path(model_dir) if model_dir else minilm_model_dir()
        if onnx_path is None:
            onnx_path, manifest = ensure_minilm_onnx(folder, allow_export=allow_export)
            self.onnx_sha256 = manifest["onnx_sha256"]
        else:
            self.onnx_sha256 = sha256_file(onnx_path)
        self.onnx_path = str(onnx_path)
        # The bytes hashed are the bytes run: read once, checked, handed to ONNX Runtime
        # (opening the path again served a file swapped in between; probe round 7).
        model = read_verified_bytes(onnx_path, self.onnx_sha256, TextArtefactError)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # The settings sentence-transformers passes to the HF tokenizer: pad to the longest
        # text in the batch, truncate at max_seq_length.
        self.tokenizer.enable_truncation(_max_seq_length(folder))
        self.tokenizer.enable_padding(pad_id=self.tokenizer.token_to_id("[PAD]") or 0,
                                      pad_token="[PAD]")
        so = ort.SessionOptions()
        # One thread: a label change runs beside the frame path, which has the cores; a
        # dozen short labels take a few ms either way.
        so.intra_op_num_threads = int(threads)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        from lgseg_ros.runtime.ort_session import session_from_bytes

        self.session = session_from_bytes(ort, model, so, ["CPUExecutionProvider"])
        del model   # not kept by the session (runtime/ort_session.py): 66 MB
        self._lock = threading.Lock()   # the Rust tokenizer is not re-entrant with padding set
        self.dim = int(self.encode(["warm-up"]).shape[1])

    def encode(self, labels: Sequence[str]) -> np.ndarray:
        texts = apply_template(check_labels(labels), self.template)
        if sum(len(t) for t in texts) > MAX_TOKENS_PER_BATCH:
            raise LabelSetError("labels too long to encode in one batch")
        with self._lock:
            batch = self.tokenizer.encode_batch(texts)
            ids = np.array([e.ids for e in batch], dtype=np.int64)
            mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
            types = np.array([e.type_ids for e in batch], dtype=np.int64)
            (emb,) = self.session.run(["embedding"], {"input_ids": ids, "attention_mask": mask,
                                                      "token_type_ids": types})
        return np.ascontiguousarray(emb, dtype=np.float32)
