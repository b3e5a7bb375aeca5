"""The frozen-backbone head ablation runs end to end (tiny: 2 images, 3 steps per run)."""
import json

from lgseg_ros.train import head_probe


def test_head_probe_trains_every_head_and_summarises_seeds(tmp_path, camvid_root):
    assert head_probe.main(["--limit-images", "2", "--iters", "3", "--batch-size", "2",
                            "--seeds", "0", "1", "--size", "96", "128", "--threads", "1",
                            "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert [(r["head"], r["seed"]) for r in res["runs"]] == [
        (h, s) for s in (0, 1) for h in ("fusion", "lseg", "denseclip")]
    for head, summary in res["summary"].items():
        assert len(summary["miou"]["runs"]) == 2 and summary["miou"]["std"] is not None
        assert 0.0 <= summary["miou"]["mean"] <= 100.0
    # the bridge is what the fusion head adds: more parameters than the LSeg head
    params = {r["head"]: r["params_m"] for r in res["runs"]}
    assert params["fusion"] > params["denseclip"] > params["lseg"]


def test_head_probe_text_noise_runs_each_value_and_reports_unseen_names(tmp_path, camvid_root):
    assert head_probe.main(["--limit-images", "2", "--iters", "3", "--batch-size", "2",
                            "--seeds", "0", "--heads", "lseg", "--text-noise", "0", "0.5",
                            "--size", "96", "128", "--threads", "1",
                            "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert [r["text_noise"] for r in res["runs"]] == [0.0, 0.5]
    assert set(res["summary"]) == {"lseg@0", "lseg@0.5"}
    for r in res["runs"]:
        for key in ("miou", "heldout_miou", "dev_miou", "near_miss_share"):
            assert 0.0 <= r[key] <= 1.0
    # same seed and data: the noise (which also draws on the batch generator) changes the head
    assert res["runs"][0]["miou"] != res["runs"][1]["miou"] or \
        res["runs"][0]["heldout_miou"] != res["runs"][1]["heldout_miou"]


def test_head_probe_scores_a_held_out_train_tail_with_another_backbone(tmp_path, camvid_root,
                                                                        monkeypatch):
    """Choosing a backbone must not look at val: with --score-on train-tail no val image is
    read, and the scored frames are the last ones of train, none of which is trained on."""
    from lgseg_ros.train import datasets

    real = datasets.build_dataset
    asked = []

    def recording(name, split, *a, **kw):
        asked.append(split)
        return real(name, split, *a, **kw)

    monkeypatch.setattr(head_probe, "build_dataset", recording)
    assert head_probe.main(["--limit-images", "4", "--iters", "2", "--batch-size", "2",
                            "--seeds", "0", "--heads", "lseg", "--score-on", "train-tail",
                            "--tail-share", "0.5", "--backbone-config", "lite2-minilm",
                            "--size", "96", "128", "--threads", "1",
                            "--out", str(tmp_path)]) == 0
    assert asked == ["train"]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["args"]["backbone_config"] == "lite2-minilm"   # 48/120/352 wide: the heads follow
    assert 0.0 <= res["runs"][0]["miou"] <= 1.0
    train = real("camvid", "train").subset(4)
    head, tail = head_probe.split_tail(train, 0.5)
    assert head.pairs == train.pairs[:2] and tail.pairs == train.pairs[2:]
