"""The TensorRT backend's CUDA buffers come from cuda-bindings, not torch (issue 19).

No GPU here: the real `cuda.bindings.runtime` is called, and every call it makes must exist
with the arguments used and turn the driver's error into a RuntimeError naming the call
(on a GPU machine `make gpu-check` runs the backend itself)."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from lgseg_ros.runtime.backends import cuda_available, cuda_buffers

rt = pytest.importorskip("cuda.bindings.runtime")
CALLS = ("cudaGetDevice", "cudaGetDeviceProperties", "cudaStreamCreate", "cudaStreamSynchronize",
         "cudaStreamDestroy", "cudaMalloc", "cudaFree", "cudaMallocHost", "cudaFreeHost",
         "cudaMemcpyAsync")


def test_every_runtime_call_used_exists():
    source = inspect.getsource(cuda_buffers)
    used = {c for c in CALLS if f"rt().{c}(" in source or f"rt.{c}(" in source}
    assert used == set(CALLS), set(CALLS) - used
    for name in CALLS:
        assert callable(getattr(rt, name)), name
    assert rt.cudaMemcpyKind.cudaMemcpyHostToDevice and rt.cudaMemcpyKind.cudaMemcpyDeviceToHost


@pytest.mark.skipif(cuda_available(), reason="a CUDA device is present: make gpu-check covers it")
def test_without_a_driver_each_call_fails_with_its_name():
    with pytest.raises(RuntimeError, match="cudaGetDevice"):
        cuda_buffers.device_info()
    with pytest.raises(RuntimeError, match="cudaMalloc"):
        cuda_buffers.DeviceArray((1, 3, 8, 8), np.float32)
    with pytest.raises(RuntimeError, match="cudaMallocHost"):
        cuda_buffers.PinnedArray((4,), np.int32)
    with pytest.raises(RuntimeError, match="cudaStreamCreate"):
        cuda_buffers.Stream()


def test_check_returns_values_and_raises_on_errors():
    ok = rt.cudaError_t.cudaSuccess
    assert cuda_buffers.check((ok, 7), "x") == 7
    assert cuda_buffers.check((ok, 1, 2), "x") == (1, 2)
    with pytest.raises(RuntimeError, match="cudaFoo failed"):
        cuda_buffers.check((rt.cudaError_t.cudaErrorInvalidValue, None), "cudaFoo")


@pytest.mark.skipif(not cuda_available(), reason="no CUDA device: runs under make gpu-check")
def test_on_a_gpu_pinned_and_device_buffers_round_trip_through_a_stream():
    """What the TensorRT backend does per frame, without TensorRT: pinned host -> device ->
    pinned host on one stream, byte for byte."""
    name, cc = cuda_buffers.device_info()
    assert name and cc[0] >= 3, (name, cc)
    shape = (1, 3, 64, 80)
    src = cuda_buffers.PinnedArray(shape, np.float32)
    dst = cuda_buffers.PinnedArray(shape, np.float32)
    dev = cuda_buffers.DeviceArray(shape, np.float32)
    src.array[...] = np.random.default_rng(0).random(shape, dtype=np.float32)
    dst.array[...] = -1.0
    stream = cuda_buffers.Stream()
    cuda_buffers.copy_async(dev.ptr, src.ptr, src.nbytes, True, stream)
    cuda_buffers.copy_async(dst.ptr, dev.ptr, dev.nbytes, False, stream)
    stream.synchronize()
    assert np.array_equal(src.array, dst.array)
