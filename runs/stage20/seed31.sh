#!/bin/bash
# Stage 20 (session 19, CPU, no GPU lent), seed 31: stage 18's command (runs/stage18/seed28.sh,
# --alone-prob 0.15) with --concept-weight door=3: concept-freq gave "door" 0.51 (the indoor
# photos hold plenty of door pixels) while the model still finds few doors. 60 minutes on one
# thread; the other core does the session's other work. Plan and rule: runs/stage20/PLAN.md.
set -eu
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE nice -n 5 .venv/bin/lgseg train \
  --init models/lgseg_lite_minilm_rooms.safetensors \
  --source runs/pl/camvid_fine:0.45 --source runs/pl/indoor:0.55 --train-split s4train \
  --time-budget 60 --iters 6000 --batch-size 4 --crop 320 384 --scale 0.6 1.4 \
  --lr 1e-4 --backbone-lr-mult 0.1 --warmup 30 --class-weights concept-freq \
  --class-weight-power 0.5 --class-weight-clip 0.5 3.0 --concept-weight door=3 \
  --synonym-prob 0.2 --distractor-prob 0.3 --full-prob 0.1 --max-absent 8 --alone-prob 0.15 \
  --distill models/lgseg_lite_minilm.safetensors --distill-sources runs/pl/camvid_fine \
  --distill-weight 2 --distill-temperature 2 \
  --threads 1 --workers 1 --ckpt-every 50 --log-every 10 --no-progress --no-eval \
  --seed 31 --out runs/stage20/seed31 $( [ -f runs/stage20/seed31/last_state.pt ] && echo --resume ) \
  > runs/stage20/seed31.log 2>&1
