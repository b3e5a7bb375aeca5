"""The frame path's tail (upsample, argmax, confidence) computes what a plain softmax would.

The tail runs channels-last and, for a text head whose logits are bounded well inside
float32's exp range, without the "subtract the max" pass (runtime/frame_path.py). These
tests hold both shortcuts to the plain computation: bilinear upsample in NCHW, softmax in
float64, max and argmax.
"""
import math

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from lgseg_ros.model import build_model, get_config
from lgseg_ros.runtime.frame_path import SAFE_EXP_BOUND, FramePath, logit_bound

SIZE = (64, 96)


def _net(logit_scale: float, scale_max: float = 100.0):
    torch.manual_seed(0)
    net = build_model(get_config("test-tiny")).eval()
    with torch.no_grad():
        net.head.logit_scale.fill_(math.log(logit_scale))
    net.head.logit_scale_max = scale_max
    return net


def _inputs(k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, *SIZE, generator=g)
    text = F.normalize(torch.randn(k, 384, generator=g), dim=-1)
    return image, text


def _plain(net, image, text):
    with torch.inference_mode():
        logits = F.interpolate(net(image, text).float(), size=SIZE, mode="bilinear",
                               align_corners=False)
        prob = torch.softmax(logits.double(), dim=1)
        conf, _ = prob.max(dim=1)
        ids = logits.argmax(dim=1)
    return ids.to(torch.int32), conf.float()


@pytest.mark.parametrize("scale,skips", [(36.0, True), (SAFE_EXP_BOUND - 0.1, True), (100.0, False)])
def test_tail_equals_plain_softmax(scale, skips):
    net = _net(scale)
    frame = FramePath(net).eval()
    assert frame.skip_max_subtraction is skips
    for k in (1, 5, 40):
        image, text = _inputs(k, seed=k)
        with torch.inference_mode():
            ids, conf = frame(image, text)
        want_ids, want_conf = _plain(net, image, text)
        assert ids.shape == (1, *SIZE) and ids.dtype == torch.int32
        assert torch.isfinite(conf).all()
        assert (ids == want_ids).float().mean() >= 0.999
        assert torch.allclose(conf, want_conf, atol=1e-5), (conf - want_conf).abs().max()


def test_bound_is_the_clamped_logit_scale_and_unknown_for_closed_heads():
    assert logit_bound(_net(36.0)) == pytest.approx(36.0)
    assert logit_bound(_net(500.0, scale_max=90.0)) == pytest.approx(90.0)
    closed = build_model(get_config("test-tiny-closed"))
    assert logit_bound(closed) is None
    assert FramePath(closed).skip_max_subtraction is False
    assert logit_bound(torch.nn.Identity()) is None


def test_exported_tail_is_channels_last_and_matches_eager(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from lgseg_ros.runtime.export import export_onnx

    net = _net(36.0)
    path = export_onnx(net, tmp_path / "tail.onnx", SIZE, 384)
    graph = onnx.load(str(path)).graph
    producers = {o: n for n in graph.node for o in n.output}
    # The full-size upsample is the Resize the ArgMax reads (the decoder has Resizes of its own).
    [argmax] = [n for n in graph.node if n.op_type == "ArgMax"]
    full_res = producers[argmax.input[0]]
    assert full_res.op_type == "Resize"
    assert producers[full_res.input[0]].op_type == "Transpose", \
        "the full-size upsample should read a channels-last transpose"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for k in (1, 7):
        image, text = _inputs(k, seed=10 + k)
        ids, conf = session.run(["ids", "confidence"], {"image": image.numpy(), "text": text.numpy()})
        want_ids, want_conf = _plain(net, image, text)
        assert (ids == want_ids.numpy()).mean() >= 0.999
        assert np.abs(conf - want_conf.numpy()).max() < 1e-5
