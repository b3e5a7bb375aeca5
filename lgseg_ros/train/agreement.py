r"""`lgseg agreement`: how well a checkpoint agrees with teacher labels on held-out images,
for words asked together and alone (JSON; the model card's indoor and fine-street tables).

    lgseg agreement --checkpoint models/lgseg_lite_minilm.safetensors \
        --data runs/pl/indoor --split holdout \
        --words wall,floor,ceiling,bed,window,cabinet,door,table,chair,sink,toilet,mirror \
        --regions door --out runs/agreement_indoor.json

The folder dataset (``lgseg pseudo-label``'s output) gives each pixel a concept chain or
ignore. Every word in --words is asked together (and, with --alone, each alone), encoded
and anchored as the node does. A labelled pixel whose chain holds none of the words is
"other": predicting a word there is a false positive for it. IoU per word, their mean.

``--regions WORD``: the teacher's connected regions of WORD (at least --min-region of the
image) stand in for the boxes of a detection benchmark: a region counts as found when the
model marks at least --found-share of it as WORD; with the pixel precision of WORD.
``--context WORDS`` are asked with --words but not scored (e.g. the 11 CamVid names when
the fine words are "added to" them).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from . import concepts as C
from .datasets import IGNORE, build_dataset
from .metrics import ConfusionMatrix


def parse_args(argv):
    p = argparse.ArgumentParser(prog="lgseg agreement", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint, or 'default': the two shipped models routed per query "
                        "(each set, and each word asked alone) as the node's default does")
    p.add_argument("--data", required=True, help="a folder dataset (lgseg pseudo-label)")
    p.add_argument("--split", default="holdout")
    p.add_argument("--words", required=True, help="comma-separated concepts to score")
    p.add_argument("--context", default="", help="comma-separated words asked but not scored")
    p.add_argument("--alone", action="store_true", help="also ask each word alone")
    p.add_argument("--ask-as", default="", metavar="CONCEPT=WORD,...",
                   help="ask these concepts by other words (unseen names), scored as the concept")
    p.add_argument("--regions", action="append", default=[], help="region recall for WORD")
    p.add_argument("--min-region", type=float, default=0.01)
    p.add_argument("--found-share", type=float, default=0.25)
    p.add_argument("--no-aliases", action="store_true",
                   help="without the WordNet alias table the node uses (runtime/aliases.py)")
    p.add_argument("--label-anchor", type=float, default=None,
                   help="anchoring weight (default: the node's)")
    p.add_argument("--long-side", type=int, default=480)
    p.add_argument("--single-label-margin", type=float, default=0.0, metavar="M",
                   help="score every one-name query (each word --alone, or --words with one "
                        "word and no --context) with the node's single_label_margin M")
    p.add_argument("--limit-images", type=int)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out")
    p.add_argument("--sheet", metavar="PNG",
                   help="with --regions: a contact sheet of the first images holding the first "
                        "region word, one row each: image | the labels' WORD (green) | the "
                        "model's WORD (red), to see what each side calls WORD")
    p.add_argument("--sheet-rows", type=int, default=8)
    return p.parse_args(argv)


def _net_size(h, w, long_side):
    s = long_side / max(h, w)
    return max(32, round(h * s / 32) * 32), max(32, round(w * s / 32) * 32)


@torch.no_grad()
def _predict(net, rgb, text, long_side, single_label_margin=0.0):
    from .evaluate import with_single_label_margin

    h, w = rgb.shape[:2]
    nh, nw = _net_size(h, w, long_side)
    x = torch.from_numpy(cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA))
    x = x.permute(2, 0, 1)[None].float().div_(255)
    logits = F.interpolate(net(x, text), size=(h, w), mode="bilinear", align_corners=False)
    return with_single_label_margin(logits, single_label_margin).argmax(1)[0].numpy()


def target_lut(class_names, words) -> np.ndarray:
    """Stored class id -> index of the finest word in its chain, len(words) = other."""
    lut = np.full(256, IGNORE, np.int64)
    for i, name in enumerate(class_names):
        chain = C.chain(name)
        lut[i] = next((words.index(c) for c in reversed(chain) if c in words), len(words))
    return lut


def _targets(label, class_names, words):
    """Per pixel: index of the finest word in its chain, len(words) = other, IGNORE."""
    return target_lut(class_names, words)[label]


def _scores(n):
    """Words 0..n-1 plus "other" (n): a word predicted on an other pixel is its false
    positive, as ConfusionMatrix counts it; only the words' IoUs are reported."""
    return ConfusionMatrix(n + 1)


