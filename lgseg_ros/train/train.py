r"""`lgseg train`: train an LGSegNet on CamVid or a folder dataset.

    lgseg train --config lite-minilm --data camvid --iters 20000 --batch-size 16 \
        --crop 360 480 --lr 1e-3 --amp --out runs/lite_minilm
    torchrun --nproc_per_node 4 -m lgseg_ros.cli train ...   # multi-GPU (DDP)

Output folder: ``train.log`` (human), ``train_log.jsonl`` (one record per logged step),
``args.json``, ``last.safetensors`` + ``last_state.pt`` (resume: ``--resume``),
``final.safetensors`` (metadata: the class names trained on and these arguments), and
``eval_<split>/`` (the ``lgseg eval`` outputs on the validation split) unless --no-eval.

Model weights are only ever written with safetensors; the optimizer/scheduler state file
holds plain tensors and containers and is read back with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .augment import TrainAugment
from .datasets import (CAMVID_CLASSES, CAMVID_MEDIAN_FREQ_WEIGHTS, MixedDataset, build_dataset,
                       relabelled)
from .losses import distill_loss, seg_loss
from .multisource import (MultiSourceDataset, SourceBatchSampler, SourceSpec, expand_sources,
                          override_concept_weights, parse_concept_weight)
from .openvocab import EmbeddingTable, LabelSampler, jitter_text
from .training_input import check_training_source, refuse_evaluation_split

log = logging.getLogger("lgseg.train")

STATE_VERSION = 1


def parse_args(argv):
    p = argparse.ArgumentParser(prog="lgseg train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="lite-minilm", help="model config name")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config field (repeatable), e.g. --set fusion_blocks=2")
    p.add_argument("--init", help="start from this checkpoint's weights (fine-tuning)")
    p.add_argument("--distill", metavar="CHECKPOINT",
                   help="learning without forgetting: a frozen teacher (e.g. the model you "
                        "fine-tune from) scores every batch's label set too, and its softened "
                        "answers are kept where it agrees with the labels (losses.distill_loss)")
    p.add_argument("--distill-weight", type=float, default=1.0,
                   help="weight of the distillation term beside the cross-entropy")
    p.add_argument("--distill-temperature", type=float, default=2.0)
    p.add_argument("--distill-sources", nargs="+", metavar="DATA",
                   help="with --source: distil only on batches from these sources (as given "
                        "to --source, without the share); default every source")
    p.add_argument("--data", default="camvid", help="'camvid' or a dataset folder")
    p.add_argument("--replay", metavar="DATA",
                   help="also train on this dataset ('camvid' or a folder), mixed into every "
                        "epoch: fine-tune on your classes without forgetting the old ones")
    p.add_argument("--replay-share", type=float, default=0.5,
                   help="share of training samples drawn from --replay (default 0.5)")
    p.add_argument("--source", action="append", metavar="DATA[:SHARE]",
                   help="train on several label sources at once (repeatable; 'camvid' or a "
                        "folder dataset, e.g. from lgseg pseudo-label), each batch from one "
                        "source drawn by SHARE; classes are concepts merged by name, chains "
                        "'parent > child' nest (train/multisource.py). --data then only "
                        "names the evaluation data. pack:DIR[:SHARE] reads the sources "
                        "`lgseg pack-data` packed into DIR, with their split and shares "
                        "(scaled to sum to SHARE)")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--iters", type=int, help="optimizer steps (default 20000)")
    g.add_argument("--epochs", type=float, help="passes over the training split")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="end training after this much training time (resumed runs count "
                        "their earlier time); the LR schedule follows the fraction done, "
                        "by steps or by time, whichever is further: a time-boxed run on a "
                        "machine of unknown speed still anneals fully")
    p.add_argument("--batch-size", type=int, default=16, help="per process")
    p.add_argument("--crop", type=int, nargs=2, default=(360, 480), metavar=("H", "W"))
    p.add_argument("--scale", type=float, nargs=2, default=(0.5, 2.0), metavar=("MIN", "MAX"))
    p.add_argument("--base-size", type=int, nargs=2, metavar=("H", "W"),
                   help="resize images to this before scale jitter (default: as stored)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak LR of the new layers")
    p.add_argument("--backbone-lr-mult", type=float, default=0.1,
                   help="LR factor for the pretrained backbone")
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--schedule", choices=("poly", "cosine"), default="poly")
    p.add_argument("--warmup", type=int, help="linear warm-up steps (default 5%% of iters, <=500)")
    p.add_argument("--grad-clip", type=float, default=0.0, help="max grad norm (0: off)")
    p.add_argument("--class-weights", choices=("none", "median-freq", "sqrt-median-freq",
                                               "concept-freq"),
                   default="none",
                   help="median-freq: SegNet's CamVid weights; sqrt-median-freq: their square "
                        "root, a milder push towards thin classes (CamVid only); concept-freq "
                        "(with --source): (median/frequency)**power per label chain, the median "
                        "over chains with >=0.1%% of the pixels, clipped to --class-weight-clip, "
                        "so indoor and rare street concepts are learnt")
    p.add_argument("--class-weight-power", type=float, default=0.5,
                   help="exponent of concept-freq weights (0: all equal, 1: full balancing)")
    p.add_argument("--class-weight-clip", type=float, nargs=2, default=(0.5, 3.0),
                   metavar=("LO", "HI"), help="bounds of concept-freq weights")
    p.add_argument("--concept-weight", action="append", default=[], metavar="LEAF=W",
                   type=parse_concept_weight,
                   help="with concept-freq: set weight W for every chain ending in LEAF "
                        "('door' sets 'door' and 'building > door'), after the clip; "
                        "repeatable. For a concept the data has plenty of pixels of but the "
                        "model still misses")
    p.add_argument("--full-prob", type=float, default=0.3,
                   help="with --source: probability a batch asks every concept present "
                        "(else a random subset), plus up to --max-absent absent ones")
    p.add_argument("--max-absent", type=int, default=8)
    p.add_argument("--alone-prob", type=float, default=0.0,
                   help="with --source: probability a batch asks one present concept alone "
                        "(the single-label query; about 1%% of batches otherwise)")
    p.add_argument("--subset-prob", type=float, default=0.5,
                   help="probability a batch trains on a random subset of the labels")
    p.add_argument("--synonym-prob", type=float, default=0.2,
                   help="probability a label is named by a synonym in a batch")
    p.add_argument("--distractor-prob", type=float, default=0.0,
                   help="probability a batch also gets 1..--max-distractors labels no pixel "
                        "belongs to (words from the shipped WordNet vocabulary)")
    p.add_argument("--max-distractors", type=int, default=8)
    p.add_argument("--text-noise", type=float, default=0.0, metavar="SIGMA",
                   help="move each label embedding by Gaussian noise of this relative size "
                        "per batch (0: off; 0.5 keeps cosine ~0.89 to the name's vector)")
    p.add_argument("--no-none-target", action="store_true",
                   help="ignore pixels of labels left out of a batch instead of training 'none'")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers per process")
    p.add_argument("--no-cache", action="store_true", help="do not keep decoded images in RAM")
    p.add_argument("--write-text-table", metavar="FILE",
                   help="write the label embeddings this run would use (every name it can "
                        "ask) to FILE and stop: for --text-table on a machine without the "
                        "text encoder")
    p.add_argument("--text-table", metavar="FILE",
                   help="read the label embeddings from FILE (--write-text-table) instead of "
                        "running the text encoder")
    p.add_argument("--data-on-device", action="store_true",
                   help="hold the training set on the training device as uint8 and augment "
                        "it there (a GPU then never waits on DataLoader workers; "
                        "--workers is unused)")
    p.add_argument("--limit-images", type=int, help="use only the first N training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.*")
    p.add_argument("--stop-at", type=int, metavar="STEP",
                   help="save a resumable state and exit after this step (time-boxed jobs); "
                        "the schedule still runs to --iters")
    p.add_argument("--out", default="runs/train")
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--export", help="also write the final checkpoint here (e.g. models/x.safetensors)")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument("--eval-size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--eval-batch-size", type=int, default=4)
    p.add_argument("--eval-limit-images", type=int)
    p.add_argument("--eval-rename", action="append",
                   help="rename spec(s) for eval (default: heldout, synonyms on CamVid)")
    p.add_argument("--no-eval-subset", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


# ------------------------------------------------------------------ config overrides
def apply_overrides(cfg, items):
    """``key=value`` pairs onto a dataclass config; values parse as JSON, else stay text."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    changes = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise SystemExit(f"--set {item!r}: unknown config field {key!r}; fields: "
                             f"{', '.join(sorted(fields))}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        current = getattr(cfg, key)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        changes[key] = value
    return dataclasses.replace(cfg, **changes) if changes else cfg


