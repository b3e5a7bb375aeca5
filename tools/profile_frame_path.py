"""Where the frame path's time goes, fp32 against int8: ONNX Runtime's own profiler over the
verified artefacts of a checkpoint (models/artefacts or the user cache), one CamVid train
frame, kernel milliseconds per frame by operator type, and the convolutions split into
depthwise (group > 1) and dense ones, as JSON.

    .venv/bin/python tools/profile_frame_path.py [--checkpoint C] [--size H W] [--frames N]

Profiling adds overhead of its own: compare the two precisions within one run, not with
`lgseg bench` figures.
"""
from __future__ import annotations

import argparse
import collections
import json
import tempfile

import numpy as np


def main() -> None:
    import cv2
    import onnx
    import onnxruntime as ort

    from lgseg_ros.runtime import preprocess as pp
    from lgseg_ros.runtime.artefacts import model_source
    from lgseg_ros.runtime.quantize import calibration_files, calibration_text
    from lgseg_ros.runtime.segmenter import default_checkpoint_path

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--size", nargs=2, type=int, default=(384, 480), metavar=("H", "W"))
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    source, _ = model_source(args.checkpoint or default_checkpoint_path())
    size = tuple(args.size)
    rgb = cv2.cvtColor(cv2.imread(str(calibration_files(None, 1)[0])), cv2.COLOR_BGR2RGB)
    feed = {"image": pp.preprocess(rgb, pp.plan(rgb.shape[:2], size, True)).copy(),
            "text": calibration_text(source)[1][:11]}
    out = {"checkpoint": source.checkpoint, "size": list(size), "labels": len(feed["text"]),
           "frames": args.frames}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "int8"):
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            so.enable_profiling = True
            so.profile_file_prefix = f"{tmp}/{precision}"
            # the optimised graph, to read each (fused) convolution's group from
            so.optimized_model_filepath = f"{tmp}/{precision}_optimised.onnx"
            session = ort.InferenceSession(str(source.onnx(size, precision)), so,
                                           providers=["CPUExecutionProvider"])
            groups = {n.name: next((a.i for a in n.attribute if a.name == "group"), 1)
                      for n in onnx.load(so.optimized_model_filepath).graph.node}
            by_op, by_conv = collections.Counter(), collections.Counter()
            for _ in range(args.frames):
                session.run(None, feed)
            with open(session.end_profiling()) as f:
                for e in json.load(f):
                    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                        op = e["args"]["op_name"]
                        by_op[op] += e["dur"]
                        if op in ("Conv", "QLinearConv"):
                            node = e["name"][:-len("_kernel_time")]
                            by_conv["depthwise" if groups.get(node, 1) > 1 else "dense"] += e["dur"]
            ms = {k: round(v / args.frames / 1000, 2) for k, v in by_op.most_common()}
            conv = sum(v for k, v in ms.items() if k in ("Conv", "QLinearConv"))
            out[precision] = {"kernel_ms": round(sum(ms.values()), 2), "conv_ms": round(conv, 2),
                              "conv_split_ms": {k: round(v / args.frames / 1000, 2)
                                                for k, v in sorted(by_conv.items())},
                              "other_ms": round(sum(ms.values()) - conv, 2), "by_op": ms}
    out["conv_speedup"] = round(out["fp32"]["conv_ms"] / out["int8"]["conv_ms"], 2)
    out["kernel_speedup"] = round(out["fp32"]["kernel_ms"] / out["int8"]["kernel_ms"], 2)
    out["conv_split_speedup"] = {k: round(v / out["int8"]["conv_split_ms"][k], 2)
                                 for k, v in out["fp32"]["conv_split_ms"].items()
                                 if out["int8"]["conv_split_ms"].get(k)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
