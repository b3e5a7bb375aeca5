r"""Head ablation on a frozen backbone: fusion vs LSeg head vs DenseCLIP-style, many seeds.

    python -m lgseg_ros.train.head_probe --heads fusion lseg denseclip --seeds 0 1 2 \
        --iters 1000 --out runs/head_probe

The heads differ only after the backbone, and the question the fusion module answers
("CLIP for Lightweight Semantic Segmentation") is whether a head can align a *lightweight*
backbone's features with text. With the backbone frozen at its ImageNet weights that is all
a head can do, and the backbone runs once per image instead of once per step: the CamVid
features are computed once (train images and their mirror images, val images; 360x480),
kept in memory as fp16, and every head/seed trains on the same tensors with the training
recipe's open-vocabulary label sampling (subsets, WordNet synonyms, distractors) and loss.
That makes 3 heads x 3 seeds affordable on a CPU; it measures the heads' alignment power,
not what end-to-end fine-tuning would reach (the backbone then adapts too).

Prints and writes ``results.json``: per run val mIoU and held-out-name mIoU, and per head
mean and standard deviation over seeds.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .datasets import CAMVID_CLASSES, CAMVID_MEDIAN_FREQ_WEIGHTS, build_dataset
from .evaluate import predict
from .losses import seg_loss
from .metrics import ConfusionMatrix
from .openvocab import (DEV_RENAMES, HELDOUT_RENAMES, NEAR_MISS, EmbeddingTable, LabelSampler,
                        jitter_text)
from .train import param_groups, lr_lambda

HEAD_CONFIGS = {"fusion": "lite-minilm", "lseg": "lite-minilm-lseg",
                "denseclip": "lite-minilm-denseclip"}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m lgseg_ros.train.head_probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--heads", nargs="+", default=list(HEAD_CONFIGS), choices=list(HEAD_CONFIGS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--size", type=int, nargs=2, default=(360, 480), metavar=("H", "W"))
    p.add_argument("--loss-downsample", type=int, default=2,
                   help="score the loss at label resolution / this (speed)")
    p.add_argument("--limit-images", type=int, help="first N train and val images (tests)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="model config override applied to every head (e.g. gamma_init=0.1)")
    p.add_argument("--eval-at", type=int, nargs="*", default=[], metavar="STEP",
                   help="also score val at these steps (is the ranking settled before the end?)")
    p.add_argument("--text-noise", type=float, nargs="+", default=[0.0], metavar="SIGMA",
                   help="label-embedding noise during training (train --text-noise); several "
                        "values: each head/seed is trained once per value")
    p.add_argument("--backbone-config", default="lite-minilm",
                   help="the config whose backbone (with its ImageNet weights) gives the frozen "
                        "features, e.g. lite1-minilm to compare backbones; the heads take its widths")
    p.add_argument("--score-on", choices=("val", "train-tail"), default="val",
                   help="val: CamVid val; train-tail: the last --tail-share of CamVid train in "
                        "file order, held out of the probe's training (to choose a backbone "
                        "without looking at val, where the shipped model is reported)")
    p.add_argument("--tail-share", type=float, default=0.2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="runs/head_probe")
    return p.parse_args(argv)


@torch.no_grad()
def cache_features(backbone, net, ds, size, flip: bool):
    """[fp16 feature maps per level], labels uint8 [N, H, W] (ignore kept)."""
    feats, labels = None, []
    for i in range(len(ds)):
        img, lbl = ds.load(i)
        import cv2
        img = cv2.resize(img, size[::-1], interpolation=cv2.INTER_AREA)
        lbl = cv2.resize(lbl, size[::-1], interpolation=cv2.INTER_NEAREST)
        variants = [(img, lbl)] + ([(img[:, ::-1], lbl[:, ::-1])] if flip else [])
        for im, lb in variants:
            x = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].float() / 255
            x = (x - net.pixel_mean) / net.pixel_std
            out = [f.half() for f in backbone(x)]
            feats = [[f] for f in out] if feats is None else [a + [f] for a, f in zip(feats, out)]
            labels.append(torch.from_numpy(np.ascontiguousarray(lb)))
    return [torch.cat(f) for f in feats], torch.stack(labels)


def split_tail(ds, share: float):
    """(head, tail) of a dataset in file order; CamVid's frames are in sequence order, so the
    tail is a stretch of road the head never shows (not frames interleaved with it)."""
    if not 0 < share < 1:
        raise SystemExit(f"--tail-share must be between 0 and 1, got {share}")
    cut = len(ds.pairs) - max(1, round(share * len(ds.pairs)))
    return (dataclasses.replace(ds, pairs=ds.pairs[:cut]),
            dataclasses.replace(ds, pairs=ds.pairs[cut:]))


def run_one(head: str, seed: int, args, train_feats, train_lbl, val_feats, val_lbl, encoder,
            overrides, text_noise: float = 0.0) -> dict:
    from lgseg_ros.model import build_model, get_config

    from .train import apply_overrides, seed_everything
    seed_everything(seed)
    backbone = get_config(args.backbone_config)
    cfg = apply_overrides(get_config(HEAD_CONFIGS[head], backbone=backbone.backbone,
                                     backbone_weights=backbone.backbone_weights), overrides)
    net = build_model(cfg, load_weights=False)
    head_mod = net.head.train()
    sampler = LabelSampler(CAMVID_CLASSES, subset_prob=0.5, synonym_prob=0.3,
                           distractor_prob=0.5, rng=random.Random(seed * 1009))
    table = EmbeddingTable(encoder, sampler.all_names() + list(HELDOUT_RENAMES.values())
                           + list(DEV_RENAMES.values()))
    weights = torch.tensor(CAMVID_MEDIAN_FREQ_WEIGHTS).sqrt()
    opt = torch.optim.AdamW(param_groups(head_mod, args.lr, 1.0, 1e-2), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(args.iters, min(100, args.iters // 10),
                                                             "poly"))
    gen = torch.Generator().manual_seed(seed)
    n = train_lbl.shape[0]
    d = args.loss_downsample
    early = {}
    t0 = time.perf_counter()
    for _ in range(args.iters):
        idx = torch.randint(0, n, (args.batch_size,), generator=gen)
        feats = [f[idx].float() for f in train_feats]
        ids = train_lbl[idx, ::d, ::d].long()
        batch = sampler.sample()
        target = batch.lut[ids]
        logits = head_mod(feats, jitter_text(table(batch.names), text_noise, gen))
        loss = seg_loss(logits, target, ids, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step = sched.last_epoch
        if step in args.eval_at and step < args.iters:
            head_mod.eval()
            early[f"miou@{step}"] = score_val(head_mod, table, val_feats, val_lbl)["miou"]
            head_mod.train()
    train_s = time.perf_counter() - t0
    head_mod.eval()
    result = {"head": head, "seed": seed, "text_noise": text_noise, "iters": args.iters,
              "train_s": round(train_s, 1),
              "params_m": round(sum(p.numel() for p in head_mod.parameters()) / 1e6, 3)}
    result.update(score_val(head_mod, table, val_feats, val_lbl))
    result.update(early)
    return result


def _val_predictions(head_mod, text, val_feats, val_lbl, batch: int = 4):
    """(predicted channel ids, labels) per batch of val maps, at label resolution."""
    for i in range(0, val_lbl.shape[0], batch):
        # the head takes feature maps where the network takes images: eval's predict serves
        yield (predict(head_mod, [f[i:i + batch].float() for f in val_feats], text,
                       val_lbl.shape[-2:]), val_lbl[i:i + batch].long())


@torch.no_grad()
def score_val(head_mod, table, val_feats, val_lbl) -> dict:
    names = list(CAMVID_CLASSES)
    scores = {}
    for key, label_names in (("miou", names),
                             ("heldout_miou", [HELDOUT_RENAMES.get(c, c) for c in names]),
                             ("dev_miou", [DEV_RENAMES.get(c, c) for c in names])):
        cm = ConfusionMatrix(len(names))
        for pred, lbl in _val_predictions(head_mod, table(label_names), val_feats, val_lbl):
            cm.update(pred, lbl)
        scores[key] = float(cm.summary(names)["miou"])
    # near misses (things CamVid does not label) added to the 11 names: the share of
    # labelled pixels they take; a looser text space must not start painting them
    taken = labelled = 0
    for pred, lbl in _val_predictions(head_mod, table(names + list(NEAR_MISS)), val_feats,
                                      val_lbl):
        valid = lbl < len(names)
        taken += int(((pred >= len(names)) & (pred < len(names) + len(NEAR_MISS)) & valid).sum())
        labelled += int(valid.sum())
    scores["near_miss_share"] = taken / max(labelled, 1)
    return scores


def summarize(runs: list[dict]) -> dict:
    """Mean and spread over seeds per head (per "head@noise" where noise values differ)."""
    noisy = len({r.get("text_noise", 0.0) for r in runs}) > 1

    def group(r):
        return f"{r['head']}@{r.get('text_noise', 0.0):g}" if noisy else r["head"]

    out = {}
    for head in dict.fromkeys(group(r) for r in runs):
        rs = [r for r in runs if group(r) == head]
        out[head] = {}
        early = sorted({k for r in rs for k in r if k.startswith("miou@")},
                       key=lambda k: int(k[5:]))
        for key in ("miou", "heldout_miou", "dev_miou", "near_miss_share", *early):
            vals = [100 * r[key] for r in rs if key in r]
            if not vals:
                continue
            out[head][key] = {"mean": round(statistics.mean(vals), 2),
                              "std": round(statistics.stdev(vals), 2) if len(vals) > 1 else None,
                              "runs": [round(v, 2) for v in vals]}
    return out


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from lgseg_ros.model import build_model, get_config
    from lgseg_ros.text import build_text_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net = build_model(get_config(args.backbone_config)).eval()   # its ImageNet backbone
    t0 = time.perf_counter()
    train_ds = build_dataset("camvid", "train")
    if args.limit_images:
        train_ds = train_ds.subset(args.limit_images)
    if args.score_on == "train-tail":
        train_ds, val_ds = split_tail(train_ds, args.tail_share)
    else:
        val_ds = build_dataset("camvid", "val")
        if args.limit_images:
            val_ds = val_ds.subset(args.limit_images)
    size = tuple(args.size)
    train_feats, train_lbl = cache_features(net.backbone, net, train_ds, size, flip=True)
    val_feats, val_lbl = cache_features(net.backbone, net, val_ds, size, flip=False)
    print(f"features cached in {time.perf_counter() - t0:.0f} s: "
          f"{train_lbl.shape[0]} train maps, {val_lbl.shape[0]} val", flush=True)
    encoder = build_text_encoder("minilm", cached=True)
    runs = []
    for seed, head, noise in itertools.product(args.seeds, args.heads, args.text_noise):
        r = run_one(head, seed, args, train_feats, train_lbl, val_feats, val_lbl, encoder,
                    args.set, noise)
        runs.append(r)
        print(json.dumps(r), flush=True)
        (out / "results.json").write_text(json.dumps(
            {"args": vars(args), "runs": runs, "summary": summarize(runs)}, indent=2))
    print(json.dumps(summarize(runs), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
