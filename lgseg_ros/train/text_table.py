"""A training run's label embeddings as a file, so the run can go where its text encoder can't.

Training reads the text encoder only through a table of frozen embeddings, one per name the
run can ask (class names, synonyms, distractors): a few thousand rows. A borrowed GPU
machine has no network and takes a limited upload, and MiniLM's weights (90 MB) or its
ONNX export (64 MB) are more than the training data: `lgseg train ... --write-text-table F`
computes the run's table where the encoder is and stops; `lgseg train ... --text-table F`
then trains with no encoder at all. The file records the encoder and prompt template, and
a run whose model reads another encoder's embeddings refuses it. safetensors, so loading it
runs no code.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

MAX_TABLE_BYTES = 256 << 20


def write_text_table(path: str | Path, table: dict[str, torch.Tensor], encoder: str,
                     template: str | None) -> int:
    from safetensors.torch import save_file

    names = list(table)
    rows = torch.stack([table[n].float().cpu() for n in names])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": rows.contiguous()}, str(path), metadata={
        "names": json.dumps(names), "text_encoder": encoder,
        "prompt_template": json.dumps(template)})
    return len(names)


class TableTextEncoder:
    """The encoder interface training uses (``encode(names)``), served from a table file;
    a name not in it is an error naming it, never a silent zero vector."""

    def __init__(self, path: str | Path, names: Sequence[str], rows: torch.Tensor,
                 encoder: str = "table", template: str | None = None):
        self.path = str(path)
        # The encoder the rows came from, so a Segmenter takes them as that encoder's (the
        # checkpoint's text_encoder check) and caches them under its name.
        self.name, self.template = encoder, template
        self.rows = {n: rows[i] for i, n in enumerate(names)}
        self.dim = int(rows.shape[1])

    def encode(self, names: Sequence[str]) -> torch.Tensor:
        missing = [n for n in names if n not in self.rows]
        if missing:
            shown = ", ".join(repr(n) for n in missing[:10])
            raise KeyError(f"--text-table {self.path} has no embedding for {len(missing)} "
                           f"name(s): {shown}: write the table again with --write-text-table "
                           "and this run's options, where the text encoder is")
        return torch.stack([self.rows[n] for n in names])


def load_text_table(path: str | Path, encoder: str, template: str | None) -> TableTextEncoder:
    from safetensors import safe_open

    path = Path(path)
    size = path.stat().st_size
    if size > MAX_TABLE_BYTES:
        raise ValueError(f"--text-table {path}: {size} bytes, more than any label table "
                         f"({MAX_TABLE_BYTES})")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        rows = f.get_tensor("embeddings").float()
    names = json.loads(meta.get("names", "[]"))
    got = (meta.get("text_encoder"), json.loads(meta.get("prompt_template", "null")))
    if got != (encoder, template):
        raise ValueError(f"--text-table {path}: made with text encoder {got[0]!r} and template "
                         f"{got[1]!r}, but the model reads {encoder!r} with {template!r}")
    if rows.ndim != 2 or len(names) != rows.shape[0] or len(set(names)) != len(names):
        raise ValueError(f"--text-table {path}: {len(names)} names for embeddings of shape "
                         f"{tuple(rows.shape)}")
    return TableTextEncoder(path, names, rows, encoder, template)


def load_text_table_for_model(path: str | Path, checkpoint: str | None = None,
                              config: str | None = None) -> TableTextEncoder:
    """The table for the model a run serves (its checkpoint's encoder and template, else its
    config's, else plain MiniLM's), refused if it was made for another."""
    if checkpoint:
        from lgseg_ros.model.checkpoint import read_checkpoint_metadata

        cfg = read_checkpoint_metadata(checkpoint)[0]
    elif config:
        from lgseg_ros.model import get_config

        cfg = get_config(config)
    else:
        return load_text_table(path, "minilm", None)
    return load_text_table(path, cfg.text_encoder, cfg.prompt_template)
