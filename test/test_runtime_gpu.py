"""GPU-only backend checks, run by `make gpu-check` (they skip with the reason on CPU).

The CUDA-graph torch backend's parity and replay across label changes is
test_runtime_backends.py::test_torch_cuda_graphs_fp16_parity_and_recapture; this file adds
ONNX Runtime's CUDA provider and TensorRT (fp32 and fp16, strongly typed) engines.
"""
import numpy as np
import pytest
import torch

from lgseg_ros.model import build_model, get_config
from lgseg_ros.runtime.backends import create_backend, tensorrt_problem
from lgseg_ros.runtime.frame_path import reference_outputs

SIZE = (64, 96)
BOUNDS = {"fp32": (0.999, 1e-3), "fp16": (0.99, 0.02)}


def _ort_cuda_reason():
    if not torch.cuda.is_available():
        return "no CUDA device"
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (onnxruntime-gpu not installed)"
    return None


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = get_config("test-tiny")
    return build_model(cfg).eval(), cfg


def _inputs(k, d, seed):
    rng = np.random.default_rng(seed)
    text = rng.standard_normal((k, d)).astype(np.float32)
    return rng.random((1, 3, *SIZE), dtype=np.float32), text / np.linalg.norm(text, axis=1, keepdims=True)


def _parity(backend, net, d, ks, precision):
    agreement, atol = BOUNDS[precision]
    for k in ks:
        image, text = _inputs(k, d, seed=k)
        backend.set_labels(text)
        ids, conf = backend.infer(image)
        ref_ids, ref_conf = reference_outputs(net, torch.from_numpy(image), torch.from_numpy(text))
        assert ids.dtype == np.int32 and conf.dtype == np.float32 and ids.shape == SIZE
        assert np.mean(ids == ref_ids[0].numpy()) >= agreement, (backend.name, precision, k)
        assert np.max(np.abs(conf - ref_conf[0].numpy())) <= atol, (backend.name, precision, k)


def test_onnxruntime_cuda_parity(tiny, tmp_path):
    reason = _ort_cuda_reason()
    if reason:
        pytest.skip(reason)
    net, cfg = tiny
    backend = create_backend("onnxruntime", net, cfg, device="cuda", net_size=SIZE, cache_dir=tmp_path)
    assert backend.device == "cuda"
    _parity(backend, net, cfg.text_dim, (1, 5, 40), "fp32")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_parity_label_changes_and_key(tiny, tmp_path, precision):
    reason = tensorrt_problem()
    if reason:
        pytest.skip(f"TensorRT backend unavailable: {reason}")
    net, cfg = tiny
    backend = create_backend("tensorrt", net, cfg, net_size=SIZE, engine_cache_dir=tmp_path,
                             precision=precision)
    assert backend.built_now and backend.precision == precision
    assert backend.key.precision == precision and backend.key.build_mode == "strongly-typed"
    _parity(backend, net, cfg.text_dim, (1, 5, 40, 5), precision)  # label changes, one engine
    assert len(list(tmp_path.glob("*.engine"))) == 1
    with pytest.raises(ValueError, match="profile"):
        backend.set_labels(_inputs(300, cfg.text_dim, 0)[1])
    again = create_backend("tensorrt", net, cfg, net_size=SIZE, engine_cache_dir=tmp_path,
                           precision=precision)
    assert not again.built_now


def test_tensorrt_rebuilds_an_engine_it_did_not_write(tiny, tmp_path):
    """Issue 20, item 5, on a real GPU: an engine file with the right name, key and sha256
    but without this cache's origin signature (planted, or copied from another machine) is
    rebuilt, not deserialised. The file logic itself is tested without a GPU in
    test_runtime_engine_cache.py."""
    reason = tensorrt_problem()
    if reason:
        pytest.skip(f"TensorRT backend unavailable (deserialising and building engines needs "
                    f"TensorRT's libraries and a GPU): {reason}")
    from lgseg_ros.runtime.engine_cache import read_engine, write_engine

    net, cfg = tiny
    first = create_backend("tensorrt", net, cfg, net_size=SIZE, engine_cache_dir=tmp_path,
                           precision="fp32")
    path = first.engine_path
    genuine = read_engine(path, first.key, first.cache.secret)
    write_engine(path, first.key, genuine)          # same bytes, same checksum, no signature
    again = create_backend("tensorrt", net, cfg, net_size=SIZE, engine_cache_dir=tmp_path,
                           precision="fp32")
    assert again.built_now
    _parity(again, net, cfg.text_dim, (3,), "fp32")


def test_tensorrt_refuses_a_graph_of_another_precision(tiny, tmp_path):
    reason = tensorrt_problem()
    if reason:
        pytest.skip(f"TensorRT backend unavailable: {reason}")
    from lgseg_ros.runtime.export import export_onnx

    net, cfg = tiny
    path = export_onnx(net, tmp_path / "fp32.onnx", SIZE, cfg.text_dim, precision="fp32")
    with pytest.raises(ValueError, match="fp32 graph"):
        create_backend("tensorrt", None, cfg, onnx_path=path, engine_cache_dir=tmp_path,
                       precision="fp16")
