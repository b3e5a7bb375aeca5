#!/bin/bash
# Stage 22's development-split scores (PLAN.md) for the GPU pair and its two blends with D85,
# two processes at a time on the two cores. Weights: runs/stage22/{a,b}.safetensors, joined
# from the device call's parts (tools/gpu_train_rooms.sh join, sha256 checked).
set -eu
cd "$(dirname "$0")/../.."
O=runs/stage22; D85=models/lgseg_lite_minilm_rooms.safetensors
.venv/bin/lgseg average $D85 $O/a.safetensors --weights 1 1 --out $O/ha.safetensors
.venv/bin/lgseg average $D85 $O/b.safetensors --weights 1 1 --out $O/hb.safetensors
for pair in "a b" "ha hb"; do
  for n in $pair; do
    runs/stage20/dev_eval.sh $O/$n.safetensors $O/dev_$n > $O/dev_$n.log 2>&1 &
  done
  wait
done
for n in a b ha hb; do echo "$n $(tail -1 $O/dev_$n.log)"; done
