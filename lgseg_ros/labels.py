"""One validation path for label sets, shared by the service, the parameter and the CLI.

A label set is an ordered tuple of names; ids are positions (labels[0] -> 0). Validation
either returns the normalised tuple or raises ``LabelSetError`` with a message a human
can act on; callers keep their old set on error.
"""
from __future__ import annotations

import hashlib
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


_PLAIN_LABEL = re.compile(r"[a-z][a-z0-9]*( [a-z0-9]+)*")


def sanitize_topic_token(name: str) -> str:
    """The ROS-name token of a label's topic, a function of the label alone.

    A plain label (lower-case ASCII letters and digits, single spaces, starting with a
    letter: what validation makes of 'Traffic  light' or 'traffic_light') maps to itself
    with '_' for ' ': 'traffic light' -> 'traffic_light'. Any other label keeps its
    readable ASCII part and gets 8 hex digits of a fixed hash of the whole name, so
    'café' -> 'cafe_<hash>', an emoji -> 'label_<hash>', '3d box' -> 'l_3d_box_<hash>':
    the same topic for the same label in every set, order and run, and distinct labels on
    distinct topics (without the hash 'café' and 'cafe', or every emoji, would collide and
    be told apart only by their position in the set).
    """
    text = normalize_label(name)
    if _PLAIN_LABEL.fullmatch(text):
        return text.replace(" ", "_")
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_part = "".join(c for c in decomposed if c.isascii())
    slug = re.sub(r"[^0-9a-z]+", "_", ascii_part).strip("_") or "label"
    if slug[0].isdigit():
        slug = "l_" + slug
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=4).hexdigest()
    return f"{slug}_{digest}"


def topic_tokens(labels: Sequence[str]) -> list[str]:
    """Tokens in label order; unique for any valid (deduplicated) set. The numbered suffix
    is a guard for a hash collision between two labels, which no real set has shown."""
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
