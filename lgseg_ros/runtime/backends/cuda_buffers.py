"""CUDA memory and streams for the TensorRT backend through NVIDIA's `cuda-bindings`
(`cuda.bindings.runtime`, the CUDA runtime API one to one), so that a TensorRT node loads
neither torch nor its 3 GB of CUDA libraries (issue 19).

Every call's error code is checked (``check``); a failure raises RuntimeError naming the
call. Host buffers are pinned (cudaMallocHost) so that copies can be asynchronous on the
backend's stream, and are seen from numpy through a ctypes view of the same memory.
"""
from __future__ import annotations

import ctypes

import numpy as np


def _rt():
    try:
        from cuda.bindings import runtime
    except ImportError as exc:   # very old releases: cuda-python's `cuda.cudart`
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise RuntimeError("the tensorrt backend needs NVIDIA's cuda-bindings "
                               "(pip install cuda-bindings matching your CUDA)") from exc
    return runtime


def check(result, call: str):
    """cuda-bindings return (error, *values); the values, or RuntimeError on an error."""
    rt = _rt()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA {call} failed: {err}")
    return values[0] if len(values) == 1 else tuple(values)


def device_info() -> tuple[str, tuple[int, int]]:
    """(name, compute capability) of the current device: part of the engine cache key."""
    rt = _rt()
    dev = check(rt.cudaGetDevice(), "cudaGetDevice")
    props = check(rt.cudaGetDeviceProperties(dev), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.rstrip("\x00"), (int(props.major), int(props.minor))


class Stream:
    def __init__(self) -> None:
        self.handle = check(_rt().cudaStreamCreate(), "cudaStreamCreate")

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        check(_rt().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def __del__(self):
        try:
            _rt().cudaStreamDestroy(self.handle)
        except Exception:  # interpreter shutdown
            pass


class DeviceArray:
    """A device allocation of ``shape`` x ``dtype``; ``ptr`` is what TensorRT binds."""

    def __init__(self, shape, dtype) -> None:
        self.shape, self.dtype = tuple(int(v) for v in shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.ptr = int(check(_rt().cudaMalloc(max(self.nbytes, 1)), "cudaMalloc"))

    def __del__(self):
        try:
            _rt().cudaFree(self.ptr)
        except Exception:
            pass


class PinnedArray:
    """Page-locked host memory with a numpy view (``.array``)."""

    def __init__(self, shape, dtype) -> None:
        self.shape, self.dtype = tuple(int(v) for v in shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.ptr = int(check(_rt().cudaMallocHost(max(self.nbytes, 1)), "cudaMallocHost"))
        raw = (ctypes.c_byte * max(self.nbytes, 1)).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=self.dtype, count=int(np.prod(self.shape))).reshape(self.shape)

    def __del__(self):
        try:
            self.array = None
            _rt().cudaFreeHost(self.ptr)
        except Exception:
            pass


def copy_async(dst_ptr: int, src_ptr: int, nbytes: int, to_device: bool, stream: Stream) -> None:
    rt = _rt()
    kind = (rt.cudaMemcpyKind.cudaMemcpyHostToDevice if to_device
            else rt.cudaMemcpyKind.cudaMemcpyDeviceToHost)
    check(rt.cudaMemcpyAsync(int(dst_ptr), int(src_ptr), int(nbytes), kind, stream.handle),
          "cudaMemcpyAsync")
