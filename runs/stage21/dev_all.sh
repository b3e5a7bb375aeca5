#!/bin/bash
# Stage 21's development-split scores (PLAN.md), after seed 32 has finished: the two blends
# with 14b, then seed 32, E50 and E70 side by side (three processes on the two cores).
set -eu
cd "$(dirname "$0")/../.."
O=runs/stage21; R=$O/r14b.safetensors
mkdir -p $O/e50 $O/e70
.venv/bin/lgseg average $R $O/seed32/final.safetensors --weights 1 1 --out $O/e50/e50.safetensors
.venv/bin/lgseg average $R $O/seed32/final.safetensors --weights 7 3 --out $O/e70/e70.safetensors
runs/stage20/dev_eval.sh $O/seed32/final.safetensors $O/dev_s32 > $O/dev_s32.log 2>&1 &
runs/stage20/dev_eval.sh $O/e50/e50.safetensors $O/dev_e50 > $O/dev_e50.log 2>&1 &
runs/stage20/dev_eval.sh $O/e70/e70.safetensors $O/dev_e70 > $O/dev_e70.log 2>&1 &
wait
for n in s32 e50 e70; do echo "$n $(tail -1 $O/dev_$n.log)"; done
