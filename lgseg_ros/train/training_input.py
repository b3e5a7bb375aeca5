"""What may enter training: never a frame, label or pseudo-label of an evaluation split.

CamVid's val split is where every reported number is measured and its test split is held
out; the hold-out lists of `lgseg pseudo-label` keep photos aside for the same reason. One
guard for every way data enters training (`lgseg train --data/--source/--replay` and
`lgseg pack-data`), so that no path is left open by accident.
"""
from __future__ import annotations

from pathlib import Path

EVALUATION_SPLIT_WORDS = ("val", "test", "hold", "eval")
EVALUATION_ONLY_MARKER = "EVALUATION_ONLY"


def refuse_evaluation_split(split: str, option: str = "--train-split") -> None:
    """A split whose name says evaluation (val, test, holdout, eval) is refused by name."""
    low = str(split).lower()
    if any(w in low for w in EVALUATION_SPLIT_WORDS):
        raise SystemExit(f"{option} {split}: looks like an evaluation split (val, test, "
                         "holdout, eval); training input never comes from one")


def check_training_source(data: str, option: str = "--source") -> None:
    """A folder written by `lgseg pseudo-label --for-evaluation` holds labels of evaluation
    frames; it is refused whatever split is asked of it."""
    if (Path(str(data)) / EVALUATION_ONLY_MARKER).exists():
        raise SystemExit(f"{option} {data} holds labels of evaluation frames "
                         "(lgseg pseudo-label --for-evaluation): never training input")
