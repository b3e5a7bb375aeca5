#!/bin/bash
# Stage 16 soup: the equal-weight average of the two seeds (24 and 25), no training.
# Decided AFTER both seeds' rule numbers were seen (seed 24: CamVid val 57.42, ratio 0.825,
# indoor 45.8, door found 7.8 %; seed 25: 66.15, 0.955, 41.3, 21.6 %): the two runs of one
# recipe from one init ended on opposite sides, so their average is the one setting that
# uses both without choosing between them; weights fixed at 0.5 / 0.5, no other tried.
# The same rule as run.sh (ships if CamVid val >= 64.0, ratio >= 0.95, indoor photos > 42.2,
# door found >= 16.7 %; otherwise 14b stays), with this caveat in the card: the candidate
# was chosen after seeing its parents' numbers on the same evaluation data.
set -eu
cd "$(dirname "$0")/../.."
.venv/bin/lgseg average runs/stage16/run/final.safetensors runs/stage16/seed25/final.safetensors \
  --out runs/stage16/soup/soup.safetensors
