"""One validation path for label sets, shared by the service, the parameter and the CLI.

A label set is an ordered tuple of names; ids are positions (labels[0] -> 0). Validation
either returns the normalised tuple or raises ``LabelSetError`` with a message a human
can act on; callers keep their old set on error.
"""
from __future__ import annotations

import array
import hashlib
import itertools
import re
import unicodedata
from typing import Iterable, Sequence

# CamVid's 11 evaluation classes in id order: what the shipped checkpoint was trained and
# evaluated on, the node's default label set, and the demo's first set.
CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign symbol",
                  "fence", "car", "pedestrian", "bicyclist")

# The frame path's cost grows linearly with K: measured with the shipped model on ONNX
# Runtime, 384x480 network input, 2-core CPU, about 3 MB of memory and 8 ms per frame for
# every label (K=11: 1.24 GB, 0.2 s; K=256: 2.0 GB, 2.2 s; K=512: 2.8 GB, 3.9 s). 256 is
# the largest set that still runs at all on such a machine, and it is one past the 255 a
# mono8 mask can carry, so the 16-bit masks stay reachable.
MAX_LABELS = 256
MAX_LABEL_CHARS = 64
# A raw name this long cannot normalise to MAX_LABEL_CHARS except by collapsing runs of
# whitespace; refusing it before NFKC and casefold bounds the work a hostile request buys.
MAX_RAW_LABEL_CHARS = 1024
# How much of a rejected value a log line or a reply repeats (the rest is summarised).
SHOWN_CHARS = 40
UNLABELED_8 = 255
UNLABELED_16 = 65535


class LabelSetError(ValueError):
    """A label set that cannot be served; the message says why."""


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """repr() of a value cut to ``limit`` characters, with its full length: what a log line
    or a reply may repeat of something a peer sent ('label of 1 MB' must not be 1 MB of log).
    A list is shown item by item, each item cut, until ``limit`` characters: the repr of 40
    items of 400 KB each made a 64 MB refusal message (probe round 6)."""
    if isinstance(value, (list, tuple)):
        parts, size = [], 0
        for item in value:
            if size >= limit:
                break
            part = (f"<{type(item).__name__} of {len(item)}>" if isinstance(item, (list, tuple))
                    else shown(item, limit))
            parts.append(part)
            size += len(part) + 2
        text = "[" + ", ".join(parts) + "]"
        if len(parts) == len(value) and len(text) <= limit + 20:
            return text
        return f"{text[:limit]}... ({len(value)} items)"
    if isinstance(value, (str, bytes, bytearray)):
        # repr() of the head, then cut again: an escaped character can take 10 (U+E0001 is
        # '\U000e0001'), so 40 of them made 400 (probe round 8)
        text = repr(value[:limit])
        fits = len(text) <= limit + 20
        if len(value) <= limit and fits:
            return text
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{text if fits else text[:limit]}... ({len(value)} {unit})"
    if isinstance(value, (array.array, memoryview)):
        # rclpy hands array parameters and array fields over as array.array: repr() of all
        # 2,000,000 doubles of one wrongly typed parameter request took 3 s of the executor
        # and 170 MB (probe round 13), so only the head is repr'd
        text = repr(value[:limit].tolist())
        if len(value) <= limit and len(text) <= limit + 20:
            return text
        return f"{text[:limit]}... ({len(value)} items)"
    if isinstance(value, (set, frozenset, dict)):
        # any other container: its first items, each shown as above, never repr() of all
        return shown(list(itertools.islice(iter(value), limit)), limit) + \
            ("" if len(value) <= limit else f" ({len(value)} items)")
    text = repr(value)
    return text if len(text) <= limit + 20 else f"{text[:limit]}... ({len(text)} characters)"


def printable(text: object, limit: int = 200) -> str:
    """A string from a peer made safe for a terminal: control, bidi and other non-printable
    characters as escapes (a fake node's reply must not clear the screen, set the title or
    write the clipboard), cut to ``limit`` characters with its full length."""
    text = str(text)
    # escaped first, then cut: an escape is up to 10 characters (probe round 8)
    safe = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text[:limit])
    if len(text) <= limit and len(safe) <= limit:
        return safe
    return f"{safe[:limit]}... ({len(text)} characters)"


