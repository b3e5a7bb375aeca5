#!/bin/bash
# Stage 16 (session 15, CPU, no GPU lent): does a lower-LR continuation lift both sides?
# The one step in this card's history that raised CamVid and the room classes together
# was a lower learning rate on the same recipe (stage 5b -> stage 6: CamVid +6.5, indoor
# +0.8, door found 7.8 -> 27.5 %). 14b (shipped) was trained at LR 3e-4; this run
# continues it with 14b's recipe unchanged except --lr 1e-4 (and no warm-up restart
# beyond 30 steps); seed 24; 80 training minutes; one torch thread (the other core serves
# the session's audits and tests).
#
# Shipping rule, fixed before training (stage 15's four lines):
#   ships if CamVid val >= 64.0, single-label ratio >= 0.95, indoor photos (12 words)
#   > 42.2 (14b's) and door found share >= 16.7 % (14b's), all from
#   tools/evaluate_rooms_model.sh (first half); otherwise 14b stays.
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
  --seed 24 --out runs/stage16/run $( [ -f runs/stage16/run/last_state.pt ] && echo --resume ) \
  > runs/stage16/run.log 2>&1
