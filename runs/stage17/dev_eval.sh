#!/bin/bash
# The development split of RULE.md for one checkpoint: D_in (indoor_dev, 12 room words) and
# D_cv / D_ratio (CamVid train: forgetting only). Usage: dev_eval.sh CKPT OUTDIR
set -eu
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
C=$1; O=$2; mkdir -p $O
export LGSEG_ARTEFACTS=$PWD/$O/artefacts
ROOM=wall,floor,ceiling,bed,window,cabinet,door,table,chair,sink,toilet,mirror
nice -n 0 .venv/bin/lgseg agreement --checkpoint $C --data runs/pl/indoor_dev --split train \
  --words $ROOM --threads 1 --out $O/d_in.json > $O/d_in.log 2>&1
nice -n 0 .venv/bin/lgseg eval --checkpoint $C --data camvid --split train --no-probes \
  --rename synonyms --threads 1 --no-progress --grid 0 --out $O/d_cv > $O/d_cv.log 2>&1
