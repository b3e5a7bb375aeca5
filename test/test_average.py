"""`lgseg average`: the weighted mean of checkpoints of one model, with the first one's
vocabulary and the recipe recorded; different models are refused."""
import json

import pytest
import torch

from lgseg_ros.model import (CheckpointError, build_model, get_config, load_checkpoint,
                             read_checkpoint_metadata, save_checkpoint)
from lgseg_ros.train.average import main


def _saved(path, name="test-tiny", seed=0, extra=None):
    torch.manual_seed(seed)
    cfg = get_config(name)
    net = build_model(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for k, b in net.named_buffers():
            if b.is_floating_point():
                b.add_(torch.rand_like(b))
    save_checkpoint(path, net, cfg, extra)
    return net


def test_average_is_the_weighted_mean_and_keeps_the_first_vocabulary(tmp_path, capsys):
    a = _saved(tmp_path / "a.safetensors", seed=1, extra={"vocabulary": ["door", "wall"]})
    b = _saved(tmp_path / "b.safetensors", seed=2, extra={"vocabulary": ["other"]})
    out = tmp_path / "soup.safetensors"
    assert main([str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                 "--weights", "3", "1", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(out)
    soup, _ = load_checkpoint(out)
    sa, sb, ss = a.state_dict(), b.state_dict(), soup.state_dict()
    floats = [k for k, v in sa.items() if v.is_floating_point()]
    assert floats and any(not torch.equal(sa[k], sb[k]) for k in floats)
    for k, v in ss.items():
        want = 0.75 * sa[k] + 0.25 * sb[k] if k in floats else sa[k]
        torch.testing.assert_close(v, want, rtol=1e-6, atol=1e-6, msg=k)
    _, extra = read_checkpoint_metadata(out)
    assert extra["vocabulary"] == ["door", "wall"]
    assert [(s["file"], s["weight"]) for s in extra["averaged_from"]] == [("a.safetensors", 0.75),
                                                                          ("b.safetensors", 0.25)]
    assert all(len(s["sha256"]) == 64 for s in extra["averaged_from"])


def test_average_refuses_different_models_and_bad_weights(tmp_path):
    _saved(tmp_path / "a.safetensors")
    _saved(tmp_path / "c.safetensors", name="test-tiny-lseg")
    with pytest.raises(CheckpointError, match="different model"):
        main([str(tmp_path / "a.safetensors"), str(tmp_path / "c.safetensors"),
              "--out", str(tmp_path / "x.safetensors")])
    with pytest.raises(SystemExit, match="weights"):
        main([str(tmp_path / "a.safetensors"), str(tmp_path / "a.safetensors"),
              "--weights", "1", "--out", str(tmp_path / "x.safetensors")])
    assert not (tmp_path / "x.safetensors").exists()
