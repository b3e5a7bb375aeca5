"""Issue 10, item 4: a replaced label set gives its memory back.

The frame path's memory grows with K (about 3 MB a label for the shipped model at 384x480
on ONNX Runtime), and ONNX Runtime's CPU arena kept its high-water mark for good: 1024
labels took the node from 1.2 to 4.3 GB, and switching back to 3 labels freed nothing.
Real model code (test-tiny), real MiniLM, real ONNX Runtime; RSS read from /proc.
"""
import json
import time

import numpy as np
import torch

from lgseg_ros.labels import MAX_LABELS
from lgseg_ros.runtime.segmenter import Segmenter

NET = (256, 320)   # large enough that K labels cost visibly more than allocator noise


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise KeyError("VmRSS")


def test_memory_returns_after_the_largest_label_set_is_replaced(tmp_path):
    torch.manual_seed(0)
    seg = Segmenter(config="test-tiny", backend="onnxruntime", net_size=NET,
                    engine_cache_dir=str(tmp_path))
    rgb = np.random.default_rng(0).integers(0, 256, (*NET, 3), np.uint8)
    small = seg.prepare_labels(["road", "car", "sky"])
    big = seg.prepare_labels([f"thing {i}" for i in range(MAX_LABELS)])
    seg.segment(rgb, small)
    seg.segment(rgb, small)
    base = rss_mb()
    rounds = []
    for _ in range(2):  # twice: a second big set must not stack on the first
        t0 = time.perf_counter()
        seg.segment(rgb, big)
        big_s = time.perf_counter() - t0
        with_big = rss_mb()
        seg.segment(rgb, small)
        seg.segment(rgb, small)
        rounds.append({"with_max_k_mb": round(with_big - base, 1), "after_replace_mb": round(rss_mb() - base, 1),
                       "max_k_frame_s": round(big_s, 2)})
    print(json.dumps({"label_memory": {"net": NET, "k": MAX_LABELS, "base_rss_mb": round(base, 1),
                                       "rounds": rounds}}))
    # The big set must have cost something, or this test proves nothing.
    assert rounds[0]["with_max_k_mb"] > 60, rounds
    for r in rounds:
        # The target is "within 300 MB of where it was"; here: most of it comes back.
        assert r["after_replace_mb"] < max(30.0, 0.25 * rounds[0]["with_max_k_mb"]), rounds
