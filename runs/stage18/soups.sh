#!/bin/bash
# Stage 18's WiSE-FT blends of 14b with its fine-tuned descendants (PLAN.md, candidates 2 and 3).
# Weights fixed before any of them was scored: half the parent, half the recipe's seeds.
set -eu
cd "$(dirname "$0")/../.."
mkdir -p runs/stage18/w17 runs/stage18/w18
.venv/bin/lgseg average models/lgseg_lite_minilm_rooms.safetensors \
  runs/stage16/run/final.safetensors runs/stage16/seed25/final.safetensors \
  runs/stage17/seed26/final.safetensors runs/stage17/seed27/final.safetensors \
  --weights 4 1 1 1 1 --out runs/stage18/w17/w17.safetensors
if [ -f runs/stage18/seed28/final.safetensors ] && [ -f runs/stage18/seed29/final.safetensors ]; then
  .venv/bin/lgseg average models/lgseg_lite_minilm_rooms.safetensors \
    runs/stage18/seed28/final.safetensors runs/stage18/seed29/final.safetensors \
    --weights 2 1 1 --out runs/stage18/w18/w18.safetensors
fi
