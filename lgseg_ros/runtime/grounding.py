"""What a word means to the model: each label's closest trained name and a grounding score.

A label enters the network only as a text embedding, so the model can segment a word only
as well as that embedding lies near the names it was trained on. The report compares a
label's embedding (same encoder, same template) with every name the checkpoint records
in its metadata (``vocabulary``: trained class -> names it was trained under; older
checkpoints record only ``labels``, the class names) and with the ``distractors`` it was
trained to leave empty, and returns the nearest one with the cosine similarity.

The score is a statement about the text space, not a promise about masks: with the
default MiniLM encoder, names for trained classes that training never used scored
0.65-0.92 ("sedan" -> "car" 0.69, "foliage" -> "vegetation" 0.74) and words for things
CamVid does not label 0.33-0.58 ("mailbox" 0.33, "grass" 0.59), hence the default
warning threshold of 0.6 (`python -m lgseg_ros.train.evaluate` reports both lists).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

DEFAULT_WARN_BELOW = 0.6
ABSENT = ""  # nearest_class of a distractor: a word trained to take no pixels


@dataclasses.dataclass(frozen=True)
class Grounding:
    label: str
    nearest_name: str        # "" when the checkpoint records no vocabulary
    nearest_class: str       # trained class of nearest_name; ABSENT for a distractor
    score: float             # cosine similarity in the text encoder's space; NaN if unknown
    well_grounded: bool

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
        return (f"'{label}': no close trained concept (nearest "
                f"'{_cap(self.nearest_name, max_len)}' = {self.nearest_class}, "
                f"{self.score:.2f}): expect an empty or wrong mask")


def _cap(text: str, n: int) -> str:
    return text if len(text) <= n else f"{text[:n]}...({len(text)} chars)"


def vocabulary_from_metadata(meta: Mapping) -> tuple[dict[str, list[str]], list[str]]:
    """(class -> trained names, distractors) from a checkpoint's extra metadata; checkpoints
    from before the vocabulary was recorded give their class names alone."""
    vocab = meta.get("vocabulary")
    if not isinstance(vocab, dict):
        vocab = {str(c): [str(c)] for c in meta.get("labels", []) or []}
    vocab = {str(c): [str(n) for n in names] for c, names in vocab.items()
             if isinstance(names, (list, tuple))}
    distractors = [str(d) for d in meta.get("distractors", []) or []]
    return vocab, distractors


class GroundingReporter:
    """Encodes the trained vocabulary once (lazily: only a label change needs it)."""

    def __init__(self, vocabulary: Mapping[str, Sequence[str]], encoder,
                 distractors: Sequence[str] = (), warn_below: float = DEFAULT_WARN_BELOW):
        if not 0.0 <= float(warn_below) <= 1.0:
            raise ValueError(f"grounding warn_below must be in [0, 1], got {warn_below}")
        self.warn_below = float(warn_below)
        self.encoder = encoder
        self._names: list[str] = []
        self._classes: list[str] = []
        for cls, names in vocabulary.items():
            for n in dict.fromkeys([cls, *names]):
                self._names.append(n)
                self._classes.append(cls)
        for d in dict.fromkeys(distractors):
            if d not in self._names:
                self._names.append(d)
                self._classes.append(ABSENT)
        self._emb: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        return not self._names

    def _vocab_embeddings(self) -> np.ndarray:
        if self._emb is None:
            emb = self.encoder.encode(self._names)
            self._emb = np.asarray(emb.detach().cpu().numpy() if hasattr(emb, "detach") else emb,
                                   dtype=np.float32)
        return self._emb

    def report(self, labels: Sequence[str], embeddings: np.ndarray) -> tuple[Grounding, ...]:
        """``embeddings`` [K, D], L2-normalised, from the same encoder as the vocabulary."""
        if self.empty:
            return tuple(Grounding(lb, "", "", float("nan"), True) for lb in labels)
        sims = np.asarray(embeddings, np.float32) @ self._vocab_embeddings().T
        out = []
        for lb, row in zip(labels, sims):
            i = int(np.argmax(row))
            score = float(row[i])
            out.append(Grounding(lb, self._names[i], self._classes[i], score,
                                 self._classes[i] != ABSENT and score >= self.warn_below))
        return tuple(out)
