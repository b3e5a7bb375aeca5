"""`lgseg bench`: latency and throughput of the frame path per backend, side by side with
reference models in the same run, plus the label path. Prints JSON.

Sizes are camera frame sizes; the network runs at the size rounded up to a multiple of 8
(360x480 runs as is), and two latencies are reported: ``model_latency`` is the backend alone
on the network-size tensor, ``end_to_end`` is ``Segmenter.segment`` on a uint8 frame
(preprocessing, model, ids back at the frame's resolution). Reference models (LSeg-style ViT-L/16, DenseCLIP-style ResNet-50 + FPN, random
weights) run through the same frame path in torch, on the same network-size tensor.

Numbers on a shared machine move with its load: read them as a same-run comparison.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import logging
import os
import platform
import sys
import time
from typing import Callable, Sequence

import numpy as np
import torch

from lgseg_ros.procinfo import rss_mb

log = logging.getLogger(__name__)

LABEL_WORDS = ("sky", "building", "pole", "road", "sidewalk", "tree", "sign symbol", "fence",
               "car", "pedestrian", "bicyclist", "door", "floor", "person", "chair", "table",
               "wall", "window", "grass", "truck")
REFERENCES = ("lseg-vitl16", "denseclip-r50-fpn")


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW like 360x480, got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def net_size_for(size: tuple[int, int], stride: int = 8) -> tuple[int, int]:
    # The logits are at stride 8; the network takes any multiple of it (see segmenter.py).
    return tuple(-(-int(v) // stride) * stride for v in size)


def labels_for(k: int) -> list[str]:
    base = list(LABEL_WORDS)
    return [base[i] if i < len(base) else f"{base[i % len(base)]} {i // len(base)}" for i in range(k)]


def stats(samples_s: Sequence[float], fps: bool = True) -> dict:
    ms = np.asarray(samples_s, np.float64) * 1e3
    p50 = float(np.percentile(ms, 50))
    if not fps:
        return {"p50_ms": round(p50, 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
                "p99_ms": round(float(np.percentile(ms, 99)), 3), "mean_ms": round(float(ms.mean()), 3),
                "min_ms": round(float(ms.min()), 3), "n": int(ms.size)}
    return {"p50_ms": round(p50, 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "mean_ms": round(float(ms.mean()), 3),
            "min_ms": round(float(ms.min()), 3), "n": int(ms.size),
            "fps": round(1e3 / p50, 3) if p50 > 0 else None}


def time_calls(fn: Callable[[], object], iters: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return samples


def gflops(net: torch.nn.Module, size: tuple[int, int], text: torch.Tensor) -> float | None:
    """Forward GFLOPs (2 per multiply-add) by torch's FlopCounterMode, on CPU in fp32."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        image = torch.rand(1, 3, *size)
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            net(image, text)
        return round(counter.get_total_flops() / 1e9, 3)
    except Exception as exc:  # a counting failure must not lose the timings
        log.warning("flop count failed: %s", exc)
        return None


