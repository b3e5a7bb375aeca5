"""Markdown table of training runs from their eval outputs (for model cards / ablations).

    python -m lgseg_ros.train.summarize runs/cpu_fusion runs/cpu_lseg runs/cpu_denseclip
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _pct(v):
    return "n/a" if v is None else f"{100 * v:.1f}"


def row(run: Path, split: str = "val") -> dict:
    m = json.loads((run / f"eval_{split}" / "metrics.json").read_text())
    args = json.loads((run / "args.json").read_text())
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines() if x.strip()]
    r = {"run": run.name, "config": args["model_config"]["name"], "head": args["model_config"]["head"],
         "iters": log[-1]["step"] if log else 0,
         "train_min": log[-1]["elapsed_s"] / 60 if log else float("nan"),
         "miou": m["full"]["miou"], "pixel_acc": m["full"]["pixel_acc"],
         "per_class": m["full"]["per_class_iou"]}
    if "subset_queries" in m:
        r["subset_iou"] = m["subset_queries"]["mean_iou"]
        r["subset_ratio"] = m["subset_queries"]["ratio_to_full"]
    for k, v in m.get("renamed", {}).items():
        r[f"renamed:{k}"] = v["miou"]
    return r


def table(runs: list[Path]) -> str:
    rows = [row(r) for r in runs]
    renames = sorted({k for r in rows for k in r if k.startswith("renamed:")})
    head = ["run", "head", "iters", "train min", "mIoU", "pixel acc", "subset IoU", "subset/full"]
    head += [f"mIoU {k.split(':', 1)[1]} names" for k in renames]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["run"], r["head"], str(r["iters"]), f"{r['train_min']:.1f}", _pct(r["miou"]),
                 _pct(r["pixel_acc"]), _pct(r.get("subset_iou")),
                 f"{r['subset_ratio']:.3f}" if "subset_ratio" in r else "n/a"]
        cells += [_pct(r.get(k)) for k in renames]
        lines.append("| " + " | ".join(cells) + " |")
    classes = list(rows[0]["per_class"]) if rows else []
    lines += ["", "| run | " + " | ".join(classes) + " |", "|" + "---|" * (len(classes) + 1)]
    for r in rows:
        lines.append(f"| {r['run']} | " + " | ".join(_pct(r["per_class"].get(c)) for c in classes) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    print(table([Path(a) for a in argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
