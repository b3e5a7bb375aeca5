"""Checkpoints: safetensors (no pickle, so loading a file cannot run code) whose metadata
records the format version, the ModelConfig as JSON and optional extra metadata (for
example the label names trained on). A checkpoint alone rebuilds its network."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lgseg_ros.model.configs import ModelConfig

if TYPE_CHECKING:  # the metadata readers run in torch-free installs (runtime/artefacts.py)
    import torch
    from torch import nn

FORMAT = "lgseg-checkpoint"
FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded; the message says what is wrong with it."""


def save_checkpoint(path: str | os.PathLike, net: nn.Module, cfg: ModelConfig,
                    extra_metadata: dict[str, Any] | None = None) -> Path:
    from safetensors.torch import save_file

    own = getattr(net, "cfg", None)
    if own is not None and own != cfg:
        raise ValueError(f"config {cfg.name!r} does not describe this network (built from "
                         f"{own.name!r}); save the config the network was built with")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "config": cfg.to_json(),
                "extra": json.dumps(extra_metadata or {}, sort_keys=True)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)   # a reader never sees a half-written checkpoint
    return path


def _read_header(path: Path) -> dict[str, Any]:
    """Check the file is a complete safetensors file and return its header."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if head[:2] == b"PK" or head[:1] == b"\x80":
            raise CheckpointError(
                f"{path} is a pickle (torch.save) file, not a safetensors checkpoint; refusing "
                "to unpickle it. Re-save it with lgseg_ros.model.save_checkpoint")
        if len(head) < 8:
            raise CheckpointError(f"{path} is truncated or empty ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{path} is truncated or not a safetensors file (header claims "
                                  f"{n} bytes, file has {size})")
        try:
            header = json.loads(f.read(n))
        except ValueError as exc:
            raise CheckpointError(f"{path} is not a safetensors file (unreadable header)") from exc
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise CheckpointError(f"{path} is truncated or corrupt: its header describes "
                              f"{8 + n + end} bytes, the file has {size}")
    return header


def read_checkpoint_metadata(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, Any]]:
    """The config and extra metadata of a checkpoint, without loading its tensors."""
    path = Path(path)
    meta = _read_header(path).get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not an lgseg checkpoint "
                              "(no lgseg metadata); save with lgseg_ros.model.save_checkpoint")
    version = int(meta.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version}; this lgseg_ros reads "
                              f"up to {FORMAT_VERSION}. Upgrade lgseg_ros")
    try:
        cfg = ModelConfig.from_json(meta["config"])
        extra = json.loads(meta.get("extra", "{}"))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: the recorded model config is invalid: {exc}") from exc
    return cfg, extra


def _config_diff(a: ModelConfig, b: ModelConfig) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    return [f"{k}: {da[k]!r} != {db[k]!r}" for k in da if da[k] != db[k] and k != "name"]


def load_checkpoint(path: str | os.PathLike, expected: ModelConfig | None = None,
                    device: str | torch.device = "cpu") -> tuple[nn.Module, ModelConfig]:
    """Rebuild the network from a checkpoint: ``net, cfg = load_checkpoint(path)``.

    ``expected``: fail unless the recorded config matches it (a node configured for one
    model must not silently run another). The network comes back in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from lgseg_ros.model.net import build_model

    path = Path(path)
    cfg, extra = read_checkpoint_metadata(path)
    if expected is not None:
        diff = _config_diff(expected, cfg)
        if diff:
            raise CheckpointError(f"{path} holds a different model than expected: " + "; ".join(diff))
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is corrupt: {exc}") from exc
    try:
        net = build_model(cfg, load_weights=False)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise CheckpointError(f"{path}: cannot build the recorded model {cfg.name!r}: {exc}") from exc
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (file vs config), e.g. {shapes[:2]}")
        if missing:
            parts.append(f"{len(missing)} missing tensors, e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors, e.g. {unexpected[:3]}")
        raise CheckpointError(f"{path}: tensors do not match the recorded config "
                              f"{cfg.name!r}: " + "; ".join(parts))
    net.load_state_dict(state, strict=True)
    net.checkpoint_metadata = extra
    return net.to(device).eval(), cfg
