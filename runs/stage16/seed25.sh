#!/bin/bash
# Stage 16, second seed (started 3 minutes after run.sh, beside it, one torch thread each):
# the same command with --seed 25, to measure how far a seed alone moves these numbers
# (stage 15's card called a point "within what a seed moves" without having measured it).
# NOT a shipping candidate: the rule in run.sh applies to run.sh's seed-24 run only, so
# that no choice between seeds is made on the evaluation data.
set -eu
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE nice -n 5 .venv/bin/lgseg train \
  --init models/lgseg_lite_minilm_rooms.safetensors \
  --source runs/pl/camvid_fine:0.45 --source runs/pl/indoor:0.55 --train-split s4train \
  --time-budget 80 --iters 6000 --batch-size 4 --crop 320 384 --scale 0.6 1.4 \
  --lr 1e-4 --backbone-lr-mult 0.1 --warmup 30 --class-weights concept-freq \
  --class-weight-power 0.5 --class-weight-clip 0.5 3.0 \
  --synonym-prob 0.2 --distractor-prob 0.3 --full-prob 0.1 --max-absent 8 \
  --distill models/lgseg_lite_minilm.safetensors --distill-sources runs/pl/camvid_fine \
  --distill-weight 1 --distill-temperature 2 \
  --threads 1 --workers 1 --ckpt-every 50 --log-every 10 --no-progress --no-eval \
  --seed 25 --out runs/stage16/seed25 $( [ -f runs/stage16/seed25/last_state.pt ] && echo --resume ) \
  > runs/stage16/seed25.log 2>&1
