#!/bin/bash
# Stage 19's remaining development-split scores (PLAN.md), after seed 30 has finished:
# seed 30 and B70c side by side (one core each), then the table of all four candidates.
set -eu
cd "$(dirname "$0")/../.."
O=runs/stage19; D=runs/stage17/dev_eval.sh
mkdir -p $O/b70c
.venv/bin/lgseg average models/lgseg_lite_minilm_rooms.safetensors \
  runs/stage18/seed28/final.safetensors runs/stage18/seed29/final.safetensors \
  $O/seed30/final.safetensors --weights 7 1 1 1 --out $O/b70c/b70c.safetensors
$D $O/seed30/final.safetensors $O/dev_s30 &
$D $O/b70c/b70c.safetensors $O/dev_b70c &
wait
for n in s30 b70 b85 b70c; do
  .venv/bin/python - "$O/dev_$n" <<'PY'
import json, sys
d = sys.argv[1]
din = json.load(open(f"{d}/d_in.json"))["together"]["mean_iou"]
cv = json.load(open(f"{d}/d_cv/metrics.json"))
print(f"{d}: D_in {din:.1f}  D_cv {100 * cv['full']['miou']:.2f}  D_ratio {cv['subset_queries']['ratio_to_full']:.3f}")
PY
done
