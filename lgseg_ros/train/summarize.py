"""Markdown tables for model cards / ablations.

    python -m lgseg_ros.train.summarize runs/cpu_fusion runs/cpu_lseg runs/cpu_denseclip
    python -m lgseg_ros.train.summarize --evals runs/eval_a0 runs/eval_a0.5   # lgseg eval outputs

The first form reads training runs (args, log, ``eval_val``); ``--evals`` reads
``lgseg eval --out`` folders and compares what changes between them at a glance: label
anchor, mIoU, each renamed list's mIoU and its ratio to the mIoU, and the near-miss words'
largest share of labelled pixels.
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


def eval_table(dirs: list[Path]) -> str:
    ms = [(d, json.loads((d / "metrics.json").read_text())) for d in dirs]
    renames = list(dict.fromkeys(k for _, m in ms for k in m.get("renamed", {})))
    groups = list(dict.fromkeys(g for _, m in ms for g in m.get("probes", {})))
    head = ["eval", "label anchor", "mIoU"]
    head += [f"{k} names mIoU (ratio)" for k in renames]
    head += [f"{g}: largest share alone / added" for g in groups]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d, m in ms:
        full = m["full"]["miou"]
        cells = [d.name, str(m.get("label_anchor", 0.0)), _pct(full)]
        for k in renames:
            v = m.get("renamed", {}).get(k, {}).get("miou")
            cells.append("n/a" if v is None else f"{100 * v:.1f} ({v / full:.2f})")
        for g in groups:
            words = m.get("probes", {}).get(g, {})
            if not words:
                cells.append("n/a")
                continue
            a = max(words, key=lambda w: words[w]["alone_share"])
            b = max(words, key=lambda w: words[w]["added_share"])
            cells.append(f"{100 * words[a]['alone_share']:.1f}% ({a}) / "
                         f"{100 * words[b]['added_share']:.1f}% ({b})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    if argv[0] == "--evals":
        print(eval_table([Path(a) for a in argv[1:]]))
        return 0
    print(table([Path(a) for a in argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
