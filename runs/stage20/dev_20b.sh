#!/bin/bash
# Stage 20b (PLAN.md): D85 and D80, blends nearer 14b, scored side by side on the dev split.
set -eu
cd "$(dirname "$0")/../.."
O=runs/stage20; R=models/lgseg_lite_minilm_rooms.safetensors
mkdir -p $O/d85 $O/d80
.venv/bin/lgseg average $R $O/seed31/final.safetensors --weights 17 3 --out $O/d85/d85.safetensors
.venv/bin/lgseg average $R $O/seed31/final.safetensors --weights 4 1 --out $O/d80/d80.safetensors
$O/dev_eval.sh $O/d85/d85.safetensors $O/dev_d85 > $O/dev_d85.log 2>&1 &
$O/dev_eval.sh $O/d80/d80.safetensors $O/dev_d80 > $O/dev_d80.log 2>&1 &
wait
for n in d85 d80; do echo "$n $(tail -1 $O/dev_$n.log)"; done
