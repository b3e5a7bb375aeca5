#!/bin/bash
# Stage 18's development-split scores (PLAN.md): the four candidates, two at a time (one core
# each), with stage 17's dev_eval.sh. Run after seeds 28 and 29 and soups.sh have finished.
set -eu
cd "$(dirname "$0")/../.."
D=runs/stage17/dev_eval.sh; O=runs/stage18
( $D $O/seed28/final.safetensors $O/dev_s28; $D $O/w17/w17.safetensors $O/dev_w17 ) &
( $D $O/seed29/final.safetensors $O/dev_s29; $D $O/w18/w18.safetensors $O/dev_w18 ) &
wait
for n in s28 s29 w17 w18; do
  .venv/bin/python - "$O/dev_$n" <<'PY'
import json, sys
d = sys.argv[1]
din = json.load(open(f"{d}/d_in.json"))["together"]["mean_iou"]
cv = json.load(open(f"{d}/d_cv/metrics.json"))
print(f"{d}: D_in {din:.1f}  D_cv {100 * cv['full']['miou']:.2f}  D_ratio {cv['subset_queries']['ratio_to_full']:.3f}")
PY
done
