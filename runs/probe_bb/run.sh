#!/bin/bash
# Session 14: does a larger ImageNet backbone give the head better features? Frozen-backbone
# probe (fusion head, 3 seeds, 1000 steps), scored on the last 20 % of CamVid train (held
# out of the probe; val is not looked at), Lite0 against Lite1 (Lite2, at the FLOPs limit, was
# dropped for time: the two cores were shared with stage 15).
cd "$(dirname "$0")/../.."
for c in lite-minilm lite1-minilm; do
  OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE nice -n 5 .venv/bin/python -m lgseg_ros.train.head_probe \
    --heads fusion --seeds 0 1 2 --iters 1000 --score-on train-tail --backbone-config $c \
    --threads 1 --out runs/probe_bb/$c > runs/probe_bb/$c.log 2>&1
done
