"""`lgseg train` / `lgseg eval` end to end on a few CamVid images with the tiny config.

Small on purpose (CI on a 2-core CPU): 2 images at 72x96, test-tiny. Checks that the loss
falls when overfitting, that resuming reproduces an uninterrupted run exactly, and that
eval's numbers equal an independent recomputation from the network's own predictions.
"""
import json

import cv2

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lgseg_ros.train import evaluate, train

# Whole images (scale 0.2 of 360x480 = 72x96) so the two images can be memorised.
COMMON = ["--config", "test-tiny", "--data", "camvid", "--limit-images", "2", "--batch-size", "2",
          "--crop", "72", "96", "--scale", "0.2", "0.2", "--workers", "0", "--no-progress",
          "--log-every", "1", "--seed", "3", "--threads", "1"]


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory, camvid_root):
    out = tmp_path_factory.mktemp("overfit")
    rc = train.main(COMMON + ["--iters", "30", "--lr", "1e-2", "--warmup", "0",
                              "--subset-prob", "0", "--synonym-prob", "0",
                              "--out", str(out), "--no-eval"])
    assert rc == 0
    return out


def test_train_loss_falls_and_writes_checkpoint(overfit_run):
    from lgseg_ros.model import load_checkpoint
    losses = _losses(overfit_run)
    assert len(losses) == 30
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < 0.7 * first, f"loss did not fall enough: {first:.3f} -> {last:.3f}"
    net, cfg = load_checkpoint(str(overfit_run / "final.safetensors"))
    assert cfg.name == "test-tiny"
    for name in ("train.log", "args.json", "last_state.pt", "loss.png"):
        assert (overfit_run / name).stat().st_size > 0
    from lgseg_ros.model import read_checkpoint_metadata
    _, meta = read_checkpoint_metadata(overfit_run / "final.safetensors")
    assert meta["labels"][0] == "sky" and len(meta["labels"]) == 11 and meta["iters"] == 30
    state = torch.load(overfit_run / "last_state.pt", weights_only=True)
    assert state["step"] == 30


def test_resume_reproduces_uninterrupted_run(tmp_path, camvid_root):
    from lgseg_ros.model import load_checkpoint
    # random label subsets, synonyms and text noise on: their RNGs must be restored too
    args = COMMON + ["--iters", "6", "--lr", "5e-3", "--subset-prob", "0.5",
                     "--synonym-prob", "0.5", "--text-noise", "0.5", "--no-eval"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train.main(args + ["--out", str(straight)]) == 0
    assert train.main(args + ["--out", str(split), "--stop-at", "3"]) == 0
    assert not (split / "final.safetensors").exists()
    assert torch.load(split / "last_state.pt", weights_only=True)["step"] == 3
    assert train.main(args + ["--out", str(split), "--resume"]) == 0
    a, _ = load_checkpoint(str(straight / "final.safetensors"))
    b, _ = load_checkpoint(str(split / "final.safetensors"))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6, msg=k)
    assert _losses(straight) == pytest.approx(_losses(split), rel=1e-5)


def test_resume_without_state_fails_clearly(tmp_path):
    with pytest.raises(SystemExit, match="no .*last.safetensors"):
        train.main(COMMON + ["--iters", "2", "--out", str(tmp_path), "--resume"])


