"""Open-vocabulary training choices, each switchable (see ``TrainConfig``):

- random label subsets per batch: the model sees K labels, K drawn from 1..C, so it learns
  to answer for the labels it is given rather than for a fixed list;
- the "none of these" target: pixels of classes left out of the batch's label set are
  trained towards channel K (the learned background token); switched off, they are
  ignored instead, and the model never learns to say "none";
- label-name augmentation: each class is named by a synonym with some probability, so the
  head keys on the meaning of a label embedding, not on one string's exact vector.

The held-out renaming in ``HELDOUT_RENAMES`` shares no name with ``TRAIN_SYNONYMS``, so
the renamed-label metric it gives measures generalisation to unseen words.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from .datasets import IGNORE

# Alternatives used during training (label-name augmentation). Keys are CamVid's names;
# other datasets get augmentation only for names found here.
TRAIN_SYNONYMS: dict[str, tuple[str, ...]] = {
    "sky": ("the sky", "clouds"),
    "building": ("buildings", "house"),
    "pole": ("lamp post", "post"),
    "road": ("street", "roadway"),
    "pavement": ("sidewalk", "footpath"),
    "tree": ("trees", "vegetation"),
    "sign symbol": ("traffic sign", "road sign"),
    "fence": ("railing", "barrier"),
    "car": ("automobile", "vehicle"),
    "pedestrian": ("person", "people"),
    "bicyclist": ("cyclist", "bike rider"),
}

# Renaming for the eval's "renamed labels" metric: names never used in training.
HELDOUT_RENAMES: dict[str, str] = {
    "sky": "overcast sky",
    "building": "architecture",
    "pole": "utility pole",
    "road": "asphalt",
    "pavement": "walkway",
    "tree": "foliage",
    "sign symbol": "signboard",
    "fence": "fencing",
    "car": "sedan",
    "pedestrian": "human",
    "bicyclist": "bike",
}

# The brief's example mapping (names that label-name augmentation trained on).
SYNONYM_RENAMES: dict[str, str] = {
    "car": "automobile", "pedestrian": "person", "pavement": "sidewalk",
    "bicyclist": "cyclist", "sign symbol": "traffic sign", "pole": "lamp post",
}

RENAME_PRESETS = {"heldout": HELDOUT_RENAMES, "synonyms": SYNONYM_RENAMES}


def parse_rename(spec: str) -> dict[str, str]:
    """``"car=automobile,pedestrian=person"`` or a preset name ("heldout", "synonyms")."""
    if spec in RENAME_PRESETS:
        return dict(RENAME_PRESETS[spec])
    out = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ValueError(f"rename item {item!r} is not old=new")
        out[old.strip()] = new.strip()
    return out


@dataclass
class LabelBatch:
    names: list[str]          # the K label strings given to the model, in channel order
    classes: list[int]        # dataset class id of each channel
    lut: torch.Tensor         # int64[256]: dataset label value -> training target


@dataclass
class LabelSampler:
    class_names: Sequence[str]
    subset_prob: float = 0.5     # probability that a batch uses a random subset
    none_target: bool = True     # dropped classes -> channel K; False: -> ignore
    synonym_prob: float = 0.0    # per class per batch
    synonyms: Mapping[str, Sequence[str]] = field(default_factory=lambda: TRAIN_SYNONYMS)
    shuffle: bool = True         # channel order is arbitrary for the model; show it so
    rng: random.Random = field(default_factory=random.Random)

    def all_names(self) -> list[str]:
        """Every string the sampler can emit (to encode once up front)."""
        names = list(self.class_names)
        if self.synonym_prob > 0:
            for c in self.class_names:
                names += [s for s in self.synonyms.get(c, ()) if s not in names]
        return names

    def full(self) -> LabelBatch:
        return self._batch(list(range(len(self.class_names))), use_synonyms=False)

    def sample(self) -> LabelBatch:
        n = len(self.class_names)
        classes = list(range(n))
        if self.subset_prob > 0 and self.rng.random() < self.subset_prob:
            k = self.rng.randint(1, n)
            classes = sorted(self.rng.sample(classes, k))
        if self.shuffle:
            self.rng.shuffle(classes)
        return self._batch(classes, use_synonyms=True)

    def _batch(self, classes: list[int], use_synonyms: bool) -> LabelBatch:
        names = []
        for c in classes:
            name = self.class_names[c]
            alts = self.synonyms.get(name, ()) if use_synonyms else ()
            if alts and self.synonym_prob > 0 and self.rng.random() < self.synonym_prob:
                name = self.rng.choice(list(alts))
            names.append(name)
        k = len(classes)
        lut = torch.full((256,), IGNORE, dtype=torch.int64)
        lut[: len(self.class_names)] = k if self.none_target else IGNORE
        for pos, c in enumerate(classes):
            lut[c] = pos
        return LabelBatch(names, classes, lut)


class EmbeddingTable:
    """Label string -> frozen text embedding, encoded once (the encoder never trains)."""

    def __init__(self, encoder, names: Sequence[str]):
        self.encoder = encoder
        names = list(dict.fromkeys(names))
        emb = encoder.encode(names)
        self.table = {n: emb[i].float() for i, n in enumerate(names)}

    def __call__(self, names: Sequence[str]) -> torch.Tensor:
        missing = [n for n in names if n not in self.table]
        if missing:
            emb = self.encoder.encode(missing)
            self.table.update({n: emb[i].float() for i, n in enumerate(missing)})
        return torch.stack([self.table[n] for n in names])
