"""`make gpu-check`: every GPU path of the frame path, checked and measured in one command.

Runs, on a CUDA machine, into one JSON file:
  1. the GPU tests (torch CUDA fp16 with CUDA graphs: parity and replay across label
     changes; ONNX Runtime's CUDA provider where installed; TensorRT fp32/fp16 engines where
     TensorRT imports), via pytest, with each test's outcome and skip reason;
  2. fp16 against fp32 agreement of the torch CUDA path on the benchmarked model;
  3. `lgseg bench` at 384x480 and 720x960 (every usable backend, batch-8 CUDA-graph
     throughput, the LSeg ViT-L/16 and DenseCLIP R50 references in the same run);
  4. the issue's targets, each with the measured value and met / missed. Targets are
     reported, never asserted: speed depends on the GPU and its load.
On a machine without CUDA it writes a JSON that says so and exits 0, having run nothing.
Exit status 1 means a GPU test failed or a step crashed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[2]
GPU_TESTS = ("test/test_runtime_backends.py", "test/test_runtime_gpu.py",
             "test/test_runtime_cuda_buffers.py")
SIZES = ("384x480", "720x960")
# The targets (set for an H100): (name, bench size, limit).
LATENCY_TARGETS_MS = (("torch fp16 CUDA graph p50 @384x480", (384, 480), 1.0),
                      ("torch fp16 CUDA graph p50 @720x960", (720, 960), 3.0))
BATCH_RATIO_TARGET = 10.0
FP16_AGREEMENT_TARGET = 0.99


def run_tests(workdir: Path, timeout: int) -> dict:
    tests = [t for t in GPU_TESTS if (REPO / t).exists()]
    if not tests:
        return {"skipped": f"test files not found under {REPO} (installed package?)"}
    junit = workdir / "gpu_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
           f"--junitxml={junit}", *tests]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    out = {"command": " ".join(cmd[1:]), "returncode": proc.returncode,
           "seconds": round(time.perf_counter() - start, 1), "tests": {}}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
            status = "passed"
            for tag in ("failure", "error", "skipped"):
                node = case.find(tag)
                if node is not None:
                    status = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                    status += f": {(node.get('message') or '').strip()[:300]}"
                    break
            out["tests"][name] = status
    else:
        out["output_tail"] = (proc.stdout + proc.stderr)[-3000:]
    return out


def fp16_agreement(checkpoint: str | None, config: str | None, size=(384, 480), k: int = 11,
                   frames: int = 4, text_encoder=None) -> dict:
    """torch CUDA fp16 (CUDA graphs) against torch CUDA fp32 on random frames."""
    import numpy as np
    import torch

    from .backends.torch_backend import TorchBackend
    from .bench import labels_for
    from .segmenter import Segmenter

    seg = Segmenter(checkpoint=checkpoint, config=config, backend="torch", device="cuda",
                    precision="fp16", net_size=size, text_encoder=text_encoder)
    ref = TorchBackend(seg.net, seg.cfg, device="cuda", precision="fp32", cuda_graphs=False)
    emb = seg.prepare_labels(labels_for(k)).embeddings
    seg.backend.set_labels(emb)
    ref.set_labels(emb)
    rng = np.random.default_rng(0)
    agree, diff = [], []
    for _ in range(frames):
        image = rng.random((1, 3, *size), dtype=np.float32)
        ids, conf = seg.backend.infer(image)
        rids, rconf = ref.infer(image)
        agree.append(float(np.mean(ids == rids)))
        diff.append(float(np.max(np.abs(conf - rconf))))
    del seg, ref
    torch.cuda.empty_cache()
    return {"model": config or checkpoint, "size": list(size), "num_labels": k, "frames": frames,
            "argmax_agreement_min": round(min(agree), 5), "max_confidence_diff": round(max(diff), 5)}


def run_bench(workdir: Path, checkpoint: str | None, extra: Sequence[str], timeout: int,
              text_table: str | None = None) -> dict:
    out_json = workdir / "bench.json"
    cmd = [sys.executable, "-m", "lgseg_ros.runtime.bench", "--sizes", *SIZES, "--num-labels", "11",
           "--backends", "all", "--precision", "auto", "--batch", "8", "-o", str(out_json), *extra]
    if text_table:
        cmd += ["--text-table", text_table]
    if checkpoint:
        cmd += ["--checkpoint", checkpoint]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not out_json.exists():
        return {"command": " ".join(cmd[1:]), "returncode": proc.returncode,
                "error": (proc.stdout + proc.stderr)[-3000:]}
    return {"command": " ".join(cmd[1:]), "returncode": 0, "result": json.loads(out_json.read_text())}


def evaluate_targets(bench: dict | None, parity: dict | None) -> list[dict]:
    """The issue's targets against what this run measured: met / missed / unmeasured."""
    targets = []
    runs = (bench or {}).get("runs", [])
    for name, size, limit in LATENCY_TARGETS_MS:
        match = [r for r in runs if r.get("backend") == "torch" and r.get("device") == "cuda"
                 and r.get("precision") == "fp16" and tuple(r.get("size", ())) == size
                 and "model_latency" in r]
        value = match[0]["model_latency"]["p50_ms"] if match else None
        targets.append({"target": name, "limit_ms": limit, "measured_ms": value,
                        "status": "unmeasured" if value is None else ("met" if value <= limit else "missed")})
    for size in ((384, 480), (720, 960)):
        ratios = [r for r in (bench or {}).get("batch_ratios", [])
                  if r["reference"] == "lseg-vitl16" and tuple(r["size"]) == size]
        value = ratios[0]["ratio"] if ratios else None
        targets.append({"target": f"batch-8 throughput vs LSeg ViT-L/16 @{size[0]}x{size[1]}",
                        "limit": f">= {BATCH_RATIO_TARGET}x", "measured": value,
                        "status": "unmeasured" if value is None
                        else ("met" if value >= BATCH_RATIO_TARGET else "missed")})
    value = (parity or {}).get("argmax_agreement_min")
    targets.append({"target": "fp16 argmax agreement with fp32 (torch CUDA)",
                    "limit": f">= {FP16_AGREEMENT_TARGET}", "measured": value,
                    "status": "unmeasured" if value is None
                    else ("met" if value >= FP16_AGREEMENT_TARGET else "missed")})
    return targets


