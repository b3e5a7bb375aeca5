#!/bin/bash
# Stage 20's development-split scores (PLAN.md), after seed 31 has finished: the two blends,
# then seed 31, D50 and D70 side by side (three processes on the two cores, nothing else).
set -eu
cd "$(dirname "$0")/../.."
O=runs/stage20; R=models/lgseg_lite_minilm_rooms.safetensors
mkdir -p $O/d50 $O/d70
.venv/bin/lgseg average $R $O/seed31/final.safetensors --weights 1 1 --out $O/d50/d50.safetensors
.venv/bin/lgseg average $R $O/seed31/final.safetensors --weights 7 3 --out $O/d70/d70.safetensors
$O/dev_eval.sh $O/seed31/final.safetensors $O/dev_s31 > $O/dev_s31.log 2>&1 &
$O/dev_eval.sh $O/d50/d50.safetensors $O/dev_d50 > $O/dev_d50.log 2>&1 &
$O/dev_eval.sh $O/d70/d70.safetensors $O/dev_d70 > $O/dev_d70.log 2>&1 &
wait
for n in 14b s31 d50 d70; do echo "$n $(tail -1 $O/dev_$n.log)"; done
