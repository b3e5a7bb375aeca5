#!/bin/bash
# Stage 21b (PLAN.md): G70 and G60, D85 blended with seed 32, scored side by side.
set -eu
cd "$(dirname "$0")/../.."
O=runs/stage21; D=runs/stage20/d85/d85.safetensors
mkdir -p $O/g70 $O/g60
.venv/bin/lgseg average $D $O/seed32/final.safetensors --weights 7 3 --out $O/g70/g70.safetensors
.venv/bin/lgseg average $D $O/seed32/final.safetensors --weights 3 2 --out $O/g60/g60.safetensors
runs/stage20/dev_eval.sh $O/g70/g70.safetensors $O/dev_g70 > $O/dev_g70.log 2>&1 &
runs/stage20/dev_eval.sh $O/g60/g60.safetensors $O/dev_g60 > $O/dev_g60.log 2>&1 &
wait
for n in g70 g60; do echo "$n $(tail -1 $O/dev_$n.log)"; done
