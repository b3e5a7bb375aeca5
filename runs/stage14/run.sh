#!/bin/bash
# Stage 14 (session 13, CPU, no GPU lent): does --alone-prob hold the single-label ratio
# when the rooms model is trained harder? A pair from stage 11 (the shipped rooms model),
# side by side, one torch thread each, identical but for --alone-prob:
#   a: --alone-prob 0.15     b: --alone-prob 0 (the control)
# LR 3e-4 (GPU run A's LR, which lost the ratio: 0.916), 65 training minutes each.
#
# Shipping rule, fixed before training (the same three lines as sessions 11-12):
#   a candidate passes if CamVid val >= 64.0, indoor photos (12 words) >= 42.0 and
#   single-label ratio >= 0.95 (tools/evaluate_rooms_model.sh, first half);
#   if both pass, the one with the higher indoor score ships; if neither, stage 11 stays.
set -eu
cd "$(dirname "$0")/../.."
run() {  # $1 = a|b, $2 = alone-prob
  OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE nice -n 5 .venv/bin/lgseg train \
    --init models/lgseg_lite_minilm_rooms.safetensors \
    --source runs/pl/camvid_fine:0.45 --source runs/pl/indoor:0.55 --train-split s4train \
    --time-budget 65 --iters 6000 --batch-size 4 --crop 320 384 --scale 0.6 1.4 \
    --lr 3e-4 --backbone-lr-mult 0.1 --warmup 30 --class-weights concept-freq \
    --class-weight-power 0.5 --class-weight-clip 0.5 3.0 \
    --synonym-prob 0.2 --distractor-prob 0.3 --full-prob 0.1 --max-absent 8 \
    --alone-prob $2 \
    --distill models/lgseg_lite_minilm.safetensors --distill-sources runs/pl/camvid_fine \
    --distill-weight 1 --distill-temperature 2 \
    --threads 1 --workers 1 --ckpt-every 50 --log-every 10 --no-progress --no-eval \
    --seed 21 --out runs/stage14/$1 $( [ -f runs/stage14/$1/last_state.pt ] && echo --resume ) \
    > runs/stage14/$1.log 2>&1
}
run a 0.15 &
run b 0 &
wait