def write_text_table(path: str, checkpoint: str | None) -> dict:
    """Where the text encoder is: every string the check encodes (the model's grounding
    vocabulary and the benchmark's labels), for a GPU machine without the MiniLM weights.
    The table records the encoder and template, and the bench refuses one from another."""
    from lgseg_ros.train.text_table import write_text_table as write
    from .bench import labels_for
    from .segmenter import Segmenter

    seg = Segmenter(checkpoint=checkpoint, backend="onnxruntime", device="cpu", route=False)
    # labels_for(k) is a prefix of labels_for(16): the bench's 11 and its label path's 10.
    names = list(dict.fromkeys([*seg.grounding.names, *labels_for(16)]))
    import numpy as np
    import torch

    rows = torch.as_tensor(np.asarray(seg.text_encoder.encode(names), np.float32))
    n = write(path, dict(zip(names, rows)), seg.text_encoder.name, seg.text_encoder.template)
    return {"text_table": path, "names": n, "encoder": seg.text_encoder.name}


def default_checkpoint() -> str | None:
    path = REPO / "models" / "lgseg_lite_minilm.safetensors"
    return str(path) if path.exists() else None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", default="outputs/gpu_check.json")
    p.add_argument("--checkpoint", default=None, help="default: the shipped model if present")
    p.add_argument("--config", default=None, help="model config when no checkpoint is used")
    p.add_argument("--no-tests", action="store_true")
    p.add_argument("--no-bench", action="store_true")
    p.add_argument("--bench-args", default="", help="extra `lgseg bench` arguments, one string")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per step")
    p.add_argument("--text-table", default=None, metavar="FILE",
                   help="label embeddings from this table instead of the text encoder (a GPU "
                        "machine without the MiniLM weights); make it with --write-text-table")
    p.add_argument("--write-text-table", default=None, metavar="FILE",
                   help="write that table here, where the text encoder is, and stop")
    args = p.parse_args(argv)
    if args.write_text_table:
        print(json.dumps(write_text_table(args.write_text_table,
                                          args.checkpoint or default_checkpoint())))
        return 0

    from .bench import environment

    result = {"check": "lgseg gpu-check", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "environment": environment()}
    failed = False
    import torch

    if not torch.cuda.is_available():
        result["gpu"] = False
        result["skipped"] = ("no CUDA device (torch.cuda.is_available() is False, torch "
                             f"{torch.__version__}): the GPU tests and GPU benchmarks did not run")
    else:
        from .backends import tensorrt_problem

        result["gpu"] = True
        result["tensorrt"] = tensorrt_problem() or "usable"
        with contextlib.suppress(ImportError):
            import onnxruntime as ort

            result["onnxruntime_providers"] = ort.get_available_providers()
        checkpoint = args.checkpoint or (None if args.config else default_checkpoint())
        with tempfile.TemporaryDirectory(prefix="lgseg_gpu_check_") as tmp:
            work = Path(tmp)
            if not args.no_tests:
                result["tests"] = run_tests(work, args.timeout)
                statuses = result["tests"].get("tests", {}).values()
                failed |= result["tests"].get("returncode", 0) != 0 or any(
                    s.startswith(("failed", "error")) for s in statuses)
            try:
                table = None
                if args.text_table:
                    from lgseg_ros.train.text_table import load_text_table_for_model

                    table = load_text_table_for_model(args.text_table, checkpoint, args.config)
                result["fp16_parity"] = fp16_agreement(
                    checkpoint, None if checkpoint else (args.config or "lite-minilm"),
                    text_encoder=table)
            except Exception as exc:  # reported; the rest of the check still runs
                result["fp16_parity"] = {"error": f"{type(exc).__name__}: {exc}"}
                failed = True
            if not args.no_bench:
                result["bench"] = run_bench(work, checkpoint, args.bench_args.split(), args.timeout,
                                            args.text_table)
                failed |= result["bench"]["returncode"] != 0
        result["targets"] = evaluate_targets(result.get("bench", {}).get("result"),
                                             result.get("fp16_parity"))
    result["failed"] = failed
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
