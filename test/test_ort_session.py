"""runtime/ort_session.py: a session built from verified bytes runs the same model and keeps
no reference to the bytes (issue 19: the node carried a second copy of every model)."""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lgseg_ros.runtime.ort_session import can_drop_bytes, session_from_bytes


def _model_bytes() -> bytes:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 32])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not can_drop_bytes(["CPUExecutionProvider"]), reason="no sealed memfd here")
def test_a_session_from_bytes_runs_the_model_and_keeps_neither_the_bytes_nor_a_file():
    data = _model_bytes()
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    reference = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    refs_before, fds_before = sys.getrefcount(data), _open_fds()
    session = session_from_bytes(ort, data, ort.SessionOptions(), ["CPUExecutionProvider"])
    # Plain InferenceSession(bytes) holds one more reference for its whole life.
    assert sys.getrefcount(data) == refs_before
    assert _open_fds() == fds_before, "the memfd was not closed"
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], reference)


def test_plain_onnxruntime_keeps_the_bytes_which_is_why_this_module_exists():
    data = _model_bytes()
    before = sys.getrefcount(data)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    if sys.getrefcount(data) == before:
        pytest.skip("this onnxruntime no longer keeps the model bytes: session_from_bytes "
                    "could pass them directly")
    assert session is not None


def test_gpu_providers_keep_the_bytes_for_their_cpu_fallback():
    assert not can_drop_bytes(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert not can_drop_bytes(["TensorrtExecutionProvider", "CUDAExecutionProvider",
                               "CPUExecutionProvider"])


def test_damaged_bytes_are_refused_by_onnxruntime_and_leave_no_file_open():
    fds_before = _open_fds()
    with pytest.raises(Exception):
        session_from_bytes(ort, b"\x08\x07not a model", ort.SessionOptions(), ["CPUExecutionProvider"])
    assert _open_fds() == fds_before


def test_the_shipped_text_encoder_session_does_not_hold_its_model_bytes():
    """The encoder the node runs: its session was built from a sealed memfd, not bytes."""
    from lgseg_ros.text.onnx_minilm import OnnxMiniLMEncoder, TextArtefactError

    try:
        enc = OnnxMiniLMEncoder(allow_export=False)
    except TextArtefactError as exc:
        pytest.skip(f"no ONNX text encoder built here ({exc}); `make artefacts` builds it")
    if not can_drop_bytes(["CPUExecutionProvider"]):
        pytest.skip("no sealed memfd here")
    assert getattr(enc.session, "_model_bytes", None) is None
    assert enc.encode(["floor", "door"]).shape == (2, enc.dim)