# Variation selectors choose a glyph style ('car' + U+FE0F); they carry no meaning for the text
# encoder and only made look-alike duplicates, so they are dropped.
_VARIATION_SELECTORS = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")
# Letters of other scripts drawn like Latin ones (from Unicode's confusables.txt, the ones
# that look identical in common fonts): 'car' and Cyrillic 'саr' are one label to a reader,
# two to the model. Used only to refuse such duplicates, never to rename a label.
_CONFUSABLES = str.maketrans({
    # Cyrillic
    "а": "a", "с": "c", "ԁ": "d", "е": "e", "һ": "h", "і": "i", "ј": "j", "ӏ": "l", "о": "o",
    "р": "p", "ԛ": "q", "ѕ": "s", "ս": "u", "ѵ": "v", "ԝ": "w", "х": "x", "у": "y", "ё": "ë",
    "ї": "ï", "ɡ": "g",
    # Greek
    "α": "a", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "υ": "u", "χ": "x", "γ": "y",
    # Latin look-alikes
    "ı": "i", "ℓ": "l",
})


# Characters outside category C that are drawn as nothing (Unicode's default-ignorable letters
# and marks, the Hangul fillers, the braille blank): 'car' + U+3164 read as 'car' but encoded
# as an unknown word, and two such blanks made two labels that look empty and alike (audit
# round 15). Checked after normalising, since NFKC maps U+3164 to U+1160.
_BLANK_LETTERS = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u2800\u3164\uffa0")


def normalize_label(name: str) -> str:
    """Case-fold, NFKC-normalise, drop variation selectors and collapse whitespace:
    'Traffic  Light' -> 'traffic light'. Normalising the result again changes nothing."""
    # NFKC again after case-folding: casefold can leave text that NFKC changes ('ß' + U+0301
    # folds to 'ss' + U+0301, which composes to 'sś'), and a second pass (the node's
    # configure, its topic names) then turned two distinct labels into one (audit round 15).
    # Variation selectors first: one between a letter and its accent kept NFKC from composing
    # them, and a second pass, without the selector, did ('a' U+FE0F U+0301 -> 'á').
    text = _VARIATION_SELECTORS.sub("", name)
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(text.replace("_", " ").split())


def label_skeleton(name: str) -> str:
    """What a normalised label looks like: look-alike letters of other scripts mapped to
    Latin ones. Two labels with one skeleton are refused as duplicates."""
    return name.translate(_CONFUSABLES)