def environment() -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "machine": platform.machine(), "cuda": torch.cuda.is_available()}
    try:
        with open("/proc/cpuinfo") as f:
            env["cpu"] = next((line.split(":", 1)[1].strip() for line in f
                               if line.startswith("model name")), platform.processor())
    except OSError:
        env["cpu"] = platform.processor()
    with contextlib.suppress(Exception):
        env["load_avg_1m"] = round(os.getloadavg()[0], 2)
    if env["cuda"]:
        env["gpu"] = torch.cuda.get_device_name(0)
    with contextlib.suppress(ImportError):
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    with contextlib.suppress(ImportError):
        import tensorrt

        env["tensorrt"] = tensorrt.__version__
    return env


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_ours(args, encoder, text_cache: dict) -> tuple[list[dict], dict]:
    """Per backend: model latency and end-to-end latency at each size and K."""
    from .segmenter import Segmenter

    runs, segmenters = [], {}
    for backend in args.backends:
        for size in args.sizes:
            net_size = net_size_for(size)
            try:
                seg = Segmenter(checkpoint=args.checkpoint, config=args.config, backend=backend,
                                device=args.device, precision=args.precision, net_size=net_size,
                                text_encoder=encoder, **_backend_opts(args, backend))
            except Exception as exc:
                log.warning("backend %s unavailable: %s", backend, exc)
                runs.append({"model": f"lgseg:{args.config or 'checkpoint'}", "backend": backend,
                             "size": list(size), "skipped": f"{type(exc).__name__}: {exc}"})
                continue
            segmenters[(backend, size)] = seg
            rng = np.random.default_rng(0)
            frame = rng.integers(0, 256, (*size, 3), np.uint8)
            image = rng.random((1, 3, *net_size), dtype=np.float32)
            for k in args.num_labels:
                label_set = seg.prepare_labels(labels_for(k))
                text_cache[k] = label_set.embeddings
                seg.backend.set_labels(label_set.embeddings)
                model = stats(time_calls(lambda: seg.backend.infer(image), args.iters, args.warmup))
                seg.segment(frame, label_set)
                e2e = stats(time_calls(lambda: seg.segment(frame, label_set), args.iters, args.warmup))
                runs.append({"model": f"lgseg:{seg.cfg.name}", "backend": seg.backend.name,
                             "device": getattr(seg.backend, "device", "cpu"),
                             "precision": getattr(seg.backend, "precision", "fp32"),
                             "size": list(size), "net_size": list(net_size), "num_labels": k,
                             "model_latency": model, "end_to_end": e2e,
                             # This process's RSS after the K-label frames: its growth from one
                             # K to the next is what more labels cost (the frame path's buffers).
                             "process_rss_mb": rss_mb()})
                print(f"[bench] {seg.backend.name:<12} {size[0]}x{size[1]} K={k}: model p50 "
                      f"{model['p50_ms']:.1f} ms ({model['fps']:.1f} FPS), end-to-end p50 "
                      f"{e2e['p50_ms']:.1f} ms", file=sys.stderr)
    return runs, segmenters


def _backend_opts(args, backend: str) -> dict:
    opts = {}
    if backend in ("onnxruntime", "auto"):
        if args.ort_threads:
            opts["intra_op_threads"] = args.ort_threads
        opts["graph_optimization"] = args.ort_opt
    return opts


