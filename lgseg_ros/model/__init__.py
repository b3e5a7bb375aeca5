"""The ROS-free segmentation model: backbones, fusion module, heads, configs, checkpoints.

Names are imported lazily: configs and checkpoint metadata (what a torch-free run-time
reads) must not pull in torch, which the network modules import."""
from __future__ import annotations

import importlib

_EXPORTS = {
    "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint",
    "read_checkpoint_metadata": "checkpoint", "save_checkpoint": "checkpoint",
    "ModelConfig": "configs", "get_config": "configs", "list_configs": "configs",
    "LGSegNet": "net", "build_model": "net",
}


def build_reference(name: str, **kw):
    from lgseg_ros.model.reference import build_reference as _build

    return _build(name, **kw)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted([*_EXPORTS, "build_reference"])
