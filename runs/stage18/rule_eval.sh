#!/bin/bash
# PLAN.md step 3: the chosen candidate (if any) against stage 15's four lines on the
# evaluation data, with the rule's two commands of tools/evaluate_rooms_model.sh (one per
# core). Usage: rule_eval.sh CHECKPOINT OUTDIR. Run only after the choice is recorded.
# Later stages reuse it with their own lines and options (runs/stage22/rule_eval_m.sh):
# INDOOR_LINE, DOOR_LINE (default stage 15's 42.2 and 16.7) and EVAL_EXTRA (more options
# for the CamVid command).
set -u
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
C=$1; O=$2; mkdir -p $O; export LGSEG_ARTEFACTS=$PWD/$O/artefacts
export INDOOR_LINE=${INDOOR_LINE:-42.2} DOOR_LINE=${DOOR_LINE:-16.7}
ROOM=wall,floor,ceiling,bed,window,cabinet,door,table,chair,sink,toilet,mirror
.venv/bin/lgseg eval --checkpoint $C --data camvid --split val --threads 1 --no-progress ${EVAL_EXTRA:-} --out $O/camvid_val > $O/camvid_val.log 2>&1 &
.venv/bin/lgseg agreement --checkpoint $C --data runs/pl/indoor --split s4eval_photos --words $ROOM --regions door --threads 1 --out $O/indoor_photos.json > /dev/null 2>&1 &
wait
.venv/bin/python - "$O" <<'PY'
import json, os, sys
o = sys.argv[1]
room_line, door_line = float(os.environ["INDOOR_LINE"]), float(os.environ["DOOR_LINE"])
cv = json.load(open(f"{o}/camvid_val/metrics.json"))
ind = json.load(open(f"{o}/indoor_photos.json"))
miou, ratio = 100 * cv["full"]["miou"], cv["subset_queries"]["ratio_to_full"]
room, door = ind["together"]["mean_iou"], ind["regions"]["door"]
lines = {"CamVid val >= 64.0": miou >= 64.0, "single-label ratio >= 0.95": ratio >= 0.95,
         f"indoor photos > {room_line}": room > room_line,
         f"door found >= {door_line} %": door["found_share"] >= door_line}
print(json.dumps({"camvid_val": round(miou, 2), "ratio": round(ratio, 3), "indoor": round(room, 1),
                  "door_found": door["found_share"], "door_precision": door["pixel_precision"],
                  "lines": lines, "ships": all(lines.values())}))
PY
