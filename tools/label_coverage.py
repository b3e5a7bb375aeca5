"""How much of a folder dataset each class covers: its share of all pixels and the number of
frames it appears in, per split, as JSON. Written for the pseudo-label folders, to tell a
concept the model fails to learn from one its labels barely contain.

    .venv/bin/python tools/label_coverage.py runs/pl/camvid_fine --split train
    .venv/bin/python tools/label_coverage.py runs/pl/camvid_val_eval --split train

Classes with no pixel are listed with zeros, so that a concept missing from the labels shows.
"""
import argparse
import json

import numpy as np

from lgseg_ros.train.datasets import IGNORE, load_folder, read_label


def coverage(root: str, split: str) -> dict:
    ds = load_folder(root, split)
    pixels = np.zeros(256, np.int64)
    frames = np.zeros(256, np.int64)
    total = 0
    for _, label_path in ds.pairs:
        counts = np.bincount(read_label(label_path).ravel(), minlength=256)
        pixels += counts
        frames += counts > 0
        total += int(counts.sum())
    per_class = {name: {"pixel_share_pct": round(100.0 * pixels[i] / max(total, 1), 4),
                        "frames": int(frames[i])} for i, name in enumerate(ds.class_names)}
    return {"data": root, "split": split, "frames": len(ds.pairs),
            "ignore_share_pct": round(100.0 * pixels[IGNORE] / max(total, 1), 4),
            "classes": per_class}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="a folder dataset (images/, labels/, classes.txt)")
    p.add_argument("--split", default="train")
    args = p.parse_args()
    print(json.dumps(coverage(args.data, args.split), indent=1))


if __name__ == "__main__":
    main()
