"""How big the label sets are that multi-source training asks, and how often one concept is
asked alone (the single-label query that `lgseg eval` scores), for batches of B whole frames
of the given sources. Present concepts are those of whole frames, an upper bound on a crop's.

    .venv/bin/python tools/label_set_stats.py runs/pl/camvid_fine:0.45 runs/pl/indoor:0.55 \
        --split s4train --batch 4 16 --alone-prob 0 0.15

Prints JSON: per setting, the share of batches with one name (K = 1) and the mean K."""
import argparse
import json
import random

import numpy as np

from lgseg_ros.train.datasets import read_label
from lgseg_ros.train.multisource import (MultiSourceDataset, MultiSourceLabelSampler,
                                         SourceSpec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sources", nargs="+", help="DATA:SHARE, as lgseg train --source")
    p.add_argument("--split", default="train")
    p.add_argument("--batch", type=int, nargs="+", default=[4, 16])
    p.add_argument("--alone-prob", type=float, nargs="+", default=[0.0])
    p.add_argument("--full-prob", type=float, default=0.1)
    p.add_argument("--frames", type=int, default=120, help="frames read per source")
    p.add_argument("--draws", type=int, default=4000)
    args = p.parse_args()
    ds = MultiSourceDataset([SourceSpec.parse(s) for s in args.sources], args.split, cache=False)
    rng = np.random.default_rng(0)
    present = []                  # per source: the chain ids of each frame read
    for part in ds.parts:
        frames = []
        for i in rng.choice(len(part), size=min(args.frames, len(part)), replace=False):
            label = read_label(part.pairs[i][1])
            frames.append({int(g) for g in part.lut[np.unique(label)] if g != 255})
        present.append(frames)
    out = {}
    for alone in args.alone_prob:
        for batch in args.batch:
            pick = random.Random(0)
            sampler = MultiSourceLabelSampler(
                ds.space, ds.askable, {}, full_prob=args.full_prob, max_absent=8,
                distractor_prob=0.3, distractors=[f"d{i}" for i in range(50)],
                negatable=ds.negatable, alone_prob=alone, rng=random.Random(1))
            ks = []
            for _ in range(args.draws):
                src = pick.choices(range(len(ds.shares)), ds.shares)[0]
                frames = pick.sample(present[src], min(batch, len(present[src])))
                ks.append(len(sampler.sample(src, sorted(set().union(*frames))).names))
            out[f"alone_prob {alone}, batch {batch}"] = {
                "K=1 share": round(float(np.mean(np.equal(ks, 1))), 4),
                "mean K": round(float(np.mean(ks)), 2)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
