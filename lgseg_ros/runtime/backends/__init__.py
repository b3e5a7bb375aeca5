"""Frame-path backends behind one interface, chosen by name.

Every backend takes label embeddings once per label change (``set_labels``) and then runs
frames (``infer``); nothing label-dependent is recomputed per frame, and a label change
never rebuilds an engine (K is a dynamic dimension everywhere).
"""
from __future__ import annotations

import importlib.util
import logging
from typing import Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt")
# Measured on the 2-core development CPU, lite-minilm at 360x480 (`lgseg bench`): ONNX
# Runtime's optimised fp32 graph (fused conv+BN+activation, NCHWc layout) ran at p50 80 ms
# against 1034 ms for eager torch in the same run (min 56 vs 141 ms), so it is the CPU
# choice for "auto"; eager torch stays as the fallback where onnxruntime is not installed.
CPU_PREFERENCE = ("onnxruntime", "torch")


@runtime_checkable
class Backend(Protocol):
    name: str
    device: str

    def set_labels(self, embeddings: np.ndarray) -> None: ...

    def infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def check_embeddings(embeddings: np.ndarray, text_dim: int | None) -> np.ndarray:
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] < 1:
        raise ValueError(f"label embeddings must be [K, D] with K >= 1, got shape {emb.shape}")
    if text_dim is not None and emb.shape[1] != text_dim:
        raise ValueError(f"label embeddings have width {emb.shape[1]}, the model expects {text_dim}")
    if not np.all(np.isfinite(emb)):
        raise ValueError("label embeddings contain NaN or inf")
    return np.ascontiguousarray(emb, dtype=np.float32)


def check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"image must be [1, 3, H, W], got shape {image.shape}")
    if image.dtype != np.float32:
        raise ValueError(f"image must be float32 in [0, 1], got {image.dtype}")
    if image.shape[2] < 1 or image.shape[3] < 1:
        raise ValueError(f"image is empty (shape {image.shape})")
    return np.ascontiguousarray(image)


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken CUDA install must not stop CPU inference
        return False


def tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None and cuda_available()


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def resolve_auto(device: str = "auto") -> str:
    """tensorrt if importable with CUDA, else torch on CUDA, else the faster CPU backend."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if device != "cpu" and cuda_available():
        return "tensorrt" if tensorrt_available() else "torch"
    if device == "cuda":
        raise RuntimeError("device='cuda' requested but torch sees no CUDA device")
    for name in CPU_PREFERENCE:
        if name != "onnxruntime" or onnxruntime_available():
            return name
    return "torch"


def create_backend(name: str, net, cfg=None, **opts) -> Backend:
    """Build a backend by name ("torch", "onnxruntime", "tensorrt" or "auto").

    Common options: device ("auto"/"cpu"/"cuda"), precision ("fp32"/"fp16"/"auto"),
    net_size (H, W) to prepare ahead of the first frame, cache_dir / engine_cache_dir,
    force_rebuild. Backend-specific ones are passed through.
    """
    device = opts.pop("device", "auto")
    if name == "auto":
        name = resolve_auto(device)
        log.info("backend auto -> %s", name)
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(net, cfg, device=device, **opts)
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(net, cfg, device=device, **opts)
    if name == "tensorrt":
        from .tensorrt_backend import TensorRTBackend

        if device == "cpu":
            raise ValueError("the tensorrt backend needs a CUDA device, not device='cpu'")
        return TensorRTBackend(net, cfg, **opts)
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS + ('auto',)}")


def text_dim_of(cfg, net=None) -> int | None:
    """The embedding width D the model expects, from its config (None if it says nothing)."""
    for attr in ("text_dim", "embed_dim", "dim"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
