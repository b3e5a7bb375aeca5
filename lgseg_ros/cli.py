"""`lgseg <command> ...`: one entry point for the project's tools.

Each command lives in its own module with a ``main(argv) -> int``; importing lazily keeps
`lgseg --help` fast and lets a robot without training dependencies still run the node.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("lgseg_ros.train.train", "train a model (CamVid or a folder dataset)"),
    "eval": ("lgseg_ros.train.evaluate", "evaluate a checkpoint: mIoU, subset and renamed-label queries"),
    "pseudo-label": ("lgseg_ros.train.pseudo_label", "label a folder of images with a closed-set teacher (a folder dataset for train)"),
    "pack-data": ("lgseg_ros.train.pack", "pack training sources into checksummed chunks (for a GPU machine; train --source pack:DIR)"),
    "agreement": ("lgseg_ros.train.agreement", "agreement with teacher labels on held-out images, words together and alone (JSON)"),
    "average": ("lgseg_ros.train.average", "average the weights of checkpoints of one model (a model soup)"),
    "flops": ("lgseg_ros.model.flops", "parameters and GFLOPs of model variants"),
    "export": ("lgseg_ros.runtime.export", "export the frame path to ONNX"),
    "artefacts": ("lgseg_ros.runtime.artefacts", "build the ONNX files a torch-free node runs from"),
    "bench": ("lgseg_ros.runtime.bench", "benchmark backends and reference models (JSON)"),
    "bench-node": ("lgseg_ros.ros.bench_node", "benchmark the ROS node end to end (JSON)"),
    "node": ("lgseg_ros.ros.node_main", "run the ROS 2 node (same as `ros2 run lgseg_ros lgseg_node`)"),
    "demo": ("lgseg_ros.demo", "run the node on shipped frames, change labels mid-stream, write outputs"),
    # The ros2 CLI is not on PyPI: these stand in for its calls to the node.
    "labels": ("lgseg_ros.ros.tools:labels_main", "set or get the running node's label set"),
    "label-info": ("lgseg_ros.ros.tools:label_info_main", "print the node's ~/label_info (id -> label)"),
    "status": ("lgseg_ros.ros.tools:status_main", "print the node's ~/status (counters, rate, latency)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: lgseg <command> [options]\n\ncommands:")
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:<11} {help_text}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"lgseg: unknown command {name!r}; see `lgseg --help`", file=sys.stderr)
        return 2
    module_name, _, function = COMMANDS[name][0].partition(":")
    module = importlib.import_module(module_name)
    return int(getattr(module, function or "main")(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
