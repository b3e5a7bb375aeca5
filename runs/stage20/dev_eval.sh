#!/bin/bash
# Stage 20's development score for one checkpoint: runs/stage17/dev_eval.sh's two commands,
# the indoor one with --regions door (door regions found on indoor_dev, 90 of its 225 photos
# from doordetect/). Usage: dev_eval.sh CKPT OUTDIR
set -eu
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
C=$1; O=$2; mkdir -p $O
export LGSEG_ARTEFACTS=$PWD/$O/artefacts
ROOM=wall,floor,ceiling,bed,window,cabinet,door,table,chair,sink,toilet,mirror
.venv/bin/lgseg agreement --checkpoint $C --data runs/pl/indoor_dev --split train \
  --words $ROOM --regions door --threads 1 --out $O/d_in.json > $O/d_in.log 2>&1
.venv/bin/lgseg eval --checkpoint $C --data camvid --split train --no-probes \
  --rename synonyms --threads 1 --no-progress --grid 0 --out $O/d_cv > $O/d_cv.log 2>&1
.venv/bin/python - "$O" <<'PY'
import json, sys
o = sys.argv[1]
d_in, cv = json.load(open(f"{o}/d_in.json")), json.load(open(f"{o}/d_cv/metrics.json"))
door = d_in["regions"]["door"]
print(json.dumps({"D_in": round(d_in["together"]["mean_iou"], 1),
                  "D_cv": round(100 * cv["full"]["miou"], 2),
                  "D_ratio": round(cv["subset_queries"]["ratio_to_full"], 3),
                  "D_door_found": door["found_share"], "D_door_precision": door["pixel_precision"]}))
PY