class _Answerer:
    """One checkpoint's network with the encoder the node would give it (anchored to its
    own trained vocabulary)."""

    def __init__(self, checkpoint: str, label_anchor: float | None, aliases: bool):
        from lgseg_ros.model import load_checkpoint
        from lgseg_ros.model.checkpoint import read_checkpoint_metadata
        from lgseg_ros.runtime.grounding import (DEFAULT_ANCHOR, AnchoredEncoder,
                                                 GroundingReporter, vocabulary_from_metadata)
        from lgseg_ros.text import build_text_encoder

        self.net, self.cfg = load_checkpoint(checkpoint)
        self.net.eval()
        self.meta = read_checkpoint_metadata(checkpoint)[1]
        vocab, distractors = vocabulary_from_metadata(self.meta)
        self.plain = build_text_encoder(self.cfg.text_encoder, template=self.cfg.prompt_template)
        self.anchor = DEFAULT_ANCHOR if label_anchor is None else label_anchor
        self.encoder = AnchoredEncoder(self.plain, GroundingReporter(
            vocab, self.plain, distractors, aliases=aliases), self.anchor)


class _Routed:
    """--checkpoint default: each query goes to the street or the rooms model as
    runtime/routing.py sends it in the node's default Segmenter."""

    def __init__(self, label_anchor: float | None, aliases: bool):
        from lgseg_ros.runtime.routing import ModelRouter, rooms_checkpoint_path
        from lgseg_ros.runtime.segmenter import default_checkpoint_path

        self.street = _Answerer(default_checkpoint_path(), label_anchor, aliases)
        self.rooms = _Answerer(rooms_checkpoint_path(), label_anchor, aliases)
        self.router = ModelRouter.from_metadata(self.street.meta, self.rooms.meta, self.street.plain)
        self.anchor = self.street.anchor
        self.routes: dict[str, str] = {}

    def query(self, names: list[str]):
        """(answerer, anchored embeddings) for one query."""
        emb = self.street.plain.encode(list(names))
        emb = emb.detach().cpu().numpy() if hasattr(emb, "detach") else np.asarray(emb)
        who = self.rooms if self.router.route(names, np.asarray(emb, np.float32)).rooms else self.street
        self.routes[", ".join(names)] = "rooms" if who is self.rooms else "street"
        return who, who.encoder.encode(list(names)).float()


