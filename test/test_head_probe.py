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
