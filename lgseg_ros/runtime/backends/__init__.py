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
# What precision="auto" runs in ONNX Runtime (CPU). Issue 19: int8 becomes the default if it
# loses at most 1.0 mIoU on CamVid val. Measured on the shipped model (README, "int8 on the
# CPU"): `lgseg eval` 71.38 mIoU int8 vs 71.24 fp32 through the same ONNX Runtime path, and
# `lgseg bench --compare-int8` 1.5-1.9x fp32's speed in one run. Where no int8 file exists
# and none can be built (no calibration frames), auto falls back to fp32 with a warning.
CPU_AUTO_PRECISION = "int8"


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
    """Whether a CUDA device is usable, asked of the driver (libcuda) directly: importing
    torch to find out would put 0.7 GB and seconds into every CPU-only process."""
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except (OSError, AttributeError):  # no driver: a CPU-only machine
        return False
    except Exception:  # a broken CUDA install must not stop CPU inference
        return False


def torch_problem() -> str | None:
    return None if importlib.util.find_spec("torch") is not None else "torch is not installed"


def tensorrt_problem() -> str | None:
    """Why the TensorRT backend cannot start here, or None if it may (it can still fail to
    build: create_backend("auto") falls back then)."""
    if not cuda_available():
        return "no CUDA device"
    from .tensorrt_backend import import_tensorrt

    try:
        import_tensorrt()
    except RuntimeError as exc:
        return str(exc)
    return None


