#!/bin/bash
# Stage 19's blends B70 and B85 (PLAN.md candidates 2 and 3), made and scored on the
# development split one after the other on one core while seed 30 trains on the other.
set -eu
cd "$(dirname "$0")/../.."
O=runs/stage19; M=models/lgseg_lite_minilm_rooms.safetensors
S28=runs/stage18/seed28/final.safetensors; S29=runs/stage18/seed29/final.safetensors
mkdir -p $O/b70 $O/b85
.venv/bin/lgseg average $M $S28 $S29 --weights 14 3 3 --out $O/b70/b70.safetensors
.venv/bin/lgseg average $M $S28 $S29 --weights 34 3 3 --out $O/b85/b85.safetensors
runs/stage17/dev_eval.sh $O/b70/b70.safetensors $O/dev_b70
runs/stage17/dev_eval.sh $O/b85/b85.safetensors $O/dev_b85
