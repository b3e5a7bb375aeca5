#!/bin/bash
# Stage 22d (runs/stage22/PLAN.md): runs/stage18/rule_eval.sh with the node's
# single_label_margin 0.75 on the CamVid queries (one-name sets only) and the lines moved to
# D85's results. Usage: rule_eval_m.sh CHECKPOINT OUTDIR. Run only after the choice is recorded.
cd "$(dirname "$0")/../.."
INDOOR_LINE=42.9 DOOR_LINE=20.6 EVAL_EXTRA="--single-label-margin 0.75" \
  exec runs/stage18/rule_eval.sh "$@"