def bench_references(args, text_dim_of_ref: dict) -> list[dict]:
    from .backends.torch_backend import TorchBackend

    try:
        from lgseg_ros.model.reference import build_reference
    except ImportError as exc:
        return [{"model": name, "skipped": f"lgseg_ros.model.reference unavailable: {exc}"}
                for name in args.references]
    out = []
    for name in args.references:
        torch.manual_seed(0)
        net = build_reference(name).eval()
        d = _ref_text_dim(net)
        text_dim_of_ref[name] = d
        backend = TorchBackend(net, None, device=args.device if args.device != "auto" else "auto",
                               precision=args.precision)
        for size in args.sizes:
            for k in args.num_labels:
                text = torch.nn.functional.normalize(torch.randn(k, d), dim=-1)
                backend.set_labels(text.numpy())
                net_size, error = _reference_size(backend, size)
                if net_size is None:
                    out.append({"model": name, "size": list(size), "num_labels": k,
                                "skipped": f"no input size near {size} accepted: {error}"})
                    continue
                image = np.random.default_rng(0).random((1, 3, *net_size), dtype=np.float32)
                model = stats(time_calls(lambda: backend.infer(image), args.ref_iters, args.ref_warmup))
                entry = {"model": name, "backend": "torch", "device": backend.device,
                         "precision": backend.precision, "size": list(size),
                         "net_size": list(net_size), "num_labels": k, "model_latency": model,
                         "gflops": gflops(net, net_size, text) if args.flops else None,
                         "params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2)}
                if backend.device == "cuda":
                    # The same batched CUDA-graph measurement as ours, so the ratio compares
                    # like with like; a reference too big for the GPU is reported, not fatal.
                    try:
                        entry["batch_throughput"] = cuda_batch_throughput(
                            net, net_size, text, batch=args.batch, iters=max(5, args.ref_iters))
                    except RuntimeError as exc:
                        entry["batch_throughput"] = {"skipped": f"{type(exc).__name__}: {exc}"}
                        torch.cuda.empty_cache()
                out.append(entry)
                print(f"[bench] ref {name:<18} {size[0]}x{size[1]} (net {net_size[0]}x{net_size[1]}) "
                      f"K={k}: p50 {model['p50_ms']:.1f} ms ({model['fps']:.2f} FPS)", file=sys.stderr)
        del backend, net
        gc.collect()
    return out


def _reference_size(backend, size: tuple[int, int]):
    """The smallest size the reference accepts at or above ``size``: multiples of 8, else
    16 (ViT patch size), else 32. The first successful call doubles as a warm-up."""
    error = None
    for stride in (8, 16, 32):
        net_size = net_size_for(size, stride)
        try:
            backend.infer(np.zeros((1, 3, *net_size), np.float32))
            return net_size, None
        except (AssertionError, RuntimeError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
    return None, error


def _ref_text_dim(net) -> int:
    for attr in ("text_dim", "embed_dim"):
        value = getattr(net, attr, None) or getattr(getattr(net, "cfg", None), attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 512


def cuda_batch_throughput(net, size: tuple[int, int], text: torch.Tensor, batch: int = 8,
                          iters: int = 50) -> dict:
    """Frames per second at batch ``batch``, fp16, replayed from one CUDA graph."""
    from .frame_path import FramePath

    frame = FramePath(copy.deepcopy(net)).eval().cuda().half()  # .to() is in place
    image = torch.rand(batch, 3, *size, device="cuda", dtype=torch.float16)
    text = text.cuda().half()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(3):
            frame(image, text)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        frame(image, text)
    for _ in range(5):
        graph.replay()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        graph.replay()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"batch": batch, "size": list(size), "num_labels": int(text.shape[0]),
            "ms_per_batch": round(elapsed / iters * 1e3, 3),
            "frames_per_s": round(batch * iters / elapsed, 1)}


def bench_label_path(args, encoder, segmenters: dict) -> dict:
    """Label change for K labels: encode cold (labels never seen), cached, and into a backend."""
    k = args.label_k
    words = labels_for(k)
    n = max(3, args.iters)
    cold = []
    for i in range(n + 1):
        fresh = [f"{w} {i}" for w in words]  # unseen strings: a real encoder pass every time
        t = time.perf_counter()
        encoder.encode(fresh)
        cold.append(time.perf_counter() - t)
    cold = cold[1:]  # the first call pays one-off allocation
    encoder.encode(words)
    cached = time_calls(lambda: encoder.encode(words), n, 1)
    out = {"encoder": encoder.name, "num_labels": k, "encode_cold": stats(cold, fps=False),
           "encode_cached": stats(cached, fps=False)}
    if segmenters:
        # The label change as the node sees it: through the backend "auto" would pick.
        preferred = [s for s in segmenters.values() if s.backend.name == args.auto_backend]
        seg = (preferred or list(segmenters.values()))[0]
        frame = np.zeros((*net_size_for(args.sizes[0]), 3), np.uint8)

        def change(labels):
            # prepare_labels + the backend load that segment() does on the next frame.
            ls = seg.prepare_labels(labels)
            t = time.perf_counter()
            seg.backend.set_labels(ls.embeddings)
            return time.perf_counter() - t

        change_cold, set_only = [], []
        for i in range(n):
            t = time.perf_counter()
            set_only.append(change([f"{w} x{i}" for w in words]))
            change_cold.append(time.perf_counter() - t)
        change_cached = time_calls(lambda: change(words), n, 1)
        seg.segment(frame, seg.prepare_labels(words))
        out.update({"backend": seg.backend.name, "label_change_cold": stats(change_cold, fps=False),
                    "label_change_cached": stats(change_cached, fps=False),
                    "backend_set_labels": stats(set_only, fps=False)})
    return out


def bench_int8(args) -> list[dict]:
    """fp32 and int8 ONNX Runtime on the CPU in one run: the two Segmenters take turns, a
    round of frames each, so load changes on a shared machine hit both alike. Frames are
    CamVid val images when present (the argmax agreement is reported on them too)."""
    import cv2

    from .quantize import default_calibration_dir
    from .segmenter import Segmenter, default_checkpoint_path

    checkpoint = args.checkpoint or default_checkpoint_path()
    val = default_calibration_dir().parent / "val"
    files = sorted(val.glob("*.png"))[::25][:8] if val.is_dir() else []
    out = []
    for size in args.sizes:
        frames = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
        frames = [cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA) for f in frames]
        rng = np.random.default_rng(0)
        frames = frames or [rng.integers(0, 256, (*size, 3), np.uint8) for _ in range(4)]
        segs = {p: Segmenter(checkpoint=checkpoint, backend="onnxruntime", device="cpu",
                             precision=p, net_size=net_size_for(size), **_backend_opts(args, "onnxruntime"))
                for p in ("fp32", "int8")}
        for k in args.num_labels:
            sets = {p: s.prepare_labels(labels_for(k)) for p, s in segs.items()}
            times = {p: [] for p in segs}
            agree = [float(np.mean(segs["fp32"].segment(f, sets["fp32"]).ids
                                   == segs["int8"].segment(f, sets["int8"]).ids)) for f in frames]
            rounds = max(2, -(-args.iters // len(frames)))
            for _ in range(rounds):
                for p, seg in segs.items():
                    for f in frames:
                        t = time.perf_counter()
                        seg.segment(f, sets[p])
                        times[p].append(time.perf_counter() - t)
            fp32, int8 = stats(times["fp32"]), stats(times["int8"])
            entry = {"size": list(size), "num_labels": k, "checkpoint": str(checkpoint),
                     "frames": "camvid val" if files else "random", "end_to_end_fp32": fp32,
                     "end_to_end_int8": int8, "speedup_p50": round(fp32["p50_ms"] / int8["p50_ms"], 3),
                     "argmax_agreement_mean": round(float(np.mean(agree)), 5),
                     "argmax_agreement_min": round(float(np.min(agree)), 5)}
            with contextlib.suppress(Exception):
                entry["load_avg_1m"] = round(os.getloadavg()[0], 2)
            out.append(entry)
            print(f"[bench] int8 vs fp32 {size[0]}x{size[1]} K={k}: p50 {int8['p50_ms']:.1f} vs "
                  f"{fp32['p50_ms']:.1f} ms, {entry['speedup_p50']:.2f}x, argmax agreement "
                  f"{entry['argmax_agreement_mean']:.4f}", file=sys.stderr)
    return out


def ratios(ours: list[dict], refs: list[dict]) -> list[dict]:
    out = []
    for ref in refs:
        if "model_latency" not in ref:
            continue
        same = [r for r in ours if "model_latency" in r and r["size"] == ref["size"]
                and r["num_labels"] == ref["num_labels"]]
        if not same:
            continue
        best = max(same, key=lambda r: r["model_latency"]["fps"])
        entry = {"reference": ref["model"], "size": ref["size"], "num_labels": ref["num_labels"],
                 "our_net_size": best["net_size"], "reference_net_size": ref["net_size"],
                 "our_best_backend": best["backend"],
                 "fps_ratio_best_vs_reference": round(best["model_latency"]["fps"] / ref["model_latency"]["fps"], 2)}
        torch_runs = [r for r in same if r["backend"] == "torch"]
        if torch_runs:
            entry["fps_ratio_torch_vs_reference"] = round(
                torch_runs[0]["model_latency"]["fps"] / ref["model_latency"]["fps"], 2)
        out.append(entry)
    return out


def batch_ratios(ours: list[dict], refs: list[dict]) -> list[dict]:
    """Our batched frames/s over each reference's, same size, K and batch, same run."""
    out = []
    for ref in refs:
        theirs = ref.get("batch_throughput") or {}
        if "frames_per_s" not in theirs:
            continue
        for mine in ours:
            if (mine.get("num_labels") == ref["num_labels"] and mine.get("batch") == theirs["batch"]
                    and tuple(mine["size"]) == net_size_for(ref["size"])):
                out.append({"reference": ref["model"], "size": ref["size"], "batch": mine["batch"],
                            "num_labels": ref["num_labels"], "our_frames_per_s": mine["frames_per_s"],
                            "reference_frames_per_s": theirs["frames_per_s"],
                            "our_net_size": mine["size"], "reference_net_size": ref["net_size"],
                            "ratio": round(mine["frames_per_s"] / theirs["frames_per_s"], 2)})
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lgseg bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="model config (default lite-minilm; test-tiny with --smoke)")
    p.add_argument("--checkpoint", default=None, help="trained checkpoint (speed does not depend on it)")
    p.add_argument("--sizes", nargs="+", type=parse_size, default=None, metavar="HxW",
                   help="frame sizes (default 360x480)")
    p.add_argument("--num-labels", nargs="+", type=int, default=None, metavar="K", help="default 11")
    p.add_argument("--backends", default=None,
                   help="comma-separated: torch,onnxruntime,tensorrt,auto or all (default: those usable here)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to run (default auto: CUDA if available)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "int8"),
                   help="default auto: fp16 on CUDA and TensorRT, the ONNX Runtime default on the CPU")
    p.add_argument("--compare-int8", action="store_true",
                   help="also time fp32 against int8 ONNX Runtime on the CPU in one run (ratio, "
                        "argmax agreement on CamVid val frames)")
    p.add_argument("--text-runtime", default="onnxruntime", choices=("onnxruntime", "torch"),
                   help="where MiniLM runs for the label path (default onnxruntime, as the node)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations (default 50)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default 10)")
    p.add_argument("--ref-iters", type=int, default=None, help="reference model iterations (default 5)")
    p.add_argument("--references", nargs="*", default=None, metavar="NAME",
                   help=f"reference models to time beside ours (default, or no names: all of {', '.join(REFERENCES)})")
    p.add_argument("--no-references", action="store_true", help="skip the reference models")
    p.add_argument("--text-table", default=None, metavar="FILE",
                   help="label embeddings from a table (`python -m lgseg_ros.runtime.gpu_check "
                        "--write-text-table FILE`, made where the text encoder is) instead of "
                        "the encoder: for a borrowed GPU machine without the MiniLM weights; the "
                        "label-path timing is then skipped")
    p.add_argument("--no-flops", dest="flops", action="store_false", default=True,
                   help="skip counting GFLOPs of each model")
    p.add_argument("--label-k", type=int, default=10, help="labels for the label-path timing")
    p.add_argument("--ort-threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = its default)")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch intra-op threads for the torch backend, references and text encoder "
                        "(0 = torch's default)")
    p.add_argument("--ort-opt", default="all", choices=("disable", "basic", "extended", "layout", "all"),
                   help="ONNX Runtime graph optimisation level (default all)")
    p.add_argument("--batch", type=int, default=8, help="batch for the CUDA throughput run")
    p.add_argument("--smoke", action="store_true", help="tiny config, size and iterations (CI)")
    p.add_argument("-o", "--output", help="also write the JSON here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    smoke = args.smoke
    if args.config is None and args.checkpoint is None:
        args.config = "test-tiny" if smoke else "lite-minilm"
    args.sizes = args.sizes or ([(64, 96)] if smoke else [(360, 480)])
    args.num_labels = args.num_labels or ([3] if smoke else [11])
    args.iters = args.iters or (3 if smoke else 50)
    args.warmup = args.warmup if args.warmup is not None else (1 if smoke else 10)
    args.ref_iters = args.ref_iters or (1 if smoke else 5)
    args.ref_warmup = 0 if smoke else 1  # plus the size probe, which is a warm-up call too
    if any(k < 1 for k in args.num_labels) or args.iters < 1:
        print("lgseg bench: --num-labels and --iters must be >= 1", file=sys.stderr)
        return 2
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    from .backends import cuda_available, onnxruntime_available, resolve_auto, tensorrt_available

    if args.backends in (None, "all"):
        usable = ["torch"] + (["onnxruntime"] if onnxruntime_available() else [])
        if tensorrt_available() and args.device != "cpu":
            usable.append("tensorrt")
        args.backends = usable
    else:
        args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if args.no_references:
        args.references = []
    elif not args.references:  # absent, or given without names
        args.references = list(REFERENCES)
    unknown = sorted(set(args.references) - set(REFERENCES))
    if unknown:
        print(f"lgseg bench: unknown reference model(s) {unknown}; known: {list(REFERENCES)}",
              file=sys.stderr)
        return 2

    from lgseg_ros.text import CachedTextEncoder, build_text_encoder
    from lgseg_ros.model import get_config

    spec = get_config(args.config).text_encoder if args.config else "minilm"
    t = time.perf_counter()
    runtime = args.text_runtime if spec.startswith("minilm") else "torch"
    if args.text_table:
        from lgseg_ros.train.text_table import load_text_table_for_model

        encoder = CachedTextEncoder(
            load_text_table_for_model(args.text_table, args.checkpoint, args.config))
    else:
        encoder = CachedTextEncoder(build_text_encoder(spec, runtime=runtime))
    encoder_load_s = time.perf_counter() - t

    args.auto_backend = resolve_auto(args.device)
    result = {"environment": environment(), "config": args.config, "checkpoint": args.checkpoint,
              "auto_backend": args.auto_backend, "smoke": smoke,
              "settings": {"iters": args.iters, "warmup": args.warmup, "ref_iters": args.ref_iters,
                           "ort_threads": args.ort_threads or "default", "ort_opt": args.ort_opt,
                           "torch_threads": torch.get_num_threads()}}
    text_cache: dict[int, np.ndarray] = {}
    result["runs"], segmenters = bench_ours(args, encoder, text_cache)

    result["gflops"] = {}
    if args.flops:
        for (backend, size), seg in segmenters.items():
            for k in args.num_labels:
                name = f"lgseg:{seg.cfg.name} {size[0]}x{size[1]} K={k}"
                if name not in result["gflops"]:
                    text = torch.from_numpy(np.array(text_cache[k]))
                    result["gflops"][name] = gflops(seg.net, net_size_for(size), text)
    ref_dims: dict[str, int] = {}
    result["references"] = bench_references(args, ref_dims) if args.references else []
    result["ratios"] = ratios(result["runs"], result["references"])

    if cuda_available() and args.device != "cpu" and segmenters:
        net = next(iter(segmenters.values())).net
        result["batch_throughput"] = []
        for size in args.sizes:
            for k in args.num_labels:
                text = torch.from_numpy(np.array(text_cache[k]))
                result["batch_throughput"].append(
                    cuda_batch_throughput(net, net_size_for(size), text, batch=args.batch,
                                          iters=max(10, args.iters)))
        result["batch_ratios"] = batch_ratios(result["batch_throughput"], result["references"])
    else:
        result["batch_throughput"] = {"skipped": "no CUDA device: batch throughput is a GPU measurement"}

    if args.compare_int8:
        result["int8_vs_fp32"] = bench_int8(args)
    if args.text_table:
        result["label_path"] = {"skipped": f"label embeddings came from --text-table "
                                           f"{args.text_table}, not a text encoder"}
    else:
        result["label_path"] = bench_label_path(args, encoder, segmenters)
        result["label_path"]["encoder_load_s"] = round(encoder_load_s, 3)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
