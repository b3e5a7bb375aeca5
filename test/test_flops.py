"""`lgseg flops` and the reference models (counted on the meta device: no memory, no math)."""
import json

import pytest
import torch
import torch.nn.functional as F

from lgseg_ros.model import build_model, build_reference, get_config
from lgseg_ros.model.flops import main, measure


def test_flops_json_on_tiny_configs(capsys):
    assert main(["--size", "64", "96", "--num-labels", "3", "--json",
                 "--variants", "test-tiny", "test-tiny-lseg", "test-tiny-denseclip"]) == 0
    rows = {r["variant"]: r for r in json.loads(capsys.readouterr().out)}
    tiny = rows["test-tiny"]
    params = sum(p.numel() for p in build_model(get_config("test-tiny")).parameters()) / 1e6
    assert tiny["params_m"] == pytest.approx(params)
    assert tiny["output"] == [1, 4, 8, 12] and tiny["num_labels"] == 3
    assert tiny["gmacs"] == pytest.approx(tiny["gflops"] / 2)
    # same backbone and decoder; the bridge adds work on top of LSeg's head
    assert rows["test-tiny"]["gflops"] > rows["test-tiny-denseclip"]["gflops"] > rows["test-tiny-lseg"]["gflops"] > 0
    assert rows["test-tiny"]["params_m"] > rows["test-tiny-lseg"]["params_m"]


def test_flops_scale_with_input_size():
    small = measure("test-tiny-lseg", (64, 64), 3)["gflops"]
    big = measure("test-tiny-lseg", (128, 128), 3)["gflops"]
    assert big == pytest.approx(4 * small, rel=0.05)   # a conv net is linear in pixels


def test_flops_table(capsys):
    assert main(["--size", "32", "32", "--num-labels", "2", "--variants", "test-tiny",
                 "test-tiny-closed"]) == 0
    out = capsys.readouterr().out
    assert "GFLOPs" in out and "test-tiny-closed" in out
    assert "1x12x4x4" in out    # the closed head keeps its own K (11) whatever --num-labels says


def test_flops_rejects_unknown_variant():
    with pytest.raises(KeyError, match="unknown variant"):
        main(["--variants", "bogus"])


@pytest.mark.parametrize("name, text_dim, stride", [("lseg-vitl16", 512, 2),
                                                     ("denseclip-r50-fpn", 1024, 4)])
def test_reference_models_on_meta(name, text_dim, stride):
    with torch.device("meta"):
        model = build_reference(name)
        out = model(torch.rand(1, 3, 96, 128), torch.randn(5, text_dim))
    assert model.text_dim == text_dim
    assert tuple(out.shape) == (1, 5, 96 // stride, 128 // stride)


def test_reference_vitl_size():
    row = measure("lseg-vitl16", (384, 480), 11)
    assert 300 < row["params_m"] < 350              # ViT-L/16 is ~304M + DPT head
    assert row["gflops"] > 50 * measure("fusion", (384, 480), 11)["gflops"]


def test_denseclip_reference_runs_for_real():
    torch.manual_seed(0)
    model = build_reference("denseclip-r50-fpn").eval()
    text = F.normalize(torch.randn(3, 1024), dim=1)
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out = model(image, text)
        out_p = model(image, text[[2, 0, 1]])
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()
    torch.testing.assert_close(out_p, out[:, [2, 0, 1]], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="K >= 1"):
        model(torch.rand(1, 3, 64, 64), torch.zeros(0, 1024))