def validate_labels(labels: Iterable[object], max_labels: int = MAX_LABELS) -> tuple[str, ...]:
    """Return the normalised label tuple or raise LabelSetError."""
    if isinstance(labels, (str, bytes)):
        raise LabelSetError("labels must be a list of strings, not a single string")
    try:
        if isinstance(labels, (list, tuple)):
            count, items = len(labels), list(labels[:max_labels])
        else:  # an iterator is read no further than one past the limit
            items = list(itertools.islice(labels, max_labels + 1))
            count = len(items)
    except TypeError:
        raise LabelSetError(f"labels must be a list of strings, got {type(labels).__name__}") from None
    if not count:
        raise LabelSetError("empty label set: give at least one label")
    if count > max_labels:
        raise LabelSetError(f"{count} labels is more than the maximum of {max_labels}")
    out: list[str] = []
    seen: dict[str, int] = {}
    skeletons: dict[str, int] = {}
    for i, raw in enumerate(items):
        if not isinstance(raw, str):
            raise LabelSetError(f"label {i} is {type(raw).__name__} {shown(raw)}, not a string")
        if len(raw) > MAX_RAW_LABEL_CHARS:
            raise LabelSetError(f"label {i} {shown(raw)} is longer than the maximum of "
                                f"{MAX_LABEL_CHARS} characters")
        # On the raw text: normalising first would turn a newline or tab into a space.
        # Category C is control, format (zero-width), private-use and unassigned characters.
        bad = next((c for c in raw if unicodedata.category(c).startswith("C")), None)
        if bad is not None:
            raise LabelSetError(f"label {i} {shown(raw)} contains control character "
                                f"U+{ord(bad):04X}; labels are plain words")
        name = normalize_label(raw)
        if not name:
            raise LabelSetError(f"label {i} is blank")
        blank = next((c for c in raw + name if c in _BLANK_LETTERS), None)
        if blank is not None:
            raise LabelSetError(f"label {i} {shown(raw)} contains U+{ord(blank):04X}, a character "
                                f"drawn as nothing; labels are plain words")
        if len(name) > MAX_LABEL_CHARS:
            raise LabelSetError(
                f"label {i} {shown(name)} has {len(name)} characters, more than the maximum "
                f"of {MAX_LABEL_CHARS}")
        if name in seen:
            raise LabelSetError(
                f"duplicate label {name!r} at positions {seen[name]} and {i} (after normalisation)")
        skeleton = label_skeleton(name)
        if skeleton in skeletons and name != out[skeletons[skeleton]]:
            j = skeletons[skeleton]
            odd = next((c for a, c in zip(out[j], name) if a != c), "")
            code = f" (U+{ord(odd):04X} looks like a Latin letter)" if odd else ""
            raise LabelSetError(f"label {i} {shown(name)} looks the same as label {j} "
                                f"{shown(out[j])}{code}; give one of them")
        seen[name] = i
        skeletons.setdefault(skeleton, i)
        out.append(name)
    check_distinct_tokens(out, topic_tokens(out))
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
    return _token(normalize_label(name), 4)


def _token(text: str, digest_bytes: int) -> str:
    # A plain label that itself ends in 8 hex digits ('cafe 2d03c5d6') is hashed too:
    # otherwise it would take the topic of the hashed label it looks like ('café').
    if _PLAIN_LABEL.fullmatch(text) and not _HASH_TAIL.search(text):
        return text.replace(" ", "_")
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_part = "".join(c for c in decomposed if c.isascii())
    slug = re.sub(r"[^0-9a-z]+", "_", ascii_part).strip("_") or "label"
    if slug[0].isdigit():
        slug = "l_" + slug
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=digest_bytes).hexdigest()
    return f"{slug}_{digest}"


# Any last word of 8 or more hex digits: 'label 1b148366fcce6065' had the 16-digit form of a
# hashed label's token, which the old pattern (8 or 8 + 8 digits) let through (audit round 18).
_HASH_TAIL = re.compile(r" [0-9a-f]{8,}$")


def topic_tokens(labels: Sequence[str]) -> list[str]:
    """Tokens in label order; unique for any valid (deduplicated) set, and each a function of
    its label and the set, never of the order: labels whose tokens would collide (a 32-bit
    hash collision, which no real set has shown) all get 16 hex digits instead of 8."""
    texts = [normalize_label(name) for name in labels]
    tokens = [_token(t, 4) for t in texts]
    counts: dict[str, int] = {}
    for token in tokens:
        counts[token] = counts.get(token, 0) + 1
    return [_token(t, 8) if counts[tok] > 1 else tok for t, tok in zip(texts, tokens)]


def check_distinct_tokens(labels: Sequence[str], tokens: Sequence[str]) -> None:
    """Raise LabelSetError naming two labels whose class-mask topics would be one. A 64-bit
    collision is work an attacker can buy, and two labels on one topic put two different
    masks on it every frame (audit round 18, with a 32-bit collision and a third label)."""
    first: dict[str, int] = {}
    for i, token in enumerate(tokens):
        j = first.setdefault(token, i)
        if j != i:
            raise LabelSetError(
                f"labels {j} {shown(labels[j])} and {i} {shown(labels[i])} would share the "
                f"class-mask topic token {shown(token, 90)}; rename one of them")
