"""One validation path for label sets, shared by the service, the parameter and the CLI.

A label set is an ordered tuple of names; ids are positions (labels[0] -> 0). Validation
either returns the normalised tuple or raises ``LabelSetError`` with a message a human
can act on; callers keep their old set on error.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Sequence

# 255 is the unlabeled value of a mono8 mask; above 254 labels masks go 16-bit, whose
# unlabeled value is 65535. 1024 keeps the per-pixel work and topic count sane.
# CamVid's 11 evaluation classes in id order: what the shipped checkpoint was trained and
# evaluated on, the node's default label set, and the demo's first set.
CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign symbol",
                  "fence", "car", "pedestrian", "bicyclist")

MAX_LABELS = 1024
MAX_LABEL_CHARS = 64
UNLABELED_8 = 255
UNLABELED_16 = 65535


class LabelSetError(ValueError):
    """A label set that cannot be served; the message says why."""


def normalize_label(name: str) -> str:
    """Case-fold, NFKC-normalise and collapse whitespace: 'Traffic  Light' -> 'traffic light'."""
    text = unicodedata.normalize("NFKC", name)
    text = " ".join(text.replace("_", " ").split())
    return text.casefold()


def validate_labels(labels: Iterable[object], max_labels: int = MAX_LABELS) -> tuple[str, ...]:
    """Return the normalised label tuple or raise LabelSetError."""
    if isinstance(labels, (str, bytes)):
        raise LabelSetError("labels must be a list of strings, not a single string")
    try:
        items = list(labels)
    except TypeError:
        raise LabelSetError(f"labels must be a list of strings, got {type(labels).__name__}") from None
    if not items:
        raise LabelSetError("empty label set: give at least one label")
    if len(items) > max_labels:
        raise LabelSetError(f"{len(items)} labels is more than the maximum of {max_labels}")
    out: list[str] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(items):
        if not isinstance(raw, str):
            raise LabelSetError(f"label {i} is {type(raw).__name__} {raw!r}, not a string")
        name = normalize_label(raw)
        if not name:
            raise LabelSetError(f"label {i} is blank")
        if len(name) > MAX_LABEL_CHARS:
            raise LabelSetError(
                f"label {i} has {len(name)} characters, more than the maximum of {MAX_LABEL_CHARS}")
        if any(unicodedata.category(c).startswith("C") for c in name):
            raise LabelSetError(f"label {i} {raw!r} contains control characters")
        if name in seen:
            raise LabelSetError(
                f"duplicate label {name!r} at positions {seen[name]} and {i} (after normalisation)")
        seen[name] = i
        out.append(name)
    return tuple(out)


def unlabeled_value(num_labels: int) -> int:
    """The unlabeled id of a mask for this many labels (255 for mono8, 65535 for 16UC1)."""
    return UNLABELED_8 if num_labels <= UNLABELED_8 - 1 else UNLABELED_16


def sanitize_topic_token(name: str) -> str:
    """A ROS-name-safe token for a label: 'traffic light' -> 'traffic_light', '3d' -> 'l_3d'."""
    token = re.sub(r"[^0-9a-zA-Z_]+", "_", unicodedata.normalize("NFKD", name))
    token = re.sub(r"_+", "_", token).strip("_").lower() or "label"
    if token[0].isdigit():
        token = "l_" + token
    return token


def topic_tokens(labels: Sequence[str]) -> list[str]:
    """Unique sanitised tokens in label order ('a b' and 'a_b' become 'a_b' and 'a_b_2')."""
    tokens: list[str] = []
    used: set[str] = set()
    for name in labels:
        base = sanitize_topic_token(name)
        token, n = base, 2
        while token in used:
            token, n = f"{base}_{n}", n + 1
        used.add(token)
        tokens.append(token)
    return tokens
