#!/bin/bash
# Stage 21 (session 20, CPU, no GPU lent), seed 32: stage 20's seed 31 (runs/stage20/seed31.sh,
# --concept-weight door=3) with --alone-prob 0.3 instead of 0.15: seed 31 found 2.8x the door
# regions but its single-label ratio fell to 0.876; more single-concept batches are meant to
# keep the ratio without blending the gain away. 60 minutes on one thread; the other core
# does the session's other work. Plan and rule: runs/stage21/PLAN.md.
set -eu
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE nice -n 5 .venv/bin/lgseg train \
  --init runs/stage21/r14b.safetensors \
  --source runs/pl/camvid_fine:0.45 --source runs/pl/indoor:0.55 --train-split s4train \
  --time-budget 60 --iters 6000 --batch-size 4 --crop 320 384 --scale 0.6 1.4 \
  --lr 1e-4 --backbone-lr-mult 0.1 --warmup 30 --class-weights concept-freq \
  --class-weight-power 0.5 --class-weight-clip 0.5 3.0 --concept-weight door=3 \
  --synonym-prob 0.2 --distractor-prob 0.3 --full-prob 0.1 --max-absent 8 --alone-prob 0.3 \
  --distill models/lgseg_lite_minilm.safetensors --distill-sources runs/pl/camvid_fine \
  --distill-weight 2 --distill-temperature 2 \
  --threads 1 --workers 1 --ckpt-every 50 --log-every 10 --no-progress --no-eval \
  --seed 32 --out runs/stage21/seed32 $( [ -f runs/stage21/seed32/last_state.pt ] && echo --resume ) \
  > runs/stage21/seed32.log 2>&1
