#!/bin/bash
# RULE.md step 4: seeds 26 and 27 on the evaluation data, for the recipe's mean and spread
# over four seeds (seeds 24 and 25: runs/eval_stage16, and the stage-16 seed-25 commands).
# Run after the choice was recorded (none was eligible). The rule's two commands of
# tools/evaluate_rooms_model.sh per seed, one lane per seed.
set -u
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
ROOM=wall,floor,ceiling,bed,window,cabinet,door,table,chair,sink,toilet,mirror
for s in 26 27; do (
  O=runs/eval_stage17_seed$s; mkdir -p $O; export LGSEG_ARTEFACTS=$PWD/$O/artefacts
  C=runs/stage17/seed$s/final.safetensors
  .venv/bin/lgseg eval --checkpoint $C --data camvid --split val --threads 1 --no-progress --out $O/camvid_val > $O/camvid_val.log 2>&1
  .venv/bin/lgseg agreement --checkpoint $C --data runs/pl/indoor --split s4eval_photos --words $ROOM --regions door --threads 1 --out $O/indoor_photos.json > /dev/null 2>&1
) & done
wait