# ------------------------------------------------------------------ distributed
def setup_distributed(device_arg: str):
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; a plain run is one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg == "auto":
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_arg)
        if device.type == "cuda" and device.index is None and world > 1:
            device = torch.device(f"cuda:{local}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1:
        import torch.distributed as dist
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return world, rank, device


def unwrap(net):
    return net.module if hasattr(net, "module") else net


# ------------------------------------------------------------------ optimizer / schedule
def param_groups(net, lr, backbone_mult, weight_decay):
    """Backbone at a lower LR (it is pretrained); no decay on norms, biases, embeddings
    of shape [D] (decaying a scale or a learned token towards 0 only hurts)."""
    groups = {}
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        is_backbone = name.startswith("backbone.") or ".backbone." in name
        no_decay = p.ndim <= 1
        key = (is_backbone, no_decay)
        if key not in groups:
            groups[key] = {"params": [], "lr": lr * (backbone_mult if is_backbone else 1.0),
                           "weight_decay": 0.0 if no_decay else weight_decay,
                           "name": ("backbone" if is_backbone else "head")
                           + ("/no_decay" if no_decay else "")}
        groups[key]["params"].append(p)
    return list(groups.values())


def lr_lambda(total, warmup, schedule, power=0.9, time_fraction=None):
    """LR factor per step; with ``time_fraction`` (a callable giving the fraction of a
    time budget spent) the decay follows whichever of steps and time is further along."""
    def f(step):
        if warmup and step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        if time_fraction is not None:
            t = max(t, min(1.0, time_fraction()))
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        return (1 - t) ** power
    return f


# ------------------------------------------------------------------ logging
def setup_logging(out: Path, rank: int):
    log.setLevel(logging.INFO)
    log.handlers.clear()
    log.propagate = False
    if rank != 0:
        log.addHandler(logging.NullHandler())
        return
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    fh = logging.FileHandler(out / "train.log")
    fh.setFormatter(fmt)
    sh = logging.StreamHandler(sys.stderr)
    sh.setFormatter(fmt)
    log.addHandler(fh)
    log.addHandler(sh)


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _atomic_torch_save(obj, path: Path):
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_training_state(out: Path, net, cfg, opt, sched, scaler, step, sampler_rng, meta,
                        train_elapsed_s=0.0):
    from lgseg_ros.model import save_checkpoint
    save_checkpoint(out / "last.safetensors", unwrap(net), cfg, {**meta, "step": step})
    _atomic_torch_save({
        "version": STATE_VERSION, "step": step,
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "torch_rng": torch.get_rng_state(),
        "sampler_rng": _rng_state_to_list(sampler_rng.getstate()),
        "train_elapsed_s": float(train_elapsed_s),
    }, out / "last_state.pt")


def _rng_state_to_list(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_state_from_list(state):
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def multi_source_labels(args, train_ds, encoder, rng):
    """The label sampler of a multi-source run: concepts with every name they are trained
    under (CamVid's WordNet names, the concept table's, and an --init/--resume checkpoint's),
    and the WordNet distractors that no concept name is close to."""
    from .multisource import MultiSourceLabelSampler, build_vocabulary, filter_distractors
    from .openvocab import DISTRACTORS, TRAIN_SYNONYMS

    base = {c: list(v) for c, v in TRAIN_SYNONYMS.items()}
    if args.init or args.resume:
        from lgseg_ros.model.checkpoint import read_checkpoint_metadata
        from lgseg_ros.runtime.grounding import vocabulary_from_metadata
        before = read_checkpoint_metadata(args.init or str(Path(args.out) / "last.safetensors"))[1]
        for c, names in vocabulary_from_metadata(before)[0].items():
            base[c] = list(dict.fromkeys([*base.get(c, []), *names]))
    vocab = build_vocabulary(train_ds.space, base)
    names = [n for ns in vocab.values() for n in ns]
    table = EmbeddingTable(encoder, names)
    distractors = filter_distractors(DISTRACTORS, table, names) \
        if args.distractor_prob > 0 else []
    sampler = MultiSourceLabelSampler(
        train_ds.space, train_ds.askable, vocab, full_prob=args.full_prob,
        max_absent=args.max_absent, synonym_prob=args.synonym_prob,
        distractor_prob=args.distractor_prob, max_distractors=args.max_distractors,
        distractors=distractors, negatable=train_ds.negatable, alone_prob=args.alone_prob,
        rng=rng)
    table(sampler.all_names())
    sampler.table = table
    log.info("%d concepts, %d names, %d distractors kept of %d", len(train_ds.space.concepts),
             len(names), len(distractors), len(DISTRACTORS))
    return sampler


# ------------------------------------------------------------------ main
def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from lgseg_ros.model import build_model, get_config, load_checkpoint, save_checkpoint
    from lgseg_ros.model.checkpoint import backbone_kwargs_problem
    from lgseg_ros.text import build_text_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    world, rank, device = setup_distributed(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    setup_logging(out, rank)
    seed_everything(args.seed + rank)

    # ---------------- data
    # CamVid val is where every reported number is measured: no frame of it, and no
    # pseudo-label of one, may train, whichever option names it.
    refuse_evaluation_split(args.train_split)
    for data, option in ([(args.data, "--data")] if not args.source else []) + \
            ([(args.replay, "--replay")] if args.replay else []):
        check_training_source(data, option)
    multi = bool(args.source)
    if multi:
        if args.replay:
            raise SystemExit("--replay and --source: give the replayed data as a --source")
        if world > 1:
            raise SystemExit("--source is single-process for now (one source per batch)")
        from .pack import PackError
        try:
            source_specs = expand_sources([SourceSpec.parse(s) for s in args.source])
            train_ds = MultiSourceDataset(source_specs, args.train_split,
                                          cache=not args.no_cache,
                                          limit_images=args.limit_images)
        except PackError as e:
            raise SystemExit(f"--source: {e}") from None
        for spec in source_specs:
            if spec.pack is not None and spec.split != args.train_split:
                log.info("source %s from pack %s: split %s as packed (not --train-split %s)",
                         spec.data, spec.pack, spec.split, args.train_split)
    else:
        train_ds = build_dataset(args.data, args.train_split, cache=not args.no_cache)
        if args.limit_images:
            train_ds = train_ds.subset(args.limit_images)
    if args.replay:
        if not 0.0 < args.replay_share < 1.0:
            raise SystemExit(f"--replay-share {args.replay_share}: must be in (0, 1)")
        if world > 1:
            raise SystemExit("--replay is single-process (fine-tuning runs on one device)")
        old = build_dataset(args.replay, "train", cache=not args.no_cache)
        # the user's classes first (their ids stay as in classes.txt), then the old ones
        joint = tuple(dict.fromkeys([*train_ds.class_names, *old.class_names]))
        train_ds = MixedDataset([relabelled(train_ds, joint), relabelled(old, joint)],
                                [1.0 - args.replay_share, args.replay_share])
    train_ds.transform = TrainAugment(crop=tuple(args.crop), scale=tuple(args.scale),
                                      base_size=tuple(args.base_size) if args.base_size else None)
    class_names = train_ds.class_names
    steps_per_epoch = max(1, len(train_ds) // (args.batch_size * world))
    if args.epochs is not None:
        total = max(1, math.ceil(args.epochs * steps_per_epoch))
    else:
        total = args.iters if args.iters is not None else 20000
    warmup = args.warmup if args.warmup is not None else min(500, total // 20)

    weights = None
    if args.class_weights == "concept-freq":
        if not multi:
            raise SystemExit("--class-weights concept-freq needs --source")
        weights = train_ds.class_weights(
            power=args.class_weight_power, clip=tuple(args.class_weight_clip))
        weights = override_concept_weights(weights, class_names, args.concept_weight).to(device)
        log.info("class weights per chain: %s", {n: round(float(w), 2) for n, w in
                                                 zip(class_names, weights.tolist())})
    elif args.concept_weight:
        raise SystemExit("--concept-weight needs --class-weights concept-freq")
    elif args.class_weights != "none":
        if tuple(class_names) != CAMVID_CLASSES:
            raise SystemExit(f"--class-weights {args.class_weights} is CamVid's; "
                             "this dataset is not CamVid")
        weights = torch.tensor(CAMVID_MEDIAN_FREQ_WEIGHTS, dtype=torch.float32, device=device)
        if args.class_weights == "sqrt-median-freq":
            weights = weights.sqrt()

    # ---------------- model
    state = None
    if args.resume:
        ckpt = out / "last.safetensors"
        if not ckpt.exists() or not (out / "last_state.pt").exists():
            raise SystemExit(f"--resume: no {ckpt} / last_state.pt in {out}")
        net, cfg = load_checkpoint(str(ckpt))
        state = torch.load(out / "last_state.pt", map_location="cpu", weights_only=True)
        if state.get("version") != STATE_VERSION:
            raise SystemExit(f"{out / 'last_state.pt'}: unknown state version {state.get('version')}")
        log.info("resuming %s from step %d", out, state["step"])
    elif args.init:
        net, cfg = load_checkpoint(args.init)
        if args.set:
            raise SystemExit("--set cannot change the architecture of an --init checkpoint")
        log.info("initialised from %s", args.init)
    else:
        cfg = apply_overrides(get_config(args.config), args.set)
        problem = backbone_kwargs_problem(cfg.backbone_kwargs)
        if problem:   # load_checkpoint would refuse everything the run saves, --resume too
            raise SystemExit(f"--set backbone_kwargs: {problem}; a checkpoint may carry only "
                             "the keys lgseg_ros.model.checkpoint allows")
        net = build_model(cfg)
    net.to(device).train()

    teacher, distill_on = None, None
    if args.distill:
        teacher, tcfg = load_checkpoint(args.distill)
        if (tcfg.text_encoder, tcfg.prompt_template) != (cfg.text_encoder, cfg.prompt_template):
            raise SystemExit(f"--distill {args.distill}: its text encoder "
                             f"({tcfg.text_encoder}, {tcfg.prompt_template!r}) is not the "
                             f"student's ({cfg.text_encoder}, {cfg.prompt_template!r}); both "
                             "must read the same label embeddings")
        teacher.to(device).eval().requires_grad_(False)
        if args.distill_sources:
            if not multi:
                raise SystemExit("--distill-sources needs --source")
            given = [spec.data for spec in source_specs]
            unknown = [x for x in args.distill_sources if x not in given]
            if unknown:
                raise SystemExit(f"--distill-sources {unknown}: not among --source {given}")
            distill_on = {i for i, d in enumerate(given) if d in args.distill_sources}
        log.info("distilling from %s (weight %.2f, T %.1f, sources %s)", args.distill,
                 args.distill_weight, args.distill_temperature, args.distill_sources or "all")
    if args.text_table:
        from .text_table import load_text_table
        try:
            encoder = load_text_table(args.text_table, cfg.text_encoder, cfg.prompt_template)
        except (OSError, ValueError) as e:
            raise SystemExit(str(e)) from None
    else:
        encoder = build_text_encoder(cfg.text_encoder, template=cfg.prompt_template, cached=True)
    sampler_rng = random.Random(args.seed * 1009 + rank)
    if multi:
        labels = multi_source_labels(args, train_ds, encoder, sampler_rng)
        table = labels.table
    else:
        labels = LabelSampler(class_names, subset_prob=args.subset_prob,
                              none_target=not args.no_none_target,
                              synonym_prob=args.synonym_prob,
                              distractor_prob=args.distractor_prob,
                              max_distractors=args.max_distractors, rng=sampler_rng)
        table = EmbeddingTable(encoder, labels.all_names())
    if args.write_text_table:
        from .text_table import write_text_table
        n = write_text_table(args.write_text_table, table.table, cfg.text_encoder,
                             cfg.prompt_template)
        log.info("wrote %d label embeddings to %s; stopping (--write-text-table)", n,
                 args.write_text_table)
        return 0

    opt = torch.optim.AdamW(param_groups(net, args.lr, args.backbone_lr_mult, args.weight_decay),
                            lr=args.lr, weight_decay=args.weight_decay)
    budget_s = args.time_budget * 60 if args.time_budget else None
    prior_s = float(state.get("train_elapsed_s", 0.0)) if state is not None else 0.0
    clock = {"t0": time.perf_counter()}

    def elapsed_s():
        return prior_s + time.perf_counter() - clock["t0"]

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(
        total, warmup, args.schedule,
        time_fraction=(lambda: elapsed_s() / budget_s) if budget_s else None))
    use_amp = args.amp and device.type == "cuda"
    if args.amp and not use_amp:
        log.info("--amp: ignored on %s (mixed precision is for CUDA here)", device)
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype == torch.float16 else None
    start = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        sampler_rng.setstate(_rng_state_from_list(state["sampler_rng"]))
        start = int(state["step"])

    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)

    vocab = labels.vocabulary() if not multi else dict(labels.vocabulary)
    distractors = list(labels.distractors) if args.distractor_prob > 0 else []
    if multi:
        # concepts, not the sources' chains, are what a user can ask for
        class_names = tuple(train_ds.space.concepts)
    if (args.init or args.resume) and not multi:
        # a fine-tuned model still knows what its starting point was trained on
        from lgseg_ros.model.checkpoint import read_checkpoint_metadata
        from lgseg_ros.runtime.grounding import vocabulary_from_metadata
        before = read_checkpoint_metadata(args.init or str(out / "last.safetensors"))[1]
        old_vocab, old_distractors = vocabulary_from_metadata(before)
        for c, names in old_vocab.items():
            vocab[c] = list(dict.fromkeys([*vocab.get(c, [c]), *names]))
        distractors = list(dict.fromkeys([*distractors, *old_distractors]))
    if multi:
        distractors = list(labels.distractors)  # already filtered against the concepts
    run_meta = {
        "labels": list(class_names),
        # every name each class was trained under: grounding reports compare users' words
        # with these (runtime/grounding.py)
        "vocabulary": vocab,
        "distractors": distractors,
        "dataset": args.data, "train_split": args.train_split, "replay": args.replay,
        "sources": [dataclasses.asdict(s) for s in source_specs] if multi else [],
        "train_args": json.loads(json.dumps(vars(args), default=str)),
        "world_size": world, "total_iters": total,
    }
    if rank == 0:
        (out / "args.json").write_text(json.dumps(
            {"argv": list(sys.argv[1:] if argv is None else argv), "args": vars(args),
             "model_config": dataclasses.asdict(cfg), "total_iters": total, "warmup": warmup,
             "world_size": world, "device": str(device), "torch_threads": torch.get_num_threads(),
             "train_images": len(train_ds)}, indent=2, default=str))
    log.info("data %s: %d train images, classes %s", train_ds.name if multi else args.data,
             len(train_ds), list(class_names))
    log.info("model %s (%.2fM params) on %s x%d, %d iters (%.1f epochs), batch %d/process, "
             "crop %s, warmup %d, %s schedule, amp=%s", cfg.name if hasattr(cfg, "name") else args.config,
             sum(p.numel() for p in net.parameters()) / 1e6, device, world, total,
             total / steps_per_epoch, args.batch_size, tuple(args.crop), warmup, args.schedule,
             use_amp and str(amp_dtype))

    # ---------------- loop
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    device_data = None
    if args.data_on_device:
        from .device_data import DeviceData
        device_data = DeviceData(train_ds, device, train_ds.transform)

    def make_loader(epoch):
        gen = torch.Generator().manual_seed(args.seed * 100003 + epoch * 31 + rank)
        if device_data is not None:
            return device_loader(epoch, gen)
        if multi:
            return DataLoader(train_ds, num_workers=args.workers,
                              pin_memory=device.type == "cuda", persistent_workers=False,
                              batch_sampler=SourceBatchSampler(train_ds, args.batch_size,
                                                               steps_per_epoch, gen))
        if world > 1:
            ds_sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank,
                                            shuffle=True, seed=args.seed, drop_last=True)
            ds_sampler.set_epoch(epoch)
            kw = {"sampler": ds_sampler}
        elif isinstance(train_ds, MixedDataset):
            kw = {"sampler": torch.utils.data.WeightedRandomSampler(
                train_ds.sample_weights(), len(train_ds), replacement=True, generator=gen)}
        else:
            kw = {"shuffle": True}
        return DataLoader(train_ds, batch_size=args.batch_size, drop_last=True,
                          num_workers=args.workers, generator=gen,
                          pin_memory=device.type == "cuda",
                          persistent_workers=False, **kw)

    def device_loader(epoch, gen):
        # The DataLoader path's samplers, so sources, shares and shuffling stay the same.
        from .device_data import index_batches
        if multi:
            batches = SourceBatchSampler(train_ds, args.batch_size, steps_per_epoch, gen)
        else:
            if world > 1:
                order = DistributedSampler(train_ds, num_replicas=world, rank=rank,
                                           shuffle=True, seed=args.seed, drop_last=True)
                order.set_epoch(epoch)
            elif isinstance(train_ds, MixedDataset):
                order = torch.utils.data.WeightedRandomSampler(
                    train_ds.sample_weights(), len(train_ds), replacement=True, generator=gen)
            else:
                order = torch.randperm(len(train_ds), generator=gen).tolist()
            batches = index_batches(order, args.batch_size)
        for idx in batches:
            yield device_data.batch(idx)

    jsonl = None
    if rank == 0:
        # a fresh run starts a fresh log; a resumed one keeps the steps up to its state
        path, kept = out / "train_log.jsonl", []
        if state is not None and path.exists():
            kept = [x for x in path.read_text().splitlines()
                    if x.strip() and json.loads(x)["step"] <= start]
        jsonl = open(path, "w")
        jsonl.writelines(x + "\n" for x in kept)
    bar = None
    if rank == 0 and not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True, file=sys.stderr)
    step, epoch = start, start // steps_per_epoch
    ema, t_last, n_last, t0 = None, time.perf_counter(), 0, time.perf_counter()
    clock["t0"] = t0
    while step < total:
        for batch_items in make_loader(epoch):
            images, target_ids = batch_items[0], batch_items[1]
            if budget_s is not None and elapsed_s() >= budget_s:
                log.info("time budget of %.1f min spent at step %d of %d: finishing",
                         args.time_budget, step, total)
                total = step
            if step >= total:
                break
            if multi:
                batch = labels.sample(int(batch_items[2][0]),
                                      torch.unique(target_ids).tolist())
            else:
                batch = labels.sample()
            # torch's global generator: --resume restores it, so the noise resumes too
            text = jitter_text(table(batch.names), args.text_noise).to(device, non_blocking=True)
            images = images.to(device, non_blocking=True)
            target_ids = target_ids.to(device, non_blocking=True)
            target = batch.lut.to(device)[target_ids]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = net(images, text)
            loss = seg_loss(logits, target, target_ids, weights)
            kd = None
            if teacher is not None and (distill_on is None or int(batch_items[2][0]) in distill_on):
                with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    t_logits = teacher(images, text)
                kd = distill_loss(logits, t_logits, target, args.distill_temperature)
                loss = loss + args.distill_weight * kd
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), args.grad_clip)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            step += 1
            lv = loss.item()
            if not math.isfinite(lv):
                log.error("non-finite loss %s at step %d; stopping", lv, step)
                return 1
            ema = lv if ema is None else 0.95 * ema + 0.05 * lv
            n_last += images.shape[0] * world
            if bar is not None:
                bar.update(1)
            if step % args.log_every == 0 or step == total or step == start + 1:
                now = time.perf_counter()
                ips = n_last / max(now - t_last, 1e-9)
                t_last, n_last = now, 0
                lr = max(g["lr"] for g in opt.param_groups)  # the head's (peak) LR
                if bar is not None:
                    bar.set_postfix(loss=f"{ema:.3f}", img_s=f"{ips:.1f}", lr=f"{lr:.2e}")
                if rank == 0:
                    rec = {"step": step, "loss": lv, "loss_ema": ema, "lr": lr,
                           "img_per_s": ips, "elapsed_s": now - t0, "k": len(batch.names)}
                    if kd is not None:
                        rec["distill"] = float(kd.detach())
                    jsonl.write(json.dumps(rec) + "\n")
                    jsonl.flush()
                    log.info("step %d/%d loss %.4f (ema %.4f) lr %.2e %.1f img/s elapsed %.0fs",
                             step, total, lv, ema, lr, ips, now - t0)
            if step % args.ckpt_every == 0 and step < total and rank == 0:
                save_training_state(out, net, cfg, opt, sched, scaler, step, sampler_rng, run_meta,
                                    elapsed_s())
            if args.stop_at is not None and step >= args.stop_at and step < total:
                break
        if args.stop_at is not None and step >= args.stop_at and step < total:
            if bar is not None:
                bar.close()
            if rank == 0:
                save_training_state(out, net, cfg, opt, sched, scaler, step, sampler_rng, run_meta,
                                    elapsed_s())
                log.info("stopped at step %d of %d (--stop-at); continue with --resume", step, total)
                jsonl.close()
            if world > 1:
                import torch.distributed as dist
                dist.barrier()
                dist.destroy_process_group()
            return 0
        epoch += 1
    if bar is not None:
        bar.close()
    train_s = time.perf_counter() - t0

    if rank == 0:
        save_training_state(out, net, cfg, opt, sched, scaler, step, sampler_rng, run_meta,
                                    elapsed_s())
        final_meta = {**run_meta, "iters": step, "train_wall_s": round(elapsed_s(), 1)}
        save_checkpoint(str(out / "final.safetensors"), unwrap(net), cfg, final_meta)
        if args.export:
            Path(args.export).parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(args.export, unwrap(net), cfg, final_meta)
            log.info("exported %s (%.1f MB)", args.export, os.path.getsize(args.export) / 1e6)
        log.info("trained %d steps in %.0f s; final checkpoint %s", step, train_s,
                 out / "final.safetensors")
        try:
            from .plots import plot_loss
            plot_loss(out / "train_log.jsonl", out / "loss.png")
        except Exception as e:  # a missing plot must not lose a finished run
            log.warning("loss plot failed: %s", e)
        jsonl.close()
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0 and not args.no_eval:
        from . import evaluate
        eval_argv = ["--checkpoint", str(out / "final.safetensors"), "--data", args.data,
                     "--split", args.val_split, "--out", str(out / f"eval_{args.val_split}"),
                     "--batch-size", str(args.eval_batch_size), "--device", str(device)]
        if args.eval_size:
            eval_argv += ["--size", *map(str, args.eval_size)]
        if args.eval_limit_images:
            eval_argv += ["--limit-images", str(args.eval_limit_images)]
        for spec in args.eval_rename or []:
            eval_argv += ["--rename", spec]
        if args.no_eval_subset:
            eval_argv.append("--no-subset")
        if args.no_progress:
            eval_argv.append("--no-progress")
        log.info("evaluating: lgseg eval %s", " ".join(eval_argv))
        return evaluate.main(eval_argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
