"""The fp16 ONNX graph that TensorRT builds strongly typed: its structure, and its parity
with the fp32 graph in ONNX Runtime on CPU (argmax >= 99%, confidence within 0.02).

ONNX Runtime's CPU provider runs few ops in fp16 itself; for the others it inserts casts
around the fp32 kernel, so every fp16 tensor (weights and each node's output) is still
rounded to fp16 as on a GPU, but the arithmetic inside one op may be fp32. TensorRT on a
GPU can round differently; `make gpu-check` measures that engine against fp32 too.
"""
import onnx
import pytest
import torch
from onnx import TensorProto

from lgseg_ros.model import build_model, get_config
from lgseg_ros.runtime import export as ex

SIZE = (64, 96)
TAIL_OPS = {"Resize", "ReduceMax", "ArgMax", "Sub", "Exp", "ReduceSum", "Reciprocal", "Squeeze",
            "Div", "Transpose",
            "Cast", "TopK", "Unsqueeze", "Reshape", "Shape", "Gather", "Concat", "Slice",
            "Constant"}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = get_config("test-tiny")
    return build_model(cfg).eval(), cfg


@pytest.fixture(scope="module")
def pair(tiny, tmp_path_factory):
    net, cfg = tiny
    out = tmp_path_factory.mktemp("fp16")
    return (ex.export_onnx(net, out / "fp16.onnx", SIZE, cfg.text_dim, precision="fp16"),
            ex.export_onnx(net, out / "fp32.onnx", SIZE, cfg.text_dim, precision="fp32"))


def _types(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    return types


def test_fp16_graph_is_fp16_inside_with_fp32_interface_and_tail(pair):
    fp16, fp32 = pair
    model = onnx.load(str(fp16))
    summary = ex.check_onnx(fp16)
    assert summary["precision"] == "fp16" and ex.check_onnx(fp32)["precision"] == "fp32"
    assert summary["unvetted_ops"] == [], summary["unvetted_ops"]
    io = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    assert io == {"image": TensorProto.FLOAT, "text": TensorProto.FLOAT,
                  "ids": TensorProto.INT32, "confidence": TensorProto.FLOAT}
    floats = [t.data_type for t in model.graph.initializer if t.data_type in (1, 10)]
    assert floats and all(t == TensorProto.FLOAT16 for t in floats)  # weights are fp16
    # Walk back from the outputs to the cast that ends the fp16 body: everything on the way
    # (upsample, max, exp, sum, reciprocal, argmax) computes in fp32.
    types = _types(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    tail, frontier, seen_body_cast = [], ["ids", "confidence"], False
    while frontier:
        node = producer.get(frontier.pop())
        if node is None or node in tail:
            continue
        tail.append(node)
        is_body_cast = (node.op_type == "Cast" and types.get(node.input[0]) == TensorProto.FLOAT16)
        if is_body_cast:
            seen_body_cast = True
            continue
        frontier.extend(i for i in node.input if i)
    assert seen_body_cast, "no fp16 -> fp32 cast found before the tail"
    for node in tail:
        assert node.op_type in TAIL_OPS, node.op_type
        for name in node.output:
            assert types.get(name) != TensorProto.FLOAT16, f"{node.op_type} {name} is fp16"
    ops = {n.op_type for n in tail}
    # Confidence: 1 / sum exp(l - max), or exp(max) / sum exp(l) for a bounded text head
    # (runtime/frame_path.py); the upsample runs channels-last, after a Transpose.
    assert {"Resize", "Exp", "ReduceSum", "ArgMax", "Transpose"} <= ops and ops & {"Reciprocal", "Div"}


def test_fp16_graph_matches_fp32_in_onnxruntime(tiny, pair):
    _, cfg = tiny
    fp16, fp32 = pair
    report = ex.compare_onnx(fp16, fp32, SIZE, cfg.text_dim, ks=(1, 5, 40))
    for k, r in report.items():
        assert r["argmax_agreement"] >= ex.FP16_MIN_AGREEMENT, (k, r)
        assert r["max_confidence_diff"] <= ex.FP16_MAX_CONF_DIFF, (k, r)
    # fp16 is not fp32: the comparison would notice a graph that silently stayed fp32.
    assert max(r["max_confidence_diff"] for r in report.values()) > 0


def test_fp16_default_model_matches_fp32_in_onnxruntime(tmp_path):
    """lite-minilm (EfficientNet-Lite0 + fusion head), random weights, K = 11."""
    torch.manual_seed(0)
    cfg = get_config("lite-minilm", backbone_weights=None)
    net = build_model(cfg).eval()
    size = (128, 160)
    fp16 = ex.export_onnx(net, tmp_path / "fp16.onnx", size, cfg.text_dim, precision="fp16")
    fp32 = ex.export_onnx(net, tmp_path / "fp32.onnx", size, cfg.text_dim)
    for k, r in ex.compare_onnx(fp16, fp32, size, cfg.text_dim, ks=(11,)).items():
        assert r["argmax_agreement"] >= ex.FP16_MIN_AGREEMENT, (k, r)
        assert r["max_confidence_diff"] <= ex.FP16_MAX_CONF_DIFF, (k, r)


def test_cached_export_keeps_precisions_apart(tiny, tmp_path):
    net, cfg = tiny
    a = ex.cached_export(net, SIZE, cfg.text_dim, cache_dir=tmp_path, precision="fp16")
    b = ex.cached_export(net, SIZE, cfg.text_dim, cache_dir=tmp_path, precision="fp32")
    assert a != b and "_fp16_" in a.name
    assert ex.onnx_precision(a) == "fp16" and ex.onnx_precision(b) == "fp32"
    assert ex.cached_export(net, SIZE, cfg.text_dim, cache_dir=tmp_path, precision="fp16") == a
    with pytest.raises(ValueError, match="precision"):
        ex.export_onnx(net, tmp_path / "x.onnx", SIZE, cfg.text_dim, precision="int8")


def test_export_cli_fp16_reports_parity(tmp_path, capsys):
    import json

    out = tmp_path / "m.onnx"
    assert ex.main(["--config", "test-tiny", "--size", "64", "96", "--precision", "fp16",
                    "-o", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["precision"] == "fp16"
    parity = result["fp16_vs_fp32_onnxruntime"]
    assert all(v["argmax_agreement"] >= 0.99 for v in parity.values())