def main(argv=None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    if not 0.0 <= a.single_label_margin <= 4.0:
        raise SystemExit(f"--single-label-margin must be in [0, 4] (the node's range), got "
                         f"{a.single_label_margin}")
    if a.threads:
        torch.set_num_threads(a.threads)
    words = [w.strip() for w in a.words.split(",") if w.strip()]
    context = [w.strip() for w in a.context.split(",") if w.strip()]
    ds = build_dataset(a.data, a.split)
    if a.limit_images:
        ds = ds.subset(a.limit_images)
    if a.checkpoint == "default":
        routed = _Routed(a.label_anchor, not a.no_aliases)
        query, anchor = routed.query, routed.anchor
    else:
        routed, one = None, _Answerer(a.checkpoint, a.label_anchor, not a.no_aliases)
        query, anchor = (lambda names: (one, one.encoder.encode(list(names)).float())), one.anchor
    n = len(words)
    ask_as = dict(item.split("=", 1) for item in a.ask_as.split(",") if "=" in item)
    asked = [ask_as.get(w, w) for w in words]
    together = query(asked + context)
    alone = [query([w]) for w in asked] if a.alone else []
    m_together, m_alone = _scores(n), _scores(n)
    lut = target_lut(ds.class_names, words)
    # "where": the labels under the pixels marked as the word, so that a low precision says
    # what the word was painted on (a door on wall or on cabinet is not the same fault)
    regions = {w: {"regions": 0, "found": 0, "tp": 0, "pred": 0,
                   "where": np.zeros(256, np.int64)} for w in a.regions}
    sheet = []
    for i in range(len(ds)):
        rgb, label = ds.load(i)
        target = lut[label]
        pred = _predict(together[0].net, rgb, together[1], a.long_side, a.single_label_margin)
        if a.sheet and a.regions and a.regions[0] in words and len(sheet) < a.sheet_rows:
            c = words.index(a.regions[0])
            labelled = target == c
            if labelled.any():
                sheet.append(_sheet_row(rgb, labelled, pred == c))
        pred = np.where(pred < n, pred, n)             # context words and none: "not scored"
        m_together.update(torch.from_numpy(pred), torch.from_numpy(target))
        for j, (who, text) in enumerate(alone):
            pj = _predict(who.net, rgb, text, a.long_side, a.single_label_margin) == 0
            t = np.where(target == IGNORE, IGNORE, np.where(target == j, j, n))
            m_alone.update(torch.from_numpy(np.where(pj, j, n)), torch.from_numpy(t))
        for w, r in regions.items():
            if w not in words:
                continue
            c = words.index(w)
            mask = (target == c).astype(np.uint8)
            k, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            for lab in range(1, k):
                if stats[lab, cv2.CC_STAT_AREA] < a.min_region * mask.size:
                    continue
                r["regions"] += 1
                region = comp == lab
                r["found"] += int(np.mean(pred[region] == c) >= a.found_share)
            marked = (pred == c) & (target != IGNORE)
            r["tp"] += int(np.sum(marked & (target == c)))
            r["pred"] += int(np.sum(marked))
            r["where"] += np.bincount(label[marked], minlength=256)
    iou = m_together.iou()[:n]
    out = {"checkpoint": a.checkpoint, "data": a.data, "split": a.split, "images": len(ds),
           "label_anchor": anchor, "aliases": not a.no_aliases, "context": context, "asked_as": asked,
           "single_label_margin": a.single_label_margin,
           **({"routes": routed.routes} if routed is not None else {}),
           "together": {"per_word_iou": {w: _r(v) for w, v in zip(words, iou)},
                        "mean_iou": _r(np.nanmean(iou))}}
    if a.alone:
        ia = m_alone.iou()[:n]
        out["alone"] = {"per_word_iou": {w: _r(v) for w, v in zip(words, ia)},
                        "mean_iou": _r(np.nanmean(ia))}
    if regions:
        out["regions"] = {w: {"regions": r["regions"],
                              "found_share": _r(r["found"] / max(r["regions"], 1)),
                              "pixel_precision": _r(r["tp"] / max(r["pred"], 1)),
                              "found_means": f">= {a.found_share:.0%} of the region marked",
                              "marked_on": _marked_on(r["where"], ds.class_names),
                              "min_region": a.min_region}
                          for w, r in regions.items()}
    if a.sheet and sheet:
        width = max(r.shape[1] for r in sheet)
        Path(a.sheet).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(a.sheet, np.concatenate(
            [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in sheet], 0))
        out["sheet"] = {"file": a.sheet, "rows": len(sheet)}
    text = json.dumps(out, indent=2)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    print(text)
    return 0


def _sheet_row(rgb: np.ndarray, labelled: np.ndarray, marked: np.ndarray, height: int = 200):
    """image | labelled pixels in green | marked pixels in red, as one BGR row."""
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    green, red = bgr.copy(), bgr.copy()
    green[labelled] = (0, 255, 0)
    red[marked] = (0, 0, 255)
    size = (max(1, round(bgr.shape[1] * height / bgr.shape[0])), height)
    return np.concatenate([cv2.resize(x, size, interpolation=cv2.INTER_AREA)
                           for x in (bgr, green, red)], 1)


def _marked_on(where: np.ndarray, class_names, top: int = 6) -> dict[str, float]:
    """The labels most often under a word's marked pixels, as % of those pixels."""
    total = max(int(where.sum()), 1)
    order = [i for i in np.argsort(-where) if where[i] > 0][:top]
    return {class_names[i] if i < len(class_names) else str(i): _r(where[i] / total)
            for i in order}


def _r(v):
    v = float(v)
    return None if np.isnan(v) else round(100 * v, 1) if v <= 1 else v


if __name__ == "__main__":
    sys.exit(main())
