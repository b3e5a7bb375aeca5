"""`make gpu-check` (lgseg_ros/runtime/gpu_check.py): skips cleanly without a GPU, and its
target evaluation and batch-ratio matching read bench JSON correctly. The GPU run itself is
not exercised here (no GPU in CI)."""
import json

import pytest
import torch

from lgseg_ros.runtime import gpu_check
from lgseg_ros.runtime.bench import batch_ratios


def test_without_cuda_writes_a_json_that_says_so(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the check would run for real")
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["gpu"] is False and "no CUDA device" in result["skipped"]
    assert result["failed"] is False and "tests" not in result and "bench" not in result


def _run(size, p50, backend="torch", device="cuda", precision="fp16"):
    return {"backend": backend, "device": device, "precision": precision, "size": list(size),
            "num_labels": 11, "model_latency": {"p50_ms": p50}}


def test_targets_met_missed_and_unmeasured():
    assert {t["status"] for t in gpu_check.evaluate_targets(None, None)} == {"unmeasured"}
    bench = {"runs": [_run((384, 480), 0.8), _run((720, 960), 3.4),
                      _run((384, 480), 0.1, device="cpu", precision="fp32")],
             "batch_ratios": [{"reference": "lseg-vitl16", "size": [384, 480], "ratio": 25.0},
                              {"reference": "lseg-vitl16", "size": [720, 960], "ratio": 9.5},
                              {"reference": "denseclip-r50-fpn", "size": [384, 480], "ratio": 1.0}]}
    got = {t["target"]: t["status"] for t in
           gpu_check.evaluate_targets(bench, {"argmax_agreement_min": 0.985})}
    assert got == {"torch fp16 CUDA graph p50 @384x480": "met",
                   "torch fp16 CUDA graph p50 @720x960": "missed",
                   "batch-8 throughput vs LSeg ViT-L/16 @384x480": "met",
                   "batch-8 throughput vs LSeg ViT-L/16 @720x960": "missed",
                   "fp16 argmax agreement with fp32 (torch CUDA)": "missed"}


def test_batch_ratios_pair_same_size_k_and_batch():
    ours = [{"batch": 8, "size": [720, 960], "num_labels": 11, "frames_per_s": 400.0},
            {"batch": 8, "size": [360, 480], "num_labels": 11, "frames_per_s": 900.0}]
    refs = [{"model": "lseg-vitl16", "size": [720, 960], "net_size": [720, 960], "num_labels": 11,
             "batch_throughput": {"batch": 8, "frames_per_s": 20.0}},
            # frame 360x480: ours runs at 360x480 (stride 8), the ViT at 368x480 (patch 16)
            {"model": "lseg-vitl16", "size": [360, 480], "net_size": [368, 480], "num_labels": 11,
             "batch_throughput": {"batch": 8, "frames_per_s": 30.0}},
            {"model": "denseclip-r50-fpn", "size": [720, 960], "net_size": [720, 960],
             "num_labels": 3, "batch_throughput": {"batch": 8, "frames_per_s": 1.0}},
            {"model": "x", "size": [720, 960], "net_size": [720, 960], "num_labels": 11,
             "batch_throughput": {"skipped": "OutOfMemoryError"}}]
    got = [(r["reference"], r["size"], r["ratio"]) for r in batch_ratios(ours, refs)]
    assert got == [("lseg-vitl16", [720, 960], 20.0), ("lseg-vitl16", [360, 480], 30.0)]


def test_a_text_table_made_here_serves_the_bench_without_the_encoder(tmp_path):
    """The GPU machine has no MiniLM weights: the check's label embeddings travel as a table.
    The bench run from it gives the same masks' latencies and says the label path was not
    timed; a word the table lacks is an error naming it, never a zero vector."""
    from lgseg_ros.model.checkpoint import read_checkpoint_metadata
    from lgseg_ros.runtime import bench
    from lgseg_ros.train.text_table import load_text_table

    ckpt = gpu_check.default_checkpoint()
    table = tmp_path / "table.safetensors"
    assert gpu_check.main(["--write-text-table", str(table)]) == 0
    cfg = read_checkpoint_metadata(ckpt)[0]
    enc = load_text_table(table, cfg.text_encoder, cfg.prompt_template)
    assert enc.name == cfg.text_encoder and enc.encode(bench.labels_for(11)).shape == (11, 384)
    with pytest.raises(KeyError, match="'giraffe'"):
        enc.encode(["giraffe"])
    out = tmp_path / "bench.json"
    assert bench.main(["--checkpoint", ckpt, "--text-table", str(table), "--backends",
                       "onnxruntime", "--device", "cpu", "--sizes", "96x128", "--iters", "2",
                       "--warmup", "1", "--no-references", "--no-flops", "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["runs"][0]["model_latency"]["p50_ms"] > 0
    assert "--text-table" in result["label_path"]["skipped"]
