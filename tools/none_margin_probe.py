"""How much of the single-label ratio a "none" margin would win back (a measurement, not a
node feature): for each class asked alone, a pixel goes to the class when its logit is
within MARGIN of the "none" logit, instead of only when it is above it.

Stage 22 (models/README.md) found that the GPU runs lose the single-label ratio by
under-claiming a class asked alone (false positives stay at or below D85's while recall
falls), so a margin for small label sets is the candidate remedy; this tool measures it on
a split chosen for development (CamVid *train*, which the models trained on, so it measures
the behaviour, not generalisation), never on the split the card reports. The full label
set is scored without a margin, as the node would (a margin for one name only).

    .venv/bin/python tools/none_margin_probe.py CKPT --margins 0 0.5 1 2 --every 2 \
        --out runs/stage22/margin_ha.json

Near misses (issue 18: things no source labels take at most 1 % of the pixels when asked
alone) are scored with the same margins, since a margin also lets them take more.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lgseg_ros.runtime.grounding import vocabulary_from_metadata  # noqa: E402
from lgseg_ros.train.agreement import _Answerer                  # noqa: E402
from lgseg_ros.train.augment import EvalResize                   # noqa: E402
from lgseg_ros.train.datasets import IGNORE, build_dataset       # noqa: E402
from lgseg_ros.train.metrics import ConfusionMatrix              # noqa: E402
from lgseg_ros.train.openvocab import NEAR_MISS, EmbeddingTable  # noqa: E402


def logits_at(net, images, text, hw):
    out = net(images, text)
    return F.interpolate(out.float(), size=tuple(hw), mode="bilinear", align_corners=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    p.add_argument("--split", default="train")
    p.add_argument("--every", type=int, default=2, help="score every Nth image")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    from lgseg_ros.train.training_input import refuse_evaluation_split
    try:   # val and the held-out test are reported, never tuned on
        refuse_evaluation_split(a.split, "--split")
    except SystemExit:
        raise SystemExit(f"--split {a.split}: an evaluation split (val, test, holdout, eval); "
                         "none_margin_probe measures on a development split") from None
    torch.set_num_threads(a.threads)
    # the network and the words as `lgseg agreement` sends them: anchored to the trained names
    model = _Answerer(a.checkpoint, label_anchor=None, aliases=True)
    net, encoder = model.net, model.encoder
    trained = {n for names in vocabulary_from_metadata(model.meta)[0].values() for n in names}
    near = [w for w in NEAR_MISS if w not in trained]
    ds = build_dataset("camvid", a.split)
    ds.transform = EvalResize(None)
    names = list(ds.class_names)
    n = len(names)
    table = EmbeddingTable(encoder, names + near)
    full_text = table(names)
    single = [table([c]) for c in names]
    near_text = {w: table([w]) for w in near}
    margins = sorted(set(a.margins))
    cm = ConfusionMatrix(n)
    tp, fp, fn = (np.zeros((len(margins), n), np.int64) for _ in range(3))
    near_taken = np.zeros((len(margins), len(near)), np.int64)
    labelled = 0
    idx = range(0, len(ds), max(a.every, 1))
    with torch.inference_mode():
        for k, i in enumerate(idx):
            image, target = ds[i]
            images, target = image[None], torch.as_tensor(target)[None]
            hw = target.shape[-2:]
            cm.update(logits_at(net, images, full_text, hw).argmax(1), target)
            valid = target != IGNORE
            labelled += int(valid.sum())
            for c, text in enumerate(single):
                lg = logits_at(net, images, text, hw)
                diff = lg[:, 0] - lg[:, 1]
                t = (target == c) & valid
                for m, margin in enumerate(margins):
                    pr = (diff >= -margin) & valid
                    tp[m, c] += int((pr & t).sum())
                    fp[m, c] += int((pr & ~t).sum())
                    fn[m, c] += int((~pr & t).sum())
            for j, w in enumerate(near):
                lg = logits_at(net, images, near_text[w], hw)
                diff = lg[:, 0] - lg[:, 1]
                for m, margin in enumerate(margins):
                    near_taken[m, j] += int(((diff >= -margin) & valid).sum())
            print(f"{k + 1}/{len(idx)}", file=sys.stderr, flush=True)
    full = cm.summary(names)["per_class_iou"]
    rows = []
    for m, margin in enumerate(margins):
        iou = {c: tp[m, j] / max(tp[m, j] + fp[m, j] + fn[m, j], 1) for j, c in enumerate(names)}
        both = [c for c in names if full[c] is not None]
        ratio = float(np.mean([iou[c] for c in both]) / np.mean([full[c] for c in both]))
        share = {w: round(100 * near_taken[m, j] / max(labelled, 1), 3) for j, w in enumerate(near)}
        rows.append({"margin": margin, "ratio_to_full": round(ratio, 4),
                     "alone_iou": {c: round(100 * v, 1) for c, v in iou.items()},
                     "near_miss_max_share_pct": max(share.values()) if share else None,
                     "near_miss_share_pct": share})
    res = {"checkpoint": a.checkpoint, "split": a.split, "every": a.every,
           "images": len(idx), "full_miou": round(100 * float(np.mean(
               [v for v in full.values() if v is not None])), 2), "margins": rows}
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps({"full_miou": res["full_miou"], **{f"m{r['margin']}": [
        r["ratio_to_full"], r["near_miss_max_share_pct"]] for r in rows}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
