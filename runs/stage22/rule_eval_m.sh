#!/bin/bash
# Stage 22d (runs/stage22/PLAN.md): runs/stage18/rule_eval.sh with the node's single_label_margin 0.75 on
# the CamVid queries (one-name sets only) and the lines moved to D85's results; the rule's two commands of tools/evaluate_rooms_model.sh (one per
# core). Usage: rule_eval.sh CHECKPOINT OUTDIR. Run only after the choice is recorded.
set -u
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
C=$1; O=$2; mkdir -p $O; export LGSEG_ARTEFACTS=$PWD/$O/artefacts
ROOM=wall,floor,ceiling,bed,window,cabinet,door,table,chair,sink,toilet,mirror
.venv/bin/lgseg eval --checkpoint $C --data camvid --split val --threads 1 --no-progress --single-label-margin 0.75 --out $O/camvid_val > $O/camvid_val.log 2>&1 &
.venv/bin/lgseg agreement --checkpoint $C --data runs/pl/indoor --split s4eval_photos --words $ROOM --regions door --threads 1 --out $O/indoor_photos.json > /dev/null 2>&1 &
wait
.venv/bin/python - "$O" <<'PY'
import json, sys
o = sys.argv[1]
cv = json.load(open(f"{o}/camvid_val/metrics.json"))
ind = json.load(open(f"{o}/indoor_photos.json"))
miou, ratio = 100 * cv["full"]["miou"], cv["subset_queries"]["ratio_to_full"]
room, door = ind["together"]["mean_iou"], ind["regions"]["door"]
lines = {"CamVid val >= 64.0": miou >= 64.0, "single-label ratio >= 0.95": ratio >= 0.95,
         "indoor photos > 42.9": room > 42.9, "door found >= 20.6 %": door["found_share"] >= 20.6}
print(json.dumps({"camvid_val": round(miou, 2), "ratio": round(ratio, 3), "indoor": round(room, 1),
                  "door_found": door["found_share"], "door_precision": door["pixel_precision"],
                  "lines": lines, "ships": all(lines.values())}))
PY
