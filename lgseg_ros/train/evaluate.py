r"""`lgseg eval`: evaluate a checkpoint on a split (CamVid val by default).

    lgseg eval --checkpoint models/lgseg_lite_minilm.safetensors --data camvid --split val \
        --out runs/eval_shipped [--size 360 480] [--rename heldout] [--rename car=automobile]

Reports (``metrics.json`` in --out, also printed):
- ``full``: mIoU, per-class IoU, pixel accuracy, mean accuracy with every class name given
  at once (single scale, at --size, scored at the label's resolution);
- ``subset_queries``: for each class c the model gets the label set [c] alone; a pixel
  counts as c when the model answers c, anything else ("none") elsewhere is correct. IoU
  per class, their mean, and the ratio to the full-label-set IoU of the same classes;
- ``renamed``: per rename mapping (a preset, "heldout" = names never used in training,
  "dev" = a second unseen list, the one label_anchor was chosen on, "synonyms" = names
  label-name augmentation used, or ``old=new,...``), the mIoU with
  those names given instead;
- ``probes``: words for things the classes do not cover (``near_miss``: street things
  CamVid does not label, never trained on; ``unlabeled_words``: the words users tried
  that returned nothing). For each word: the share of labelled pixels it takes when asked
  alone (``alone_share``) and which classes those pixels are, and the share it takes when
  added to the full label set (``added_share``), on every ``--probe-every``-th batch. A
  model that keys on meaning gives a near miss almost nothing;
- ``label_anchor``: every label is encoded as the node encodes it, anchored towards its
  nearest trained name with this weight (``--label-anchor``, the node's default; 0 scores
  the words as they are: runtime/grounding.py);
- ``grounding``: the grounding report (runtime/grounding.py) for every held-out name and
  probe word: what the node would tell a user who asked for it.
Figures: ``confusion.png`` (row-normalised) and ``predictions.png`` (image / GT / prediction).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lgseg_ros.runtime.grounding import (DEFAULT_ANCHOR, AnchoredEncoder, GroundingReporter,
                                         vocabulary_from_metadata)

from .augment import EvalResize
from .datasets import build_dataset
from .metrics import BinaryIoU, ConfusionMatrix
from .openvocab import EmbeddingTable, parse_rename


def parse_args(argv):
    p = argparse.ArgumentParser(prog="lgseg eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default="camvid")
    p.add_argument("--split", default="val")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="network input size (default: the images' own size)")
    p.add_argument("--rename", action="append",
                   help="'heldout', 'dev', 'synonyms' or old=new,... (repeatable; default on "
                        "CamVid: all three presets)")
    p.add_argument("--no-subset", action="store_true", help="skip the subset-query metric")
    p.add_argument("--single-label-margin", type=float, default=0.0, metavar="M",
                   help="score one-name queries (each class alone, probe words alone) with "
                        "the node's single_label_margin M (default 0: plain argmax)")
    p.add_argument("--probe", action="append", metavar="GROUP=WORD,WORD",
                   help="probe words (repeatable); default on CamVid: the vocabulary's near "
                        "misses and 'unlabeled_words=floor,ground,grass,wall,door'")
    p.add_argument("--no-probes", action="store_true", help="skip the probe words")
    p.add_argument("--probe-every", type=int, default=4, metavar="N",
                   help="score probe words on every N-th batch (two passes per word per image)")
    p.add_argument("--label-anchor", type=float, default=DEFAULT_ANCHOR, metavar="W",
                   help="move each label's embedding this share of the way towards its "
                        "nearest trained name when it is well grounded, as the node does "
                        "(its label_anchor parameter); 0: the words as they are")
    p.add_argument("--no-aliases", action="store_true",
                   help="read words by the embedding search alone, without the WordNet alias "
                        "table the node uses (runtime/aliases.py): to measure what it adds")
    p.add_argument("--anchor-floor", type=float, default=None, metavar="S",
                   help="words whose nearest trained name scores below S are not anchored "
                        "(default: the node's, runtime/grounding.py)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="torch", choices=("torch", "fp32", "int8"),
                   help="torch: the eager network; fp32 / int8: the ONNX Runtime frame path the "
                        "node runs on the CPU (int8: calibrated on CamVid train frames)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--limit-images", type=int, help="only the first N images")
    p.add_argument("--grid", type=int, default=4, help="rows in predictions.png")
    p.add_argument("--out", default="runs/eval")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


@torch.no_grad()
def predict(net, images, text, out_hw, single_label_margin: float = 0.0):
    """Label ids at the label's resolution: logits upsampled bilinearly, then argmax. With
    one name and a margin, the name wins within that margin of "none", as the node's
    ``single_label_margin`` (runtime/segmenter.py)."""
    logits = net(images, text)
    if logits.shape[-2:] != tuple(out_hw):
        logits = F.interpolate(logits.float(), size=tuple(out_hw), mode="bilinear",
                               align_corners=False)
    return with_single_label_margin(logits, single_label_margin).argmax(1)


def with_single_label_margin(logits, margin: float):
    """[B, K+1, H, W] logits with "none" lowered by ``margin`` where K = 1 (one name asked),
    so that argmax gives the name where "none" leads by at most the margin, as the node's
    ``single_label_margin`` does; unchanged otherwise."""
    if margin > 0.0 and logits.shape[1] == 2:
        logits = logits.float().clone()
        logits[:, 1] -= margin
    return logits


UNLABELED_WORDS = ["floor", "ground", "grass", "wall", "door"]


def evaluate(net, encoder, dataset, device, batch_size=4, renames=None, subset=True,
             grid=4, workers=1, progress=True, probes=None, probe_every=1,
             single_label_margin=0.0):
    """Run every metric over ``dataset`` (which yields label-resolution targets)."""
    from torch.utils.data import DataLoader

    names = list(dataset.class_names)
    n = len(names)
    renames = renames or {}
    probes = probes or {}
    probe_words = list(dict.fromkeys(w for ws in probes.values() for w in ws))
    all_names = names + [v for m in renames.values() for v in m.values()] + probe_words
    table = EmbeddingTable(encoder, all_names)
    probe_alone = {w: table([w]).to(device) for w in probe_words}
    probe_added = {w: table(names + [w]).to(device) for w in probe_words}
    alone_hits = {w: np.zeros(n, np.int64) for w in probe_words}   # GT class of pixels taken
    added_taken = {w: 0 for w in probe_words}
    labelled = 0
    full_text = table(names).to(device)
    rename_text = {k: table([m.get(c, c) for c in names]).to(device) for k, m in renames.items()}
    single_text = [table([c]).to(device) for c in names]

    cm = ConfusionMatrix(n)
    cm_renamed = {k: ConfusionMatrix(n) for k in renames}
    binary = [BinaryIoU() for _ in names]
    samples = []
    # spread over the split: consecutive video frames would all look alike
    grid_idx = set(np.linspace(0, len(dataset) - 1, min(grid, len(dataset))).round().astype(int)
                   .tolist()) if grid > 0 else set()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    it = loader
    if progress:
        from tqdm import tqdm
        it = tqdm(loader, desc="eval", file=sys.stderr, dynamic_ncols=True)
    t0, t_full, n_img = time.perf_counter(), 0.0, 0
    for batch_no, (images, target) in enumerate(it):
        images = images.to(device)
        hw = target.shape[-2:]
        ts = time.perf_counter()
        pred = predict(net, images, full_text, hw).cpu()
        t_full += time.perf_counter() - ts
        n_img += images.shape[0]
        cm.update(pred, target)
        for i in range(images.shape[0]):
            if n_img - images.shape[0] + i in grid_idx:
                samples.append((dataset.load(n_img - images.shape[0] + i)[0],
                                target[i].numpy(), pred[i].numpy()))
        for k, text in rename_text.items():
            cm_renamed[k].update(predict(net, images, text, hw).cpu(), target)
        if subset:
            for c, text in enumerate(single_text):
                binary[c].update(predict(net, images, text, hw, single_label_margin).cpu() == 0,
                                 target, c)
        if batch_no % max(probe_every, 1):
            continue
        valid = target < n
        labelled += int(valid.sum())
        for w in probe_words:
            taken = (predict(net, images, probe_alone[w], hw, single_label_margin).cpu() == 0) & valid
            alone_hits[w] += np.bincount(target[taken].numpy().ravel(), minlength=n)[:n]
            added_taken[w] += int(((predict(net, images, probe_added[w], hw).cpu() == n) & valid).sum())

    full = cm.summary(names)
    result = {"num_images": n_img, "num_classes": n, "classes": names, "full": full,
              "timing": {"total_s": time.perf_counter() - t0,
                         "full_forward_ms_per_image": 1000 * t_full / max(n_img, 1)}}
    if subset:
        sub_iou = {c: _f(b.iou()) for c, b in zip(names, binary)}
        # compare on classes that have a defined IoU in both settings
        both = [c for c in names if sub_iou[c] is not None and full["per_class_iou"][c] is not None]
        mean_sub = float(np.mean([sub_iou[c] for c in both])) if both else float("nan")
        mean_full = float(np.mean([full["per_class_iou"][c] for c in both])) if both else float("nan")
        result["subset_queries"] = {
            "per_class_iou": sub_iou,
            "mean_iou": mean_sub,
            "full_mean_iou_same_classes": mean_full,
            "ratio_to_full": mean_sub / mean_full if mean_full > 0 else float("nan"),
            "per_class_ratio": {c: (sub_iou[c] / full["per_class_iou"][c]
                                    if full["per_class_iou"][c] else None) for c in both},
            "per_class_fp_rate": {c: (b.fp / (b.fp + b.tn) if (b.fp + b.tn) else None)
                                  for c, b in zip(names, binary)},
        }
    if probes:
        result["probes_scored"] = {"labelled_pixels": labelled, "every_nth_batch": probe_every}
        result["probes"] = {}
        for group, ws in probes.items():
            result["probes"][group] = {}
            for w in ws:
                hits = alone_hits[w]
                top = np.argsort(-hits)[:3]
                result["probes"][group][w] = {
                    "alone_share": float(hits.sum() / max(labelled, 1)),
                    "alone_top_classes": {names[i]: float(hits[i] / max(hits.sum(), 1))
                                          for i in top if hits[i] > 0},
                    "added_share": float(added_taken[w] / max(labelled, 1)),
                }
    if renames:
        result["renamed"] = {}
        for k, m in renames.items():
            s = cm_renamed[k].summary(names)
            result["renamed"][k] = {"mapping": {c: m[c] for c in names if c in m},
                                    "miou": s["miou"], "pixel_acc": s["pixel_acc"],
                                    "per_class_iou": s["per_class_iou"]}
    return result, cm, samples


def _f(v):
    return None if not np.isfinite(v) else float(v)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.single_label_margin and args.precision != "torch":
        # the ONNX path returns a one-hot of its ids, not logits: no margin can be applied
        raise SystemExit(f"--single-label-margin needs --precision torch (the logits); "
                         f"--precision {args.precision} scores the graph's ids")
    if not 0.0 <= args.single_label_margin <= 4.0:
        raise SystemExit(f"--single-label-margin must be in [0, 4] (the node's range), got "
                         f"{args.single_label_margin}")
    from lgseg_ros.model import load_checkpoint
    from lgseg_ros.text import build_text_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net, cfg = load_checkpoint(args.checkpoint)
    net.to(device).eval()
    if args.precision != "torch":   # the vocabulary below still comes from the checkpoint
        from lgseg_ros.runtime.onnx_eval import OnnxFramePathNet

        meta = net.checkpoint_metadata
        net, device = OnnxFramePathNet(args.checkpoint, args.precision), torch.device("cpu")
        net.checkpoint_metadata = meta
    encoder = build_text_encoder(cfg.text_encoder, template=cfg.prompt_template, cached=True)
    if not 0.0 <= args.label_anchor <= 1.0:
        raise SystemExit(f"--label-anchor must be in [0, 1], got {args.label_anchor}")
    vocab, distractors = vocabulary_from_metadata(getattr(net, "checkpoint_metadata", {}) or {})
    reporter = GroundingReporter(vocab, encoder, distractors, aliases=not args.no_aliases,
                                 **({} if args.anchor_floor is None
                                    else {"anchor_floor": args.anchor_floor}))
    label_encoder = AnchoredEncoder(encoder, reporter, args.label_anchor)

    ds = build_dataset(args.data, args.split)
    if args.limit_images:
        ds = ds.subset(args.limit_images)
    ds.transform = EvalResize(tuple(args.size) if args.size else None)
    specs = args.rename
    if specs is None:
        specs = ["heldout", "dev", "synonyms"] if args.data == "camvid" else []
    renames = {}
    for spec in specs:
        mapping = parse_rename(spec)
        unknown = set(mapping) - set(ds.class_names)
        if unknown:
            raise SystemExit(f"--rename {spec!r}: {sorted(unknown)} are not classes of "
                             f"{args.data} ({list(ds.class_names)})")
        renames[spec] = mapping

    probes = {}
    if not args.no_probes:
        specs = args.probe
        if specs is None and args.data == "camvid":
            from .openvocab import NEAR_MISS
            # a near miss is a thing no source labels: words a checkpoint was trained on
            # (indoor sources label benches and trash cans) are not near misses for it
            trained = {n for names in vocab.values() for n in names}
            near = [w for w in NEAR_MISS if w not in trained]
            specs = [f"near_miss={','.join(near)}",
                     f"unlabeled_words={','.join(UNLABELED_WORDS)}"]
        for spec in specs or []:
            group, sep, words = spec.partition("=")
            ws = [w.strip() for w in words.split(",") if w.strip()]
            if not sep or not group.strip() or not ws:
                raise SystemExit(f"--probe {spec!r}: expected GROUP=WORD,WORD")
            probes[group.strip()] = ws

    result, cm, samples = evaluate(net, label_encoder, ds, device, args.batch_size, renames,
                                   subset=not args.no_subset, grid=args.grid,
                                   workers=args.workers, progress=not args.no_progress,
                                   probes=probes, probe_every=args.probe_every,
                                   single_label_margin=args.single_label_margin)
    result["grounding"] = grounding_table(reporter, encoder, renames, probes)
    result = {"checkpoint": str(args.checkpoint), "data": args.data, "split": args.split,
              "label_anchor": args.label_anchor, "anchor_floor": reporter.anchor_floor,
              "single_label_margin": args.single_label_margin,
              "precision": args.precision,
              "size": list(args.size) if args.size else "native", "device": str(device),
              "torch_threads": torch.get_num_threads(), **result}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    from .plots import plot_confusion, plot_predictions
    plot_confusion(cm, list(ds.class_names), out / "confusion.png")
    plot_predictions(samples, list(ds.class_names), out / "predictions.png")
    print(format_summary(result))
    print(f"wrote {out / 'metrics.json'}, {out / 'confusion.png'}, {out / 'predictions.png'}")
    return 0


def grounding_table(rep, encoder, renames, probes) -> dict:
    """What the node's grounding report says about each renamed label and probe word."""
    groups = {f"renamed:{k}": list(m.values()) for k, m in renames.items()}
    groups.update({f"probe:{k}": ws for k, ws in probes.items()})
    out = {}
    for group, words in groups.items():
        if not words:
            continue
        grounding = rep.report(words, encoder.encode(words).numpy())
        out[group] = {g.label: {"nearest": g.nearest_name, "class": g.nearest_class,
                                "score": _f(g.score), "well_grounded": g.well_grounded,
                                "alias": g.alias}
                      for g in grounding}
    return out