def test_eval_writes_outputs_and_matches_independent_count(overfit_run, tmp_path, camvid_root):
    from lgseg_ros.model import load_checkpoint
    from lgseg_ros.text import build_text_encoder
    from lgseg_ros.train.datasets import CAMVID_CLASSES, load_camvid

    out = tmp_path / "eval"
    ckpt = str(overfit_run / "final.safetensors")
    rc = evaluate.main(["--checkpoint", ckpt, "--data", "camvid", "--split", "val",
                        "--limit-images", "2", "--size", "96", "128", "--batch-size", "2",
                        "--workers", "0", "--rename", "heldout", "--rename", "car=automobile",
                        "--out", str(out), "--no-progress", "--threads", "1"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    for name in ("confusion.png", "predictions.png"):
        assert (out / name).stat().st_size > 1000
    assert m["num_images"] == 2 and set(m["renamed"]) == {"heldout", "car=automobile"}
    assert len(m["subset_queries"]["per_class_iou"]) == 11

    # Independent recomputation: the network's argmax at label resolution, numpy IoU.
    net, cfg = load_checkpoint(ckpt)
    net.eval()
    enc = build_text_encoder(cfg.text_encoder, template=cfg.prompt_template)
    ds = load_camvid(camvid_root, "val").subset(2)
    inter, union = np.zeros(11), np.zeros(11)
    valid_pixels = 0
    with torch.no_grad():
        text = enc.encode(list(CAMVID_CLASSES))
        for i in range(2):
            rgb, lbl = ds.load(i)
            rgb = cv2.resize(rgb, (128, 96), interpolation=cv2.INTER_AREA)
            x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
            lbl = torch.from_numpy(lbl.astype(np.int64))
            logits = F.interpolate(net(x, text), size=lbl.shape, mode="bilinear",
                                   align_corners=False)
            pred, gt = logits.argmax(1)[0].numpy(), lbl.numpy()
            valid = gt != 255
            valid_pixels += int(valid.sum())
            for c in range(11):
                inter[c] += ((pred == c) & (gt == c) & valid).sum()
                union[c] += (((pred == c) | (gt == c)) & valid).sum()
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    assert m["full"]["pixels"] == valid_pixels
    assert m["full"]["miou"] == pytest.approx(np.nanmean(iou), abs=1e-4)
    assert m["full"]["per_class_iou"]["road"] == pytest.approx(iou[3], abs=1e-4)


def test_none_margin_probe_lets_a_name_asked_alone_take_more_as_the_margin_grows(
        overfit_run, tmp_path):
    """tools/none_margin_probe.py (models/README.md, stage 22c): a wider margin can only add
    pixels to a name asked alone, and the probe refuses the split the card reports."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "tools" / "none_margin_probe.py"
    spec = importlib.util.spec_from_file_location("none_margin_probe", path)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    ckpt = str(overfit_run / "final.safetensors")
    out = tmp_path / "margins.json"
    assert probe.main([ckpt, "--every", "1000", "--threads", "1", "--margins", "4", "0", "1",
                       "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    rows = res["margins"]
    assert res["images"] == 1 and [r["margin"] for r in rows] == [0, 1, 4]
    shares = [r["near_miss_share_pct"] for r in rows]
    assert shares[0], "the near-miss words were not scored"
    for w in shares[0]:
        assert shares[0][w] <= shares[1][w] <= shares[2][w]
    for r in rows:
        assert 0 <= r["ratio_to_full"] < 10
        assert all(0 <= v <= 100 for v in r["alone_iou"].values())
    with pytest.raises(SystemExit, match="val"):
        probe.main([ckpt, "--split", "val", "--out", str(tmp_path / "v.json")])


def test_eval_scores_a_name_asked_alone_with_the_nodes_margin():
    """`lgseg eval --single-label-margin M` scores one-name queries as the node's
    single_label_margin does: the name wins where "none" leads by less than M; a set of two
    or more names keeps plain argmax."""
    one = torch.tensor([[[[1.0, 0.0]], [[1.5, 2.0]]]])            # none leads by 0.5 and 2.0
    net = lambda images, text: one.clone()                       # noqa: E731
    assert evaluate.predict(net, None, None, (1, 2)).tolist() == [[[1, 1]]]
    assert evaluate.predict(net, None, None, (1, 2), 1.0).tolist() == [[[0, 1]]]
    assert evaluate.predict(net, None, None, (1, 2), 2.5).tolist() == [[[0, 0]]]
    two = torch.tensor([[[[1.0]], [[0.0]], [[1.5]]]])            # name, name, none
    net2 = lambda images, text: two.clone()                      # noqa: E731
    assert evaluate.predict(net2, None, None, (1, 1), 4.0).tolist() == [[[2]]]


@pytest.mark.parametrize("extra, why", [
    (["--precision", "int8", "--single-label-margin", "1"], "needs --precision torch"),
    (["--single-label-margin", "4.5"], r"must be in \[0, 4\]"),
    (["--single-label-margin", "nan"], r"must be in \[0, 4\]")])
def test_eval_refuses_a_margin_it_cannot_apply(extra, why):
    """The ONNX path returns a one-hot of the graph's ids, on which a margin would score
    every pixel as the name (review of b5307d3): refused before anything loads."""
    with pytest.raises(SystemExit, match=why):
        evaluate.main(["--checkpoint", "no-such-file.safetensors", "--out", "unused", *extra])
