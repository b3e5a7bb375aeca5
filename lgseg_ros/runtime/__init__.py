"""Deployment runtime: frame-path wrapper, ONNX export, backends, engine cache, Segmenter.

Names are imported lazily so that a light tool (the engine-cache check, `lgseg --help`)
does not pay for torch, onnxruntime or the model library.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Segmenter": "segmenter", "LabelSet": "segmenter", "SegmentResult": "segmenter",
    "default_checkpoint_path": "segmenter",
    "Backend": "backends", "create_backend": "backends", "resolve_auto": "backends",
    "FramePath": "frame_path",
    "export_onnx": "export", "cached_export": "export",
    "EngineCache": "engine_cache", "EngineKey": "engine_cache",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
