"""Backbones: the packaged EfficientNet-Lite0/1/2 ImageNet weights still classify real photos,
the larger ones fit the model budget, and the network is model-agnostic over timm
features_only backbones."""
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from lgseg_ros.model import build_model, get_config
from lgseg_ros.model.backbones import (LITE0_PYPI, PYPI_LITE_WEIGHTS, Backbone, BackboneError,
                                       create_lite_classifier, select_out_indices)
from lgseg_ros.model.flops import measure
from lgseg_ros.model.configs import IMAGENET_MEAN, IMAGENET_STD

# ImageNet-1k ids: 281-285 domestic cats; 504 coffee mug, 967 espresso, 968 cup; 657 missile,
# 744 projectile.
PHOTOS = {"chelsea": {281, 282, 283, 284, 285}, "coffee": {504, 967, 968}, "rocket": {657, 744}}


def _photo(name, size=224):
    x = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def classifier():
    return create_lite_classifier(LITE0_PYPI, pretrained=True)


@pytest.mark.parametrize("weights", sorted(PYPI_LITE_WEIGHTS))
def test_packaged_lite_weights_classify_real_photos(weights):
    net = create_lite_classifier(weights, pretrained=True)
    with torch.no_grad():
        top1 = {name: int(net(_photo(name)).argmax()) for name in PHOTOS}
    assert all(top1[n] in PHOTOS[n] for n in PHOTOS), f"{weights}: predicted ImageNet classes {top1}"


def test_random_lite0_does_not_classify(classifier):
    """The photo test above can fail: a random network does not get all three right."""
    torch.manual_seed(0)
    random_net = create_lite_classifier(LITE0_PYPI, pretrained=False)
    with torch.no_grad():
        hits = sum(int(random_net(_photo(n)).argmax()) in PHOTOS[n] for n in PHOTOS)
    assert hits < len(PHOTOS)


def test_features_only_uses_the_same_weights(classifier):
    backbone = Backbone("efficientnet_lite0", LITE0_PYPI).eval()
    ref = classifier.state_dict()
    own = backbone.body.state_dict()
    assert own and all(torch.equal(v, ref[k]) for k, v in own.items())
    x = _photo("coffee", 96)
    with torch.no_grad():
        c3, c4, c5 = backbone(x)
        y = classifier.bn1(classifier.conv_stem(x))
        outs = []
        for stage in classifier.blocks:
            y = stage(y)
            outs.append(y)
    torch.testing.assert_close(c5, outs[-1])
    assert [t.shape[1] for t in (c3, c4, c5)] == [40, 112, 320]


def test_lite_minilm_default_loads_pretrained(classifier):
    net = build_model(get_config("lite-minilm"))
    w = net.backbone.body.conv_stem.weight
    assert torch.equal(w, classifier.conv_stem.weight)
    # the packaged weights were trained with TF's BatchNorm epsilon
    assert net.backbone.body.bn1.eps == pytest.approx(1e-3)


@pytest.mark.parametrize("config, channels", [("lite1-minilm", [40, 112, 320]),
                                             ("lite2-minilm", [48, 120, 352])])
def test_larger_lite_configs_load_their_weights_and_fit_the_budget(config, channels):
    """The candidates for a larger shipped model: their packaged weights land in the
    segmentation network, and they stay inside issue 18's budget at 384x480 with the 12
    room words (at most 25 MB of fp32 safetensors, at most 5 GFLOPs)."""
    cfg = get_config(config)
    net = build_model(cfg)
    reference = create_lite_classifier(cfg.backbone_weights, pretrained=True)
    assert torch.equal(net.backbone.body.conv_stem.weight, reference.conv_stem.weight)
    assert net.backbone.channels == channels
    row = measure(config, (384, 480), 12)
    assert row["params_m"] * 4 <= 25.0 and row["gflops"] <= 5.0, row


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "resnet18", "mobilenetv3_small_100",
                                  "test_convnext"])
def test_model_agnostic_backbones(arch):
    """Any timm features_only model: strides 8/16/32 from feature_info, whole net runs."""
    torch.manual_seed(0)
    cfg = get_config("test-tiny", backbone=arch)
    net = build_model(cfg).eval()
    assert net.backbone.reductions == [8, 16, 32]
    text = F.normalize(torch.randn(3, cfg.text_dim), dim=1)
    with torch.no_grad():
        feats = net.backbone(torch.rand(1, 3, 64, 96))
        out = net(torch.rand(2, 3, 72, 104), text)
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 12), (4, 6), (2, 3)]
    assert out.shape == (2, 4, 9, 13)
    assert torch.isfinite(out).all()


def test_select_out_indices():
    assert select_out_indices("resnet18") == [2, 3, 4]
    assert select_out_indices("test_convnext") == [1, 2, 3]     # convnext starts at stride 4
    with pytest.raises(BackboneError, match="stride 8"):
        select_out_indices("test_vit")                          # a plain ViT is stride 16 only


def test_bad_backbones_fail_clearly(tmp_path):
    with pytest.raises(BackboneError, match="unknown timm model"):
        Backbone("no_such_net")
    with pytest.raises(BackboneError, match="efficientnet_lite0 only"):
        Backbone("resnet18", LITE0_PYPI)
    with pytest.raises(BackboneError, match="efficientnet_lite1 only, not efficientnet_lite0"):
        Backbone("efficientnet_lite0", "efficientnet-lite1-pypi")
    with pytest.raises(BackboneError, match="no such file"):
        Backbone("resnet18", str(tmp_path / "missing.safetensors"))
    with pytest.raises(BackboneError, match="expected"):
        Backbone("resnet18", out_indices=[1, 2, 3])


def test_backbone_weights_from_file(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = Backbone("test_efficientnet")
    path = tmp_path / "bb.safetensors"
    save_file({k: v.contiguous() for k, v in src.body.state_dict().items()}, str(path))
    torch.manual_seed(2)
    dst = Backbone("test_efficientnet", str(path))
    assert all(torch.equal(v, src.body.state_dict()[k]) for k, v in dst.body.state_dict().items())
