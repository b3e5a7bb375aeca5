#!/bin/bash
# Every number of the rooms model card (models/README.md), two lanes (one per core).
# Usage: tools/evaluate_rooms_model.sh CHECKPOINT OUTDIR   (after the pseudo-label commands
# and split lists in the card; about 15 min on 2 idle cores)
set -u
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE
C=$1; O=$2; mkdir -p $O
# The candidate's ONNX files go in its own folder, not models/artefacts: a candidate that is
# not shipped must leave the install's artefacts (and their size) as they were.
export LGSEG_ARTEFACTS=$PWD/$O/artefacts
L=".venv/bin/lgseg"
ROOM=wall,floor,ceiling,bed,window,cabinet,door,table,chair,sink,toilet,mirror
CAMVID="sky,building,pole,road,pavement,tree,sign symbol,fence,car,pedestrian,bicyclist"
FINE="wall,window,door,bus,truck,van,traffic light,street light,grass,bicycle,motorcycle,road marking"
UNSEEN="sofa=settee,toilet=lavatory,sink=washbowl,curtain=drapes,door=entrance,floor=parquet,countertop=worktop,bed=mattress,plant=fern,wall=partition,lamp=lampshade,blanket=duvet,painting=artwork,table=tabletop,window=casement,television=telly"
UWORDS="sofa,toilet,sink,curtain,door,floor,countertop,bed,plant,wall,lamp,blanket,painting,table,window,television"
(
 $L eval --checkpoint $C --data camvid --split val --threads 1 --no-progress --out $O/camvid_val > $O/camvid_val.log 2>&1
 $L eval --checkpoint $C --data camvid --split val --threads 1 --no-progress --no-subset --no-probes --rename dev --rename heldout --anchor-floor 0.6 --out $O/camvid_val_floor06 > $O/camvid_val_floor06.log 2>&1
) &
(
 $L agreement --checkpoint $C --data runs/pl/indoor --split s4eval_photos --words $ROOM --regions door --sheet $O/door_sheet.png --threads 1 --out $O/indoor_photos.json > /dev/null 2>&1
 $L agreement --checkpoint $C --data runs/pl/indoor --split s4eval_seq --words $ROOM --regions door --threads 1 --out $O/indoor_seq.json > /dev/null 2>&1
 $L agreement --checkpoint $C --data runs/pl/indoor --split s4eval_photos --words door --regions door --threads 1 --out $O/indoor_door_alone.json > /dev/null 2>&1
 $L agreement --checkpoint $C --data runs/pl/indoor --split s4eval_photos --words "$UWORDS" --ask-as "$UNSEEN" --threads 1 --out $O/indoor_unseen.json > /dev/null 2>&1
 $L agreement --checkpoint $C --data runs/pl/indoor --split s4eval_photos --words "$UWORDS" --threads 1 --out $O/indoor_unseen_canonical.json > /dev/null 2>&1
 $L agreement --checkpoint $C --data runs/pl/camvid_val_eval --split train --words "$FINE" --context "$CAMVID" --threads 1 --out $O/fine_added.json > /dev/null 2>&1
 $L agreement --checkpoint $C --data runs/pl/camvid_val_eval --split train --words "$FINE" --alone --threads 1 --out $O/fine_alone.json > /dev/null 2>&1
) &
wait
echo done
# int8 against fp32 (both ONNX Runtime): CamVid val, and all indoor concepts at once
$L artefacts --checkpoint $C --size 360 480 --size 384 480 -o "$LGSEG_ARTEFACTS" > $O/artefacts.log 2>&1
(
 $L eval --checkpoint $C --data camvid --split val --precision fp32 --no-subset --no-probes --rename heldout --threads 1 --no-progress --grid 0 --out $O/onnx_fp32_val > /dev/null 2>&1
 $L eval --checkpoint $C --data runs/pl/indoor --split s4eval_photos --size 384 480 --batch-size 1 --precision fp32 --no-subset --no-probes --threads 1 --no-progress --grid 0 --out $O/onnx_fp32_indoor > /dev/null 2>&1
) &
(
 $L eval --checkpoint $C --data camvid --split val --precision int8 --no-subset --no-probes --rename heldout --threads 1 --no-progress --grid 0 --out $O/onnx_int8_val > /dev/null 2>&1
 $L eval --checkpoint $C --data runs/pl/indoor --split s4eval_photos --size 384 480 --batch-size 1 --precision int8 --no-subset --no-probes --threads 1 --no-progress --grid 0 --out $O/onnx_int8_indoor > /dev/null 2>&1
) &
wait
echo int8 done
