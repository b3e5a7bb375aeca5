"""`lgseg bench --smoke`: JSON structure and sane numbers only; no timing asserts."""
import json

import pytest

from lgseg_ros.runtime import bench


def _positive_stats(s, fps=True):
    assert s["n"] >= 1
    for key in ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "min_ms") + (("fps",) if fps else ()):
        assert s[key] > 0, key
    assert s["min_ms"] <= s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"]


def test_smoke_bench_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    # One cheap reference keeps CI fast; the ViT-L one runs through the same code.
    rc = bench.main(["--smoke", "--references", "denseclip-r50-fpn", "--backends", "torch,onnxruntime",
                     "-o", str(out)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    result = json.loads(out.read_text())
    assert printed == result
    assert result["config"] == "test-tiny" and result["smoke"] is True
    assert result["auto_backend"] in ("torch", "onnxruntime", "tensorrt")

    runs = {r["backend"]: r for r in result["runs"]}
    assert set(runs) == {"torch", "onnxruntime"}
    for r in runs.values():
        assert r["size"] == [64, 96] and r["num_labels"] == 3
        _positive_stats(r["model_latency"])
        _positive_stats(r["end_to_end"])
        # Read from /proc: this process holds at least the interpreter, numpy and the model.
        assert r["process_rss_mb"] > 50, r["process_rss_mb"]
    assert all(v > 0 for v in result["gflops"].values()) and result["gflops"]

    (ref,) = result["references"]
    assert ref["model"] == "denseclip-r50-fpn" and ref["gflops"] > 0 and ref["params_m"] > 1
    _positive_stats(ref["model_latency"])
    (ratio,) = result["ratios"]
    assert ratio["reference"] == "denseclip-r50-fpn" and ratio["fps_ratio_best_vs_reference"] > 0
    assert ratio["fps_ratio_torch_vs_reference"] > 0

    lp = result["label_path"]
    assert lp["num_labels"] == 10 and lp["encoder"] == "minilm"
    for key in ("encode_cold", "encode_cached", "label_change_cold", "label_change_cached"):
        _positive_stats(lp[key], fps=False)
    assert lp["backend"] == result["auto_backend"]
    assert "skipped" in result["batch_throughput"] or result["batch_throughput"][0]["frames_per_s"] > 0


def test_bad_arguments():
    with pytest.raises(SystemExit):
        bench.main(["--sizes", "360by480"])
    assert bench.main(["--smoke", "--references", "vit-huge", "--no-flops"]) == 2
    assert bench.parse_size("360x480") == (360, 480)
    assert bench.net_size_for((360, 480)) == (360, 480)
    assert bench.net_size_for((361, 479)) == (368, 480)