def format_summary(r) -> str:
    f = r["full"]
    lines = [f"{r['data']}/{r['split']} ({r['num_images']} images, size {r['size']}, "
             f"label anchor {r.get('label_anchor', 0)}): "
             f"mIoU {100 * f['miou']:.2f}  pixel acc {100 * f['pixel_acc']:.2f}  "
             f"mean acc {100 * f['mean_acc']:.2f}"]
    lines.append("  per class: " + ", ".join(
        f"{c} {100 * v:.1f}" if v is not None else f"{c} n/a" for c, v in f["per_class_iou"].items()))
    if "subset_queries" in r:
        s = r["subset_queries"]
        lines.append(f"  subset queries: mean IoU {100 * s['mean_iou']:.2f} vs full "
                     f"{100 * s['full_mean_iou_same_classes']:.2f} (ratio {s['ratio_to_full']:.3f})")
    for k, v in r.get("renamed", {}).items():
        lines.append(f"  renamed ({k}): mIoU {100 * v['miou']:.2f}")
    for group, words in r.get("probes", {}).items():
        lines.append(f"  probes ({group}), share of labelled pixels taken alone / added to "
                     "the full set: " + ", ".join(
                         f"{w} {100 * v['alone_share']:.1f}/{100 * v['added_share']:.1f}%"
                         for w, v in words.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
