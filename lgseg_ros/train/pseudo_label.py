r"""`lgseg pseudo-label`: label a folder of images with a closed-set teacher, as a folder
dataset that `lgseg train` reads.

    lgseg pseudo-label --teacher ../shared/teachers/ade20k_deeplabv3_mnv2.tflite \
        --images ../shared/datasets/indoor --out runs/pl/indoor --holdout-share 0.15
    # CamVid train frames: human labels refined by teachers ("building > window", ...)
    lgseg pseudo-label --teacher .../cityscapes_deeplab_mnv2_edgetpu_slim_quant.tflite \
        --teacher .../ade20k_deeplabv3_mnv2.tflite --images camvid:train --nest-into-camvid \
        --road-markings --out runs/pl/camvid_fine

Output (the folder format of ``train/datasets.py``)::

    OUT/classes.txt        concept names (teacher classes merged by meaning: concepts.py);
                           chains "parent > child" with --nest-into-camvid
    OUT/images/<stem>.*    symbolic links to the source images
    OUT/labels/<stem>.png  concept id per pixel; 255 = ignore (teacher unsure: confidence
                           below --min-confidence, or the teacher's own "other" class)
    OUT/confidence/<stem>.png   the teacher's softmax maximum x 255 (255 for arg-max-only
                           teachers)
    OUT/train.txt, OUT/holdout.txt   a split by a hash of each stem (--holdout-share):
                           the same image always lands on the same side
    OUT/teacher.json       teachers (file, sha256), thresholds, counts per concept

Runs resume: an image whose label PNG exists is skipped, so a stopped run continues, and
``--shard I/N`` lets N processes share one folder. The teacher is a training-time tool:
nothing here is imported by the node.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from . import concepts as C
from .datasets import CAMVID_VOID, IGNORE, IMAGE_EXTS, load_camvid, read_label, read_rgb
# A folder holding labels of evaluation frames: `lgseg train` refuses it as a source.
from .training_input import EVALUATION_ONLY_MARKER
from lgseg_ros.labels import CAMVID_CLASSES

EVAL_ONLY_SPLITS = ("val", "test")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="lgseg pseudo-label", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", action="append", required=True,
                   help="teacher file (.tflite or .onnx); repeat with --nest-into-camvid "
                        "(earlier teachers win where two refine the same pixel)")
    p.add_argument("--images", required=True,
                   help="a folder of images (searched recursively) or camvid:<split>")
    p.add_argument("--out", required=True)
    p.add_argument("--min-confidence", type=float, default=0.5,
                   help="pixels the teacher is less sure of become ignore (default 0.5)")
    p.add_argument("--nest-into-camvid", action="store_true",
                   help="with camvid:<split>: keep the human labels and refine them with the "
                        "teachers' finer concepts (concepts.NEST_RULES)")
    p.add_argument("--road-markings", action="store_true",
                   help="with --nest-into-camvid: mark bright white/yellow paint inside human "
                        "'road' pixels as 'road > road marking' (a colour rule, no teacher)")
    p.add_argument("--for-evaluation", action="store_true",
                   help="label an evaluation split (camvid:val) for scoring only: the folder "
                        "is marked EVALUATION_ONLY and lgseg train refuses it")
    p.add_argument("--holdout-share", type=float, default=0.0,
                   help="share of images listed in holdout.txt instead of train.txt")
    p.add_argument("--every", type=int, default=1, help="only every N-th image (sorted)")
    p.add_argument("--limit", type=int, help="only the first N images (after --every)")
    p.add_argument("--shard", default="0/1", metavar="I/N", help="this process's share")
    p.add_argument("--threads", type=int, default=1, help="teacher interpreter threads")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def list_images(spec: str, for_evaluation: bool = False
                ) -> tuple[list[tuple[str, Path, Path | None]], str | None]:
    """[(stem, image path, human label path or None)], and the CamVid split if any."""
    if spec.startswith("camvid:"):
        split = spec.split(":", 1)[1] or "train"
        if split in EVAL_ONLY_SPLITS and not for_evaluation:
            raise SystemExit(f"--images {spec}: CamVid's {split} split is for evaluation "
                             "only; no label of its frames may enter training (to score "
                             "against its pseudo-labels: --for-evaluation)")
        ds = load_camvid(None, split)
        return [(img.stem, img, lbl) for img, lbl in ds.pairs], split
    root = Path(spec)
    if not root.is_dir():
        raise SystemExit(f"--images {spec}: not a folder (or camvid:<split>)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise SystemExit(f"--images {spec}: no images ({', '.join(IMAGE_EXTS)})")
    out = []
    for p in files:
        rel = p.relative_to(root).with_suffix("")
        out.append(("__".join(rel.parts), p, None))
    return out, None


def in_holdout(stem: str, share: float) -> bool:
    h = int(hashlib.sha1(stem.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return h < share


def road_marking_mask(rgb: np.ndarray, road: np.ndarray) -> np.ndarray:
    """Paint on the road: much brighter than the frame's road surface and white (low
    saturation) or yellow. A colour rule, right for CamVid's daylight frames; it misses
    worn paint and takes some glare."""
    if road.sum() < 100:
        return np.zeros_like(road)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1].astype(np.int16), hsv[..., 2].astype(np.int16)
    v_road = np.median(val[road])
    # relative to the frame's road: CamVid's dusk frames have paint at half a noon road's
    # brightness
    bright = val > min(max(v_road + 20, v_road * 1.8), 245)
    white = bright & (sat < 90)
    yellow = (val > v_road + 25) & (hue >= 15) & (hue <= 35) & (sat > 90)
    mask = (white | yellow) & road
    # specks of glare go; an even kernel's anchor shifts the opening by a pixel, so the
    # result is clipped to the road again
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    return mask.astype(bool) & road


def nest_class_list() -> list[str]:
    """CamVid's classes, then every allowed "parent > child" chain (a fixed list, so runs
    on other frames give the same ids)."""
    names = list(CAMVID_CLASSES)
    for child, parents in C.NEST_RULES.items():
        for parent in parents:
            names.append(C.chain_name([parent, child]))
    return names


class Labeller:
    def __init__(self, args):
        from .teachers import Teacher
        self.args = args
        self.teachers = [Teacher(t, threads=args.threads) for t in args.teacher]
        # per teacher: class id -> concept (None: ignore)
        self.concepts = [C.teacher_concepts(t.spec.labels_file, t.class_names)
                         for t in self.teachers]
        if args.nest_into_camvid:
            self.class_names = nest_class_list()
        else:
            if len(self.teachers) != 1:
                raise SystemExit("several --teacher need --nest-into-camvid (which one would "
                                 "name a pixel otherwise?)")
            self.class_names = list(dict.fromkeys(c for c in self.concepts[0] if c))
        self.index = {n: i for i, n in enumerate(self.class_names)}
        # per teacher: class id -> output id (plain mode) or concept index (nest mode)
        self.luts = []
        for cons in self.concepts:
            lut = np.full(len(cons) + 1, IGNORE, np.int32)  # last entry: teacher's -1
            for i, c in enumerate(cons):
                if c is not None and c in self.index:
                    lut[i] = self.index[c]
            self.luts.append(lut)

    def label(self, rgb: np.ndarray, human: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        a = self.args
        if not a.nest_into_camvid:
            ids, conf = self.teachers[0].predict(rgb)
            out = self.luts[0][ids].astype(np.uint8)     # -1 indexes the last entry: ignore
            out[conf < a.min_confidence] = IGNORE
            return out, conf
        out = human.copy()                                  # CamVid ids, void = IGNORE
        refined = np.zeros(out.shape, bool)
        conf_out = np.ones(out.shape, np.float32)
        for teacher, cons in zip(self.teachers, self.concepts):
            ids, conf = teacher.predict(rgb)
            sure = (ids >= 0) & (conf >= a.min_confidence) & ~refined & (human != IGNORE)
            for child, parents in C.NEST_RULES.items():
                child_ids = [i for i, c in enumerate(cons) if c == child]
                if not child_ids:
                    continue
                is_child = sure & np.isin(ids, child_ids)
                for parent in parents:
                    hit = is_child & (human == CAMVID_CLASSES.index(parent))
                    out[hit] = self.index[C.chain_name([parent, child])]
                    refined |= hit
                    conf_out[hit] = conf[hit]
        if a.road_markings:
            road = human == CAMVID_CLASSES.index("road")
            mark = road_marking_mask(rgb, road) & ~refined
            out[mark] = self.index[C.chain_name(["road", "road marking"])]
        return out, conf_out


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.nest_into_camvid and not args.images.startswith("camvid:"):
        raise SystemExit("--nest-into-camvid needs --images camvid:<split>")
    if args.road_markings and not args.nest_into_camvid:
        raise SystemExit("--road-markings needs --nest-into-camvid (it refines human 'road')")
    if not 0.0 <= args.min_confidence <= 1.0:
        raise SystemExit(f"--min-confidence {args.min_confidence}: must be in [0, 1]")
    if not 0.0 <= args.holdout_share < 1.0:
        raise SystemExit(f"--holdout-share {args.holdout_share}: must be in [0, 1)")
    try:
        shard, nshards = (int(x) for x in args.shard.split("/"))
        assert 0 <= shard < nshards
    except (ValueError, AssertionError):
        raise SystemExit(f"--shard {args.shard!r}: expected I/N with 0 <= I < N")
    items, _ = list_images(args.images, args.for_evaluation)
    items = items[:: max(1, args.every)][: args.limit]
    labeller = Labeller(args)
    out = Path(args.out)
    for sub in ("images", "labels", "confidence"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if args.for_evaluation:
        (out / EVALUATION_ONLY_MARKER).write_text(
            f"labels of {args.images}: for evaluation only, never a training source\n")
    # every shard writes the same listing files (a function of the inputs alone)
    (out / "classes.txt").write_text(
        "# written by lgseg pseudo-label; 255 = ignore\n" + "\n".join(labeller.class_names)
        + "\n", encoding="utf-8")
    hold = [s for s, _, _ in items if in_holdout(s, args.holdout_share)]
    (out / "holdout.txt").write_text("".join(s + "\n" for s in hold))
    (out / "train.txt").write_text("".join(s + "\n" for s, _, _ in items
                                           if s not in set(hold)))
    mine = items[shard::nshards]
    it = mine
    if not args.no_progress:
        from tqdm import tqdm
        it = tqdm(mine, desc=f"pseudo-label {shard}/{nshards}", file=sys.stderr,
                  dynamic_ncols=True)
    counts = np.zeros(256, np.int64)
    done = 0
    for stem, img_path, lbl_path in it:
        link = out / "images" / (stem + img_path.suffix.lower())
        if not link.is_symlink() and not link.exists():
            os.symlink(img_path.resolve(), link)
        dst = out / "labels" / f"{stem}.png"
        if dst.exists():
            continue
        rgb = read_rgb(img_path)
        human = None
        if lbl_path is not None:
            raw = read_label(lbl_path)
            human = np.where(raw == CAMVID_VOID, IGNORE, raw).astype(np.uint8)
            human[human >= len(CAMVID_CLASSES)] = IGNORE
        label, conf = labeller.label(rgb, human)
        counts += np.bincount(label.ravel(), minlength=256)
        cv2.imwrite(str(out / "confidence" / f"{stem}.png"),
                    np.clip(conf * 255 + 0.5, 0, 255).astype(np.uint8))
        tmp = out / "labels" / f"{stem}.tmp.png"   # a stopped run leaves no half label
        cv2.imwrite(str(tmp), label)
        os.replace(tmp, dst)
        done += 1
    meta = {"teachers": [{"file": str(t.path), "sha256": t.sha256,
                          "labels_file": t.spec.labels_file} for t in labeller.teachers],
            "images": args.images, "min_confidence": args.min_confidence,
            "nest_into_camvid": args.nest_into_camvid, "road_markings": args.road_markings,
            "holdout_share": args.holdout_share, "images_listed": len(items),
            "holdout_images": len(hold)}
    (out / "teacher.json").write_text(json.dumps(meta, indent=2))
    (out / f"counts_shard{shard}of{nshards}.json").write_text(json.dumps(
        {labeller.class_names[i] if i < len(labeller.class_names) else str(i): int(n)
         for i, n in enumerate(counts) if n}, indent=1))
    print(f"labelled {done} images into {out} ({len(mine) - done} already there)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