def tensorrt_available() -> bool:
    return tensorrt_problem() is None


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def auto_candidates(device: str = "auto") -> list[tuple[str, str]]:
    """(backend, device) pairs that "auto" tries, best first: TensorRT, torch on CUDA, then
    the faster CPU backend with eager torch last."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    out = []
    if device != "cpu":
        out += [("tensorrt", "cuda"), ("torch", "cuda")]
    if device != "cuda":
        out += [(name, "cpu") for name in CPU_PREFERENCE]
    return out


def skip_reason(name: str, device: str) -> str | None:
    """Why auto does not even try (name, device) here; None if it should try."""
    if name == "tensorrt":
        return tensorrt_problem()
    if name == "torch" and torch_problem():
        return torch_problem()
    if device == "cuda" and not cuda_available():
        return "no CUDA device"
    if name == "onnxruntime" and not onnxruntime_available():
        return "onnxruntime is not installed"
    return None


def resolve_auto(device: str = "auto") -> str:
    """The backend auto would try first here (the one it ends with if that one starts)."""
    reasons = []
    for name, dev in auto_candidates(device):
        reason = skip_reason(name, dev)
        if reason is None:
            return name
        reasons.append(f"{name} on {dev}: {reason}")
    raise RuntimeError(f"device={device!r}: no backend can run here ({'; '.join(reasons)})")


# Why a backend that would load torch is not started where the caller said allow_torch=False.
NO_TORCH_NOW = ("torch is not loaded in this process, and this reconfigure would keep it there "
                "for the process's life; choose backend torch at start-up (-p backend:=torch)")


def create_backend(name: str, net, cfg=None, **opts) -> Backend:
    """Build a backend by name ("torch", "onnxruntime", "tensorrt" or "auto").

    Common options: device ("auto"/"cpu"/"cuda"), precision ("fp32"/"fp16"/"auto"),
    net_size (H, W) to prepare ahead of the first frame, cache_dir / engine_cache_dir,
    force_rebuild. Backend-specific ones are passed through.

    "auto" tries each of auto_candidates() in turn, logging why one is skipped or failed,
    so that a broken or partial TensorRT (or CUDA) install degrades the node to a slower
    backend instead of stopping it; except that where the process exports in a child (the
    node) and the model comes from its ONNX files, a failed ONNX Runtime stops auto before
    torch on the CPU, which would stay in the process for its life. A backend named explicitly raises with
    its reason.
    The attempts are kept on the backend as ``auto_attempts`` (for logs and diagnostics).

    allow_torch=False: never the torch backend (named, it raises; auto skips it), for a
    process that must not load torch now (the node's reconfigure, see node.py).
    allow_build=False: no ONNX export, int8 quantisation or TensorRT engine build on a cache
    miss (ArtefactError / RuntimeError naming NO_BUILD_NOW), for the node's reconfigure.
    """
    device = opts.pop("device", "auto")
    allow_torch = opts.pop("allow_torch", True)
    if name == "torch" and not allow_torch:
        raise RuntimeError(f"backend torch: {NO_TORCH_NOW}")
    if name != "auto":
        return _create(name, net, cfg, device, opts)
    attempts = []
    no_torch_here = None
    last_failure: Exception | None = None
    for candidate, dev in auto_candidates(device):
        reason = skip_reason(candidate, dev)
        if reason is None and candidate == "torch" and dev == "cpu" and no_torch_here:
            reason = no_torch_here
        if reason is None and candidate == "torch" and not allow_torch:
            reason = NO_TORCH_NOW
        if reason is not None:
            log.info("backend auto: %s on %s skipped: %s", candidate, dev, reason)
            attempts.append({"backend": candidate, "device": dev, "skipped": reason})
            continue
        try:
            backend = _create(candidate, net, cfg, dev, dict(opts))
        except Exception as exc:  # any failure (build, driver, memory) -> next candidate
            log.warning("backend auto: %s on %s failed, trying the next backend: %s: %s",
                        candidate, dev, type(exc).__name__, exc)
            attempts.append({"backend": candidate, "device": dev,
                             "failed": f"{type(exc).__name__}: {exc}"})
            last_failure = exc
            if candidate == "onnxruntime" and _artefact_problem(exc):
                # The node exports in a child so that torch never stays in its process; an
                # ONNX file it could not build or cache (a full disk, a cache path that is a
                # file) made auto run the model in torch in the node instead: +720 MB for
                # the node's life, and configure said nothing was wrong (probe round 14).
                no_torch_here = ("the ONNX file could not be built or cached (above), and "
                                 "torch on the CPU would stay in this process for its life")
            elif candidate == "onnxruntime" and _exports_in_child() and _from_files(net):
                # Any other failure there too: a damaged manifest raised AttributeError, and
                # the node ran on torch (1,170 MB, not 339) for its life (audit round 17).
                no_torch_here = (f"ONNX Runtime could not start ({type(exc).__name__}, above), "
                                 "and torch on the CPU would stay in this process for its life")
            continue
        log.info("backend auto -> %s on %s", candidate, dev)
        backend.auto_attempts = attempts
        return backend
    summary = "; ".join(f"{a['backend']} on {a['device']}: {a.get('skipped') or a.get('failed')}"
                        for a in attempts)
    # from the last failure: a caller can tell a lasting cause (no torch to build a file with)
    # from a passing one (a full disk), as the routed Segmenter does
    raise RuntimeError(f"backend auto (device={device!r}): no backend could start ({summary})") \
        from last_failure


def _from_files(net) -> bool:
    """A checkpoint served from its ONNX artefacts (no torch module in hand): torch would
    come into the process only for the fallback. Untrained weights are a torch module."""
    from ..artefacts import ModelSource

    return isinstance(net, ModelSource)


def _exports_in_child() -> bool:
    from ..artefacts import exports_in_child

    return exports_in_child()


def _artefact_problem(exc: BaseException) -> bool:
    """An ONNX file this process could not build or cache, where it exports in a child."""
    from ..artefacts import ArtefactError

    return _exports_in_child() and isinstance(exc, (ArtefactError, OSError))


def _onnx_precision(name: str, device: str, precision: str) -> str:
    """The graph precision a file-based backend reads: TensorRT builds fp16 unless told
    fp32 (strongly typed: the graph decides); ONNX Runtime runs int8 or fp32."""
    if name == "tensorrt":
        return "fp32" if precision == "fp32" else "fp16"
    if precision == "auto":
        return CPU_AUTO_PRECISION
    return "int8" if precision == "int8" else "fp32"


def _tensorrt_can_start(device: str) -> None:
    # Not tensorrt_problem(): that one asks for CUDA first, so auto never imports TensorRT
    # (hundreds of MB) on a CPU machine; a user who named tensorrt needs the import's reason.
    if device == "cpu":
        raise ValueError("the tensorrt backend needs a CUDA device, not device='cpu'")
    from .tensorrt_backend import import_tensorrt

    import_tensorrt()     # RuntimeError naming `import tensorrt` and what to install
    if not cuda_available():
        raise RuntimeError("the tensorrt backend needs a CUDA device, and the CUDA driver reports none")


def _create(name: str, net, cfg, device: str, opts: dict) -> Backend:
    # A ModelSource (runtime/artefacts.py) hands ONNX Runtime and TensorRT a verified ONNX
    # file, so neither needs the torch network; the torch backend loads it on demand.
    from ..artefacts import ArtefactError, ModelSource

    allow_build = opts.pop("allow_build", True)
    if name == "tensorrt":
        opts = {**opts, "allow_build": allow_build}   # its engine build
        # Before the export below: without TensorRT (or on the CPU) the node spent ~6 s
        # writing an fp16 ONNX file into the cache, then failed on the import (audit round 15).
        _tensorrt_can_start(device)
    if isinstance(net, ModelSource) and name != "torch" and opts.get("onnx_path") is None:
        size = tuple(opts.get("net_size") or (384, 480))
        asked = opts.get("precision", "fp32")
        precision = _onnx_precision(name, device, asked)
        try:
            path = net.onnx(size, precision, allow_build=allow_build)
        except (FileNotFoundError, ArtefactError) as exc:
            if asked != "auto" or precision == "fp32":
                raise
            log.warning("precision auto: no int8 file for this model and none can be built "
                        "here (%s); running fp32", str(exc)[:600])
            path = net.onnx(size, "fp32", allow_build=allow_build)
        opts = {**opts, "onnx_path": path, "onnx_sha256": net.verified_sha256(path)}
        net = None
    elif isinstance(net, ModelSource):
        net = net.net
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(net, cfg, device=device, **opts)
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(net, cfg, device=device, **opts)
    if name == "tensorrt":
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend(net, cfg, **opts)
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS + ('auto',)}")


def text_dim_of(cfg, net=None) -> int | None:
    """The embedding width D the model expects, from its config (None if it says nothing)."""
    for attr in ("text_dim", "embed_dim", "dim"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
