"""LGSegNet contract: shapes, label permutation equivariance, any K, clear rejections,
gradients through both directions of the bridge. Tiny configs, tiny images, CPU."""
import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from lgseg_ros.labels import LabelSetError
from lgseg_ros.model import LGSegNet, ModelConfig, build_model, get_config, list_configs
from lgseg_ros.model.fusion import FusionBlock

TEXT_HEADS = ["test-tiny", "test-tiny-lseg", "test-tiny-denseclip"]


def _text(k, d=384, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(k, d, generator=g), dim=1)


def _net(name, seed=0, **overrides):
    torch.manual_seed(seed)
    net = build_model(get_config(name, **overrides)).eval()
    if hasattr(net.head, "gamma"):
        # At gamma's init (1e-4) the bridge's effect on the label embeddings is invisible to a
        # permutation test; make it count.
        with torch.no_grad():
            net.head.gamma.fill_(0.5)
    return net


@pytest.fixture(scope="module")
def minilm():
    from lgseg_ros.text import build_text_encoder

    return build_text_encoder("minilm", cached=True)


@pytest.mark.parametrize("name", TEXT_HEADS)
def test_permuting_labels_permutes_channels_only(name):
    net = _net(name)
    image = torch.rand(2, 3, 64, 96)
    text = _text(6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        out = net(image, text)
        out_p = net(image, text[perm])
    assert out.shape == (2, 7, 8, 12)
    torch.testing.assert_close(out_p[:, :6], out[:, perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_p[:, 6], out[:, 6], atol=1e-5, rtol=1e-5)   # "none" unchanged


def test_bridge_makes_labels_interact():
    """The permutation test must be able to fail: in the fusion head a label's score depends
    on the other labels (tokens attend to each other), in the LSeg head it does not."""
    image = torch.rand(1, 3, 64, 64)
    text = _text(4)
    for name, interacts in [("test-tiny", True), ("test-tiny-lseg", False)]:
        net = _net(name)
        with torch.no_grad():
            full = net(image, text)
            fewer = net(image, text[:3])
        same = torch.allclose(full[:, :3], fewer[:, :3], atol=1e-6)
        assert same != interacts, name


@pytest.mark.parametrize("k", [1, 2, 11, 64, 255])
def test_any_k_runs(k):
    net = _net("test-tiny")
    with torch.no_grad():
        out = net(torch.rand(1, 3, 32, 48), _text(k))
    assert out.shape == (1, k + 1, 4, 6)
    assert torch.isfinite(out).all()


def test_unseen_labels_run(minilm):
    labels = ["flamingo wearing a top hat", "rusty bicycle bell", "zebra crossing", "glass door"]
    net = _net("test-tiny")
    with torch.no_grad():
        out = net(torch.rand(1, 3, 32, 32), minilm.encode(labels))
    assert out.shape == (1, 5, 4, 4)


def test_empty_and_non_string_labels_rejected(minilm):
    net = _net("test-tiny")
    with pytest.raises(ValueError, match=r"K = 0"):
        net(torch.rand(1, 3, 32, 32), torch.zeros(0, 384))
    with pytest.raises(LabelSetError, match="not a string"):
        minilm.encode(["road", 7])
    with pytest.raises(LabelSetError, match="empty"):
        minilm.encode([])


@pytest.mark.parametrize("text, message", [
    (torch.zeros(3, 512), r"\[K, 384\]"), (torch.zeros(384), r"\[K, 384\]")])
def test_bad_text_shapes_rejected(text, message):
    with pytest.raises(ValueError, match=message):
        _net("test-tiny")(torch.rand(1, 3, 32, 32), text)


def test_bad_image_shape_rejected():
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        _net("test-tiny")(torch.rand(1, 1, 32, 32), _text(2))


def test_three_text_heads_same_shapes_and_camvid_size():
    shapes = set()
    for name in TEXT_HEADS:
        with torch.no_grad():
            shapes.add(tuple(_net(name)(torch.rand(1, 3, 360, 480), _text(11)).shape))
    assert shapes == {(1, 12, 45, 60)}   # CamVid 360x480: not a multiple of 32


def test_closed_head():
    net = _net("test-tiny-closed")
    with torch.no_grad():
        out = net(torch.rand(1, 3, 32, 32), _text(11))
    assert out.shape == (1, 12, 4, 4)
    with pytest.raises(ValueError, match="built for 11 classes"):
        net(torch.rand(1, 3, 32, 32), _text(3))


def _loss(net, k=5):
    image = torch.rand(2, 3, 64, 64)
    out = net(image, _text(k))
    target = torch.randint(0, k + 1, (2,) + out.shape[-2:])
    return F.cross_entropy(out, target)


def test_gradients_reach_bridge_in_both_directions():
    net = _net("test-tiny").train()
    _loss(net).backward()
    blocks = [m for m in net.modules() if isinstance(m, FusionBlock)]
    assert blocks and all(b.two_way for b in blocks)
    for i, block in enumerate(blocks):
        for direction in ("x2z", "z2x"):           # tokens read pixels; pixels read tokens
            for pname, p in getattr(block, direction).named_parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, f"block {i} {direction}.{pname}"
    for pname in ("gamma", "logit_scale", "none_embedding"):
        assert getattr(net.head, pname).grad.abs().sum() > 0, pname


def test_denseclip_is_one_way():
    net = _net("test-tiny-denseclip").train()
    _loss(net).backward()
    blocks = [m for m in net.modules() if isinstance(m, FusionBlock)]
    assert blocks and not any(hasattr(b, "z2x") or hasattr(b, "conv") for b in blocks)
    assert all(p.grad.abs().sum() > 0 for b in blocks for p in b.x2z.parameters())


def test_logit_scale_and_gamma_init():
    net = _net("test-tiny-lseg")
    assert float(net.head.logit_scale.exp()) == pytest.approx(1 / 0.07, rel=1e-5)
    net = build_model(get_config("test-tiny"))
    assert torch.all(net.head.gamma == 1e-4)
    with torch.no_grad():   # logits are tau * cosine: bounded by tau
        out = net.eval()(torch.rand(1, 3, 32, 32), _text(3))
    assert out.abs().max() <= 1 / 0.07 + 1e-3


def test_normalisation_is_inside():
    net = build_model(get_config("test-tiny"))
    torch.testing.assert_close(net.pixel_mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert "pixel_mean" not in net.state_dict()


def test_configs():
    assert {"lite-minilm", "lite-minilm-lseg", "lite-minilm-denseclip", "lite-minilm-closed",
            "lite-clip", "test-tiny"} <= set(list_configs())
    cfg = get_config("lite-minilm")
    assert (cfg.backbone, cfg.head, cfg.text_encoder, cfg.text_dim) == \
        ("efficientnet_lite0", "fusion", "minilm", 384)
    assert get_config("lite-clip").text_dim == 512
    assert get_config("lite-minilm-closed").num_classes == 11
    for name in list_configs():
        c = get_config(name)
        assert ModelConfig.from_json(c.to_json()) == c
        json.loads(c.to_json())
    assert get_config("test-tiny", dim=64).dim == 64
    with pytest.raises(KeyError, match="unknown model config"):
        get_config("nope")
    with pytest.raises(ValueError, match="unknown head"):
        get_config("test-tiny", head="segformer")
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({**dataclasses.asdict(get_config("test-tiny")), "colour": "red"})


def test_lite_clip_builds_without_network():
    net = build_model(get_config("lite-clip", backbone_weights=None))
    assert isinstance(net, LGSegNet)
    with torch.no_grad():
        assert net.eval()(torch.rand(1, 3, 32, 32), _text(2, 512)).shape == (1, 3, 4, 4)


@pytest.mark.parametrize("dynamo", [False])
def test_onnx_export_with_dynamic_k(tmp_path, dynamo):
    """Export-friendliness (the runtime exports the frame path): one opset-17 graph serves
    any K. The TorchScript exporter is the stricter one (it cannot export
    nn.MultiheadAttention's fast path) and takes 5 s instead of 15; the torch.export-based
    exporter (dynamo=True) passes the same check, left to the runtime's export tests."""
    ort = pytest.importorskip("onnxruntime")
    net = _net("test-tiny")
    image = torch.rand(1, 3, 64, 64)
    path = tmp_path / "tiny.onnx"
    if dynamo:
        shapes = {"dynamic_shapes": {"image": None, "text": {0: torch.export.Dim("K", min=1, max=1024)}}}
    else:
        shapes = {"dynamic_axes": {"text": {0: "K"}}}
    with torch.no_grad():
        torch.onnx.export(net, (image, _text(3)), str(path), input_names=["image", "text"],
                          output_names=["logits"], opset_version=17, dynamo=dynamo, **shapes)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for k in (1, 7):
        got = session.run(None, {"image": image.numpy(), "text": _text(k).numpy()})[0]
        with torch.no_grad():
            want = net(image, _text(k)).numpy()
        assert got.shape == (1, k + 1, 8, 8)
        assert abs(got - want).max() < 1e-4
