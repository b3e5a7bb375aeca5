"""What a word means to the model: each label's closest trained name and a grounding score.

A label enters the network only as a text embedding, so the model can segment a word only
as well as that embedding lies near the names it was trained on. The report compares a
label's embedding (same encoder, same template) with every name the checkpoint records
in its metadata (``vocabulary``: trained class -> names it was trained under; older
checkpoints record only ``labels``, the class names) and with the ``distractors`` it was
trained to leave empty, and returns the nearest one with the cosine similarity.

Anchoring (``anchor``): the image network reads the names it was trained on far better
than their neighbours in the text space; measured on the shipped model (models/README.md),
unseen names of trained classes ("clouds", "sedan", "walkway") got 41.7 val mIoU as they
are and 55.7 when each embedding was moved half way towards its nearest trained name, with
near-miss words at most 0.6% of the pixels. So a label is moved ``weight`` of the way
towards its nearest trained name (``label_anchor``, default 0.5); a trained name is its own
nearest name and is unchanged.

Between trained names: the network answers "none" for any vector it was not trained near,
so a word whose nearest name is of the right concept but below the grounding line
("bystander" -> "pedestrian" at 0.43) used to get nothing. Now every word at or above
``anchor_floor`` (0.3) is read as its nearest trained name, whatever side of the line it
falls: towards a class name it takes that class (the report says what it was read as and
warns that the match is weak), towards a distractor (a word trained to take no pixels) it
keeps an empty mask. Only words near nothing trained (below the floor) are left as they are.

The score is a statement about the text space, not a promise about masks: with the
default MiniLM encoder, names for trained classes that training never used scored
0.65-0.92 ("sedan" -> "car" 0.69, "foliage" -> "vegetation" 0.74) and words for things
CamVid does not label mostly 0.44-0.59 ("parking meter" 0.44, "grass" 0.59; "traffic cone"
0.66 is the exception), hence the default warning threshold of 0.6 (`lgseg eval` reports
both lists).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import logging

import numpy as np

from lgseg_ros.labels import MAX_LABEL_CHARS, shown

log = logging.getLogger(__name__)

DEFAULT_WARN_BELOW = 0.6
DEFAULT_ANCHOR = 0.5
# Below this cosine to every trained name a word is near nothing the model knows: left as is.
DEFAULT_ANCHOR_FLOOR = 0.3
ABSENT = ""  # nearest_class of a distractor: a word trained to take no pixels


@dataclasses.dataclass(frozen=True)
class Grounding:
    label: str
    nearest_name: str        # "" when the checkpoint records no vocabulary
    nearest_class: str       # trained class of nearest_name; ABSENT for a distractor
    score: float             # cosine similarity in the text encoder's space; NaN if unknown
    well_grounded: bool
    # read as nearest_class by the WordNet alias table (runtime/aliases.py), not by the
    # embedding search: the label enters the model as that concept's name (score 1.0)
    alias: bool = False

    @property
    def known(self) -> bool:
        return not math.isnan(self.score)

    def warning(self, max_len: int = 80) -> str | None:
        """One line for the log and the service reply, or None when the label is fine."""
        label = _cap(self.label, max_len)
        if not self.known:
            return None
        if self.nearest_class == ABSENT:
            return (f"'{label}': trained only as a word absent from the training scenes "
                    f"(nearest '{_cap(self.nearest_name, max_len)}', {self.score:.2f}): "
                    "expect an empty mask")
        if self.well_grounded:
            return None
        if self.score >= DEFAULT_ANCHOR_FLOOR:
            return (f"'{label}': weak match, read as '{self.nearest_class}' (nearest "
                    f"'{_cap(self.nearest_name, max_len)}', {self.score:.2f}): check the mask")
        return (f"'{label}': no close trained concept (nearest "
                f"'{_cap(self.nearest_name, max_len)}' = {self.nearest_class}, "
                f"{self.score:.2f}): expect an empty or wrong mask")


def _cap(text: str, n: int) -> str:
    return text if len(text) <= n else f"{text[:n]}...({len(text)} chars)"


# A checkpoint's recorded vocabulary is encoded at configure (the shipped ones: 290 and 540
# names of at most 21 characters). Unbounded, 256 classes with one 128-character name each
# took 28 s and 1.8 GB, and the 16 MB header allowed ~2,000 such names (audit round 17).
MAX_VOCABULARY_NAMES = 4096
MAX_VOCABULARY_NAME_CHARS = MAX_LABEL_CHARS
# Names per encoder call when the vocabulary is encoded: memory bounded by the batch.
VOCABULARY_BATCH = 64


def vocabulary_from_metadata(meta: Mapping) -> tuple[dict[str, list[str]], list[str]]:
    """(class -> trained names, distractors) from a checkpoint's extra metadata; checkpoints
    from before the vocabulary was recorded give their class names alone. A checkpoint is
    untrusted input, and `lgseg train` takes class names of any length: names over
    MAX_VOCABULARY_NAME_CHARS characters (no label can be that long, so nothing asks for
    them) and names past the first MAX_VOCABULARY_NAMES are left out of grounding, with one
    warning; the checkpoint still loads."""
    vocab = meta.get("vocabulary")
    if not isinstance(vocab, dict):
        labels = meta.get("labels", []) or []
        vocab = {str(c): [str(c)] for c in (labels if isinstance(labels, (list, tuple)) else [])}
    distractors = meta.get("distractors", []) or []
    distractors = [str(d) for d in (distractors if isinstance(distractors, (list, tuple)) else [])]
    budget, dropped = MAX_VOCABULARY_NAMES, []

    def keep(name: str) -> bool:
        nonlocal budget
        if len(name) > MAX_VOCABULARY_NAME_CHARS or budget <= 0:
            dropped.append(name)
            return False
        budget -= 1
        return True

    kept: dict[str, list[str]] = {}
    for c, names in vocab.items():
        if not isinstance(names, (list, tuple)):
            continue
        c = str(c)
        if keep(c):   # a class is grounded through its own name, which comes first
            kept[c] = [n for n in (str(n) for n in names) if n == c or keep(n)]
        else:
            dropped.extend(str(n) for n in names if str(n) != c)
    distractors = [d for d in distractors if keep(d)]
    if dropped:
        longest = max(dropped, key=len)
        log.warning("checkpoint vocabulary: %d names left out of grounding (at most %d names of "
                    "at most %d characters; e.g. %s)", len(dropped), MAX_VOCABULARY_NAMES,
                    MAX_VOCABULARY_NAME_CHARS, shown(longest))
    return kept, distractors


class GroundingReporter:
    """Encodes the trained vocabulary once (lazily: only a label change needs it)."""

    def __init__(self, vocabulary: Mapping[str, Sequence[str]], encoder,
                 distractors: Sequence[str] = (), warn_below: float = DEFAULT_WARN_BELOW,
                 anchor_floor: float = DEFAULT_ANCHOR_FLOOR, aliases: bool = True):
        if not 0.0 <= float(warn_below) <= 1.0:
            raise ValueError(f"grounding warn_below must be in [0, 1], got {warn_below}")
        if not 0.0 <= float(anchor_floor) <= 1.0:
            raise ValueError(f"grounding anchor_floor must be in [0, 1], got {anchor_floor}")
        self.warn_below = float(warn_below)
        self.anchor_floor = float(anchor_floor)
        self.encoder = encoder
        self._names: list[str] = []
        self._classes: list[str] = []
        # each concept's own name (its first row): what an alias is read as
        self._concept_row: dict[str, int] = {}
        for cls, names in vocabulary.items():
            self._concept_row[cls] = len(self._names)
            for n in dict.fromkeys([cls, *names]):
                self._names.append(n)
                self._classes.append(cls)
        for d in dict.fromkeys(distractors):
            if d not in self._names:
                self._names.append(d)
                self._classes.append(ABSENT)
        self._emb: np.ndarray | None = None
        self.aliases = None
        if aliases and self._concept_row:
            from .aliases import AliasReader
            self.aliases = AliasReader(self._concept_row, self._names)

    @property
    def empty(self) -> bool:
        return not self._names

    def _vocab_embeddings(self) -> np.ndarray:
        if self._emb is None:
            parts = []
            for i in range(0, max(len(self._names), 1), VOCABULARY_BATCH):
                emb = self.encoder.encode(self._names[i:i + VOCABULARY_BATCH])
                parts.append(np.asarray(emb.detach().cpu().numpy() if hasattr(emb, "detach") else emb,
                                        dtype=np.float32))
            self._emb = np.concatenate(parts)
        return self._emb

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def vocabulary_embeddings(self) -> np.ndarray:
        """[N, D] embeddings of ``names`` (encoded now if not yet)."""
        return self._vocab_embeddings()

    def use_vocabulary_embeddings(self, names: Sequence[str], emb: np.ndarray) -> bool:
        """Take embeddings computed before (runtime/artefacts.py caches them per checkpoint
        and encoder: ~0.9 s of start-up for the shipped model's 290 names); refused unless
        they are for exactly these names."""
        emb = np.asarray(emb, np.float32)
        if list(names) != self._names or emb.shape[0] != len(self._names) or emb.ndim != 2:
            return False
        self._emb = emb
        return True

    def _nearest(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index of each row's nearest vocabulary name and its cosine similarity."""
        sims = emb @ self._vocab_embeddings().T
        nearest = sims.argmax(1)
        return nearest, sims[np.arange(len(emb)), nearest]

    def ground(self, labels: Sequence[str], embeddings: np.ndarray,
               weight: float = DEFAULT_ANCHOR) -> tuple[tuple[Grounding, ...], np.ndarray]:
        """The report of the words as given and their anchored embeddings, from one search
        of the vocabulary (what a label change needs)."""
        _check_weight(weight)
        emb = np.asarray(embeddings, np.float32)
        if self.empty or emb.shape[0] == 0:
            return tuple(Grounding(lb, "", "", float("nan"), True) for lb in labels), emb
        nearest, score = self._nearest(emb)
        # A word the alias table reads as a concept of this model takes that concept's
        # name, whatever the embedding search found (runtime/aliases.py).
        alias = np.zeros(len(emb), bool)
        if self.aliases is not None:
            for k, lb in enumerate(labels):
                concept = self.aliases.concept_of(lb) if lb else None
                if concept is not None:
                    nearest[k], score[k], alias[k] = self._concept_row[concept], 1.0, True
        report = tuple(Grounding(lb, self._names[i], self._classes[i], sc,
                                 self._classes[i] != ABSENT and sc >= self.warn_below, bool(a))
                       for lb, i, sc, a in zip(labels, nearest.tolist(), score.tolist(), alias))
        if weight == 0.0 and not alias.any():
            return report, emb
        w = np.where(score >= self.anchor_floor, float(weight), 0.0)[:, None]
        w[alias] = 1.0      # read as the concept whatever label_anchor says
        moved = (1.0 - w) * emb + w * self._vocab_embeddings()[nearest]
        moved /= np.linalg.norm(moved, axis=1, keepdims=True).clip(1e-12)
        return report, moved.astype(np.float32)

    def anchor(self, embeddings: np.ndarray, weight: float = DEFAULT_ANCHOR) -> np.ndarray:
        """[K, D] L2-normalised embeddings, each at or above ``anchor_floor`` moved
        ``weight`` of the way towards its nearest trained name and re-normalised."""
        return self.ground([""] * len(embeddings), embeddings, weight)[1]

    def report(self, labels: Sequence[str], embeddings: np.ndarray) -> tuple[Grounding, ...]:
        """``embeddings`` [K, D], L2-normalised, from the same encoder as the vocabulary."""
        return self.ground(labels, embeddings, 0.0)[0]


def _check_weight(weight: float) -> None:
    if not 0.0 <= float(weight) <= 1.0:
        raise ValueError(f"label anchor weight must be in [0, 1], got {weight}")

class AnchoredEncoder:
    """A text encoder whose embeddings are anchored as the runtime anchors them (evaluation
    uses it so that `lgseg eval` scores what the node would publish)."""

    def __init__(self, encoder, reporter: GroundingReporter, weight: float = DEFAULT_ANCHOR):
        self.encoder, self.reporter, self.weight = encoder, reporter, float(weight)
        self.name = getattr(encoder, "name", "")
        self.dim = getattr(encoder, "dim", None)

    def encode(self, names: Sequence[str]):
        import torch

        emb = self.encoder.encode(list(names))
        raw = emb.detach().cpu().float().numpy() if hasattr(emb, "detach") else np.asarray(emb)
        moved = self.reporter.ground(list(names), raw, self.weight)[1]
        return torch.from_numpy(np.ascontiguousarray(moved))
