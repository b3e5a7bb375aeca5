"""ONNX export of the frame path: contract, TensorRT-friendly ops, dynamic K, verified by ORT."""
import json

import numpy as np
import onnx
import pytest
import torch

from lgseg_ros.model import build_model, get_config
from lgseg_ros.runtime import export as ex
from lgseg_ros.runtime.frame_path import FramePath

SIZE = (64, 96)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = get_config("test-tiny")
    return build_model(cfg).eval(), cfg


@pytest.fixture(scope="module")
def tiny_onnx(tiny, tmp_path_factory):
    net, cfg = tiny
    return ex.export_onnx(net, tmp_path_factory.mktemp("onnx") / "tiny.onnx", SIZE, cfg.text_dim)


def test_graph_contract_opset_and_ops(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    onnx.checker.check_model(model, full_check=True)
    summary = ex.check_onnx(tiny_onnx)
    assert summary["opset"] == 17
    # Everything in the graph is on the TensorRT-10-parser list: no custom or exotic ops.
    assert summary["unvetted_ops"] == [], summary["unvetted_ops"]
    assert all(o.domain in ("", "ai.onnx") for o in model.opset_import)
    shapes = ex.onnx_io_shapes(tiny_onnx)
    assert shapes["image"] == [1, 3, *SIZE]
    assert isinstance(shapes["text"][0], str) and shapes["text"][1] == 384  # K symbolic
    outs = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    assert outs == {"ids": onnx.TensorProto.INT32, "confidence": onnx.TensorProto.FLOAT}


@pytest.mark.parametrize("k", [1, 2, 7, 40])
def test_onnxruntime_matches_torch_for_any_k(tiny, tiny_onnx, k):
    """K differs from the traced K (3): nothing label-count-specific was baked in."""
    import onnxruntime as ort

    net, cfg = tiny
    sess = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(k)
    image = torch.rand(1, 3, *SIZE, generator=gen)
    text = torch.nn.functional.normalize(torch.randn(k, cfg.text_dim, generator=gen), dim=-1)
    ids, conf = sess.run(["ids", "confidence"], {"image": image.numpy(), "text": text.numpy()})
    with torch.inference_mode():
        ref_ids, ref_conf = FramePath(net)(image, text)
    assert ids.shape == (1, *SIZE) and ids.dtype == np.int32 and conf.dtype == np.float32
    assert np.mean(ids == ref_ids.numpy()) >= 0.999
    np.testing.assert_allclose(conf, ref_conf.numpy(), atol=1e-4)
    assert ids.min() >= 0 and ids.max() <= k  # k = "none of these"
    assert np.all((conf > 0) & (conf <= 1 + 1e-6)) and np.all(conf >= 1.0 / (k + 1) - 1e-5)


def test_frame_path_semantics(tiny):
    """ids/confidence are argmax/max of the softmax of the upsampled logits."""
    net, cfg = tiny
    image = torch.rand(1, 3, *SIZE)
    text = torch.nn.functional.normalize(torch.randn(5, cfg.text_dim), dim=-1)
    with torch.inference_mode():
        ids, conf = FramePath(net)(image, text)
        logits = torch.nn.functional.interpolate(net(image, text), size=SIZE, mode="bilinear")
    prob = logits.softmax(1)
    assert ids.dtype == torch.int32 and ids.shape == (1, *SIZE)
    assert torch.equal(ids.long(), prob.argmax(1))
    torch.testing.assert_close(conf, prob.amax(1))


def test_cached_export_reuses_and_repairs(tiny, tmp_path):
    net, cfg = tiny
    first = ex.cached_export(net, SIZE, cfg.text_dim, cache_dir=tmp_path)
    stamp = first.stat().st_mtime_ns
    again = ex.cached_export(net, SIZE, cfg.text_dim, cache_dir=tmp_path)
    assert again == first and again.stat().st_mtime_ns == stamp
    other = ex.cached_export(net, (32, 64), cfg.text_dim, cache_dir=tmp_path)
    assert other != first
    first.write_bytes(first.read_bytes()[:1000])  # damaged: must be re-exported, not served
    repaired = ex.cached_export(net, SIZE, cfg.text_dim, cache_dir=tmp_path)
    assert repaired == first and ex.check_onnx(repaired)["opset"] == 17
    # Different weights -> a different file, never a stale export.
    net2 = build_model(cfg).eval()
    with torch.no_grad():
        next(net2.parameters()).add_(1.0)
    assert ex.cached_export(net2, SIZE, cfg.text_dim, cache_dir=tmp_path) != first


def test_export_cache_keeps_the_most_recently_used(tiny, tmp_path, monkeypatch):
    net, cfg = tiny
    # the order of use is under test: no file here was used "just now" by another process
    monkeypatch.setattr("lgseg_ros.runtime.engine_cache.PRUNE_GRACE_S", 0.0)
    monkeypatch.setenv("LGSEG_CACHE_KEEP", "2")
    a = ex.cached_export(net, (32, 64), cfg.text_dim, cache_dir=tmp_path)
    b = ex.cached_export(net, (64, 64), cfg.text_dim, cache_dir=tmp_path)
    assert ex.cached_export(net, (32, 64), cfg.text_dim, cache_dir=tmp_path) == a   # a: newest use
    c = ex.cached_export(net, (64, 96), cfg.text_dim, cache_dir=tmp_path)
    assert sorted(tmp_path.glob("*.onnx")) == sorted([a, c]) and not b.exists()


def test_cli_export_with_verification(tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert ex.main(["--config", "test-tiny", "--size", "32", "64", "-o", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert out.is_file() and report["opset"] == 17 and report["size"] == [32, 64]
    assert all(v["argmax_agreement"] >= 0.999 for v in report["onnxruntime_vs_torch"].values())


def test_cli_export_from_checkpoint(tiny, tmp_path, capsys):
    from lgseg_ros.model import save_checkpoint

    net, cfg = tiny
    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", net, cfg)
    out = tmp_path / "ckpt.onnx"
    assert ex.main(["--checkpoint", str(ckpt), "--size", "32", "32", "-o", str(out), "--no-verify"]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == str(out)
    # The export carries the checkpoint's weights: it agrees with the checkpointed net.
    report = ex.verify_with_onnxruntime(out, net, (32, 32), cfg.text_dim, ks=(4,))
    assert report[4]["argmax_agreement"] >= 0.999


def test_a_planted_graph_under_the_cached_name_is_not_served(tiny, tmp_path, caplog):
    """Issue 20 item 5: a valid ONNX graph put under the predictable cache name passed the
    cache check and was served as the model. A cached export is now run against its source
    network before it is served; a foreign one is replaced by a fresh export."""
    import logging

    net, cfg = tiny
    path = ex.cached_export(net, SIZE, cfg.text_dim, cache_dir=tmp_path)
    other = build_model(cfg).eval()  # same architecture, other weights: a well-formed plant
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5 * torch.randn_like(p))
    ex.export_onnx(other, path, SIZE, cfg.text_dim)
    planted = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="lgseg_ros.runtime.export"):
        served = ex.cached_export(net, SIZE, cfg.text_dim, cache_dir=tmp_path)
    assert served == path and served.read_bytes() != planted
    assert "does not reproduce the checkpoint's outputs" in caplog.text
    report = ex.verify_with_onnxruntime(served, net, SIZE, cfg.text_dim, ks=(3,))
    assert report[3]["argmax_agreement"] == 1.0
    assert not list(tmp_path.glob("*.tmp"))


def test_cache_directory_others_can_write_is_refused(tmp_path):
    """Issue 20 items 5 and 12: any peer could name the cache directory; the node created it
    and loaded what was in it. A cache directory must exist and be private to this user."""
    import os

    from lgseg_ros.runtime.engine_cache import check_private_dir

    with pytest.raises(ValueError, match="engine_cache_dir=.*no such directory"):
        check_private_dir(tmp_path / "missing")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(ValueError, match="writable by group or others.*777"):
        check_private_dir(shared)
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        check_private_dir(afile)
    os.chmod(shared, 0o700)
    assert check_private_dir(shared) == shared
