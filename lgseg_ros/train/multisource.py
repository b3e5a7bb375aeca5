"""Training on several label sources at once, each with its own class names.

A source is a dataset ("camvid", or a folder dataset such as ``lgseg pseudo-label``
writes) with a share of the batches. Its classes are concept chains (``concepts.py``):
"wall" is one concept, "building > window" a window inside a building. All sources are
relabelled into one list of chains, so a pixel is the same target whichever source
labelled it.

Each batch comes from one source, and its label set is drawn from the concepts that source
can answer for (``askable``): asking an ADE20K-labelled kitchen for "bed" is a fair
question (the teacher would have marked a bed), asking CamVid's human labels for "bed" is
too, but asking them for "lamp" is not (no lamp was ever labelled there, so the model would
be taught that lamps are "none"). The target of a pixel is the finest concept of its chain
that was asked; if none was, it is "none" (channel K): a pixel that is "building > window"
is "window" when both are asked, "building" when only "building" is, "none" when neither.
"""
from __future__ import annotations

import argparse
import dataclasses
import random
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from . import concepts as C
from .datasets import IGNORE, SegDataset, build_dataset
from .training_input import check_training_source
from .openvocab import LabelBatch


@dataclasses.dataclass
class SourceSpec:
    data: str
    share: float
    pack: str | None = None     # read from this pack (pack.py), as packed from ``data``
    split: str | None = None    # with ``pack``: the split it was packed with

    @classmethod
    def parse(cls, text: str) -> "SourceSpec":
        """``DATA`` or ``DATA:SHARE`` (a share defaults to 1)."""
        data, sep, share = text.rpartition(":")
        if sep and data and share.replace(".", "", 1).isdigit():
            return cls(data, float(share))
        return cls(text, 1.0)


def expand_sources(specs: Sequence[SourceSpec]) -> list[SourceSpec]:
    """``pack:DIR[:SHARE]`` becomes the sources packed in DIR, named as they were packed
    (so ``--distill-sources runs/pl/camvid_fine`` still names one), with the pack's shares
    scaled to sum to SHARE (default 1: alone, a pack trains with its recorded shares)."""
    from .pack import PREFIX, read_manifest

    out = []
    for spec in specs:
        if spec.pack is not None or not spec.data.startswith(PREFIX):
            out.append(spec)
            continue
        root = spec.data[len(PREFIX):]
        sources = read_manifest(root)["sources"]
        total = sum(s["share"] for s in sources)
        out += [SourceSpec(s["data"], spec.share * s["share"] / total, root, s["split"])
                for s in sources]
    return out


class ConceptSpace:
    """Global chains (tuples of concept ids, coarse to fine) and concept names."""

    def __init__(self, chain_names: Sequence[str]):
        self.concepts: list[str] = []
        self.chains: list[tuple[int, ...]] = []
        self.chain_names: list[str] = []
        for name in chain_names:
            self.add_chain(name)

    def concept_id(self, concept: str) -> int:
        if concept not in self.concepts:
            self.concepts.append(concept)
        return self.concepts.index(concept)

    def add_chain(self, name: str) -> int:
        parts = tuple(self.concept_id(c) for c in C.chain(name))
        if parts in self.chains:
            return self.chains.index(parts)
        if len(self.chains) >= IGNORE:
            raise ValueError(f"more than {IGNORE} label chains across sources")
        self.chains.append(parts)
        self.chain_names.append(C.chain_name([self.concepts[i] for i in parts]))
        return len(self.chains) - 1


class MultiSourceDataset(Dataset):
    """Items ``(image, chain ids [H, W] int64 with IGNORE, source index)``."""

    def __init__(self, specs: Sequence[SourceSpec], split: str = "train", cache: bool = True,
                 limit_images: int | None = None):
        specs = expand_sources(specs)
        if not specs:
            raise ValueError("no sources")
        if any(s.share <= 0 for s in specs):
            raise ValueError(f"source shares must be > 0, got {[s.share for s in specs]}")
        self.space = ConceptSpace([])
        self.parts: list[SegDataset] = []
        self.askable: list[list[int]] = []
        self.negatable: list[list[int]] = []
        packs: dict = {}     # each pack read and verified once, however many sources it holds
        for spec in specs:
            if spec.pack is not None:
                from .pack import Pack
                if spec.pack not in packs:
                    packs[spec.pack] = Pack(spec.pack)
                pack = packs[spec.pack]
                ds = pack.dataset(pack.source_index(spec.data), cache=cache)
            else:
                try:
                    check_training_source(spec.data)
                except SystemExit as e:     # a library error here; the CLI's is SystemExit
                    raise ValueError(str(e)) from None
                ds = build_dataset(spec.data, split, cache=cache)
            if limit_images:
                ds = ds.subset(limit_images)
            to_global = np.full(256, IGNORE, np.uint8)
            askable, own = set(), set()
            for i, name in enumerate(ds.class_names):
                g = self.space.add_chain(name)
                to_global[i] = g
                askable.update(self.space.chains[g])
                if len(self.space.chains[g]) == 1:
                    own.update(self.space.chains[g])
            # ds.lut maps stored values to source ids (IGNORE stays IGNORE)
            lut = np.where(ds.lut == IGNORE, IGNORE, to_global[np.minimum(ds.lut, 255)])
            self.parts.append(dataclasses.replace(ds, lut=lut.astype(np.uint8),
                                                  transform=None, cache=cache))
            self.askable.append(sorted(askable))
            # A concept such a source knows only as a refinement ("door" inside "building",
            # marked where a teacher was sure) is asked when present but never as an absent
            # negative: the teacher passed over most street doors, and every "door" asked of
            # an unrefined street scene taught that doors are "none" (door agreement 1.6 IoU
            # indoors while wall, window and cabinet learnt).
            self.negatable.append(sorted(own))
        self.shares = [s.share / sum(x.share for x in specs) for s in specs]
        self.class_names = tuple(self.space.chain_names)
        self.name = " + ".join(f"{p.name} ({s:.2f})" for p, s in zip(self.parts, self.shares))
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self._transform = None

    @property
    def transform(self):
        return self._transform

    @transform.setter
    def transform(self, value):
        self._transform = value
        for p in self.parts:
            p.transform = value

    def __len__(self) -> int:
        return int(self.starts[-1])

    def locate(self, i: int) -> tuple[int, int]:
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return k, i - int(self.starts[k])

    def load(self, i: int):
        k, j = self.locate(i)
        return self.parts[k].load(j)

    def __getitem__(self, i: int):
        k, j = self.locate(i)
        img, lbl = self.parts[k][j]
        return img, lbl, k

    def pixel_frequency(self, max_images: int = 400) -> np.ndarray:
        """Share of each chain's pixels, each source weighted by its batch share (a sample
        of at most ``max_images`` label files per source)."""
        freq = np.zeros(len(self.space.chains))
        for part, share in zip(self.parts, self.shares):
            counts = np.zeros(256)
            idx = np.linspace(0, len(part) - 1, min(max_images, len(part))).round().astype(int)
            for i in sorted(set(idx.tolist())):
                counts += np.bincount(part.load(i)[1].ravel(), minlength=256)
            counts = counts[: len(freq)]
            if counts.sum():
                freq += share * counts / counts.sum()
        return freq

    def class_weights(self, power: float = 0.5, clip: tuple[float, float] = (0.5, 3.0),
                      min_ref_frequency: float = 1e-3):
        """Per chain: (reference frequency / frequency) ** power, clipped; a chain never seen
        gets the upper clip (it can only appear in data this sample missed). The reference is
        the median over chains with at least ``min_ref_frequency`` of the pixels: with well
        over a hundred chains, most of them thin, a median over all of them sits so low that
        every common concept (road, sky, wall) hit the lower clip, and CamVid's classes lost
        a third of their weight against a long tail of rare ones."""
        freq = self.pixel_frequency()
        seen = freq > 0
        ref_set = freq >= min_ref_frequency
        if not ref_set.any():
            ref_set = seen
        med = np.median(freq[ref_set]) if ref_set.any() else 1.0
        w = np.full(len(freq), clip[1])
        w[seen] = np.clip((med / freq[seen]) ** power, *clip)
        return torch.tensor(w, dtype=torch.float32)


def parse_concept_weight(text: str) -> tuple[str, float]:
    """'door=3' -> ('door', 3.0); argparse prints the error as a usage error."""
    leaf, sep, value = text.rpartition("=")
    try:
        weight = float(value)
    except ValueError:
        weight = float("nan")
    if not sep or not leaf.strip() or not (0.0 < weight <= 100.0):
        raise argparse.ArgumentTypeError(f"--concept-weight wants LEAF=W with 0 < W <= 100, got {text[:80]!r}")
    return leaf.strip(), weight


def override_concept_weights(weights: torch.Tensor, chains, overrides) -> torch.Tensor:
    """Set the weight of every chain whose last part is one of ``overrides``' leaves. A leaf
    no chain ends in is an error: a typo would otherwise train silently without the push."""
    weights = weights.clone()
    leaves = [c.rsplit(" > ", 1)[-1] for c in chains]
    for leaf, w in overrides:
        hit = [i for i, name in enumerate(leaves) if name == leaf]
        if not hit:
            raise SystemExit(f"--concept-weight {leaf}={w}: no label chain ends in {leaf!r}")
        weights[hit] = w
    return weights


class SourceBatchSampler(Sampler):
    """Batches of indices from one source each, the source drawn by share."""

    def __init__(self, dataset: MultiSourceDataset, batch_size: int, num_batches: int,
                 generator: torch.Generator | None = None):
        self.ds, self.batch_size, self.num_batches = dataset, batch_size, num_batches
        self.generator = generator

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        shares = torch.tensor(self.ds.shares, dtype=torch.float64)
        for _ in range(self.num_batches):
            k = int(torch.multinomial(shares, 1, generator=self.generator))
            n = len(self.ds.parts[k])
            idx = torch.randint(0, n, (self.batch_size,), generator=self.generator)
            yield [int(self.ds.starts[k]) + int(i) for i in idx]


@dataclasses.dataclass
class MultiSourceLabelSampler:
    """Label sets per batch over concepts (see the module docstring)."""

    space: ConceptSpace
    askable: Sequence[Sequence[int]]            # per source: concept ids
    vocabulary: Mapping[str, Sequence[str]]     # concept -> names it may be called
    full_prob: float = 0.3        # every present concept + absent ones, vs a random subset
    max_absent: int = 8           # absent askable concepts added (negatives with meaning)
    synonym_prob: float = 0.2
    distractor_prob: float = 0.3
    max_distractors: int = 6
    distractors: Sequence[str] = ()
    negatable: Sequence[Sequence[int]] | None = None   # per source: may be asked absent
    # One present concept asked alone, nothing beside it: the query a robot makes for "the
    # floor" or "doors", and the one the single-label ratio scores. The subset draw above
    # makes it rare (one concept of n, no absent ones, no distractors: about 1 % of the
    # batches), and every GPU run, asking about 34 names a batch, lost single-label IoU
    # (models/README.md).
    alone_prob: float = 0.0
    rng: random.Random = dataclasses.field(default_factory=random.Random)

    def all_names(self) -> list[str]:
        names = []
        for c in self.space.concepts:
            names += list(self.vocabulary.get(c, [c]))
        return list(dict.fromkeys([*names, *self.distractors]))

    def sample(self, source: int, present_chains: Sequence[int]) -> LabelBatch:
        askable = list(self.askable[source])
        present = sorted({c for g in present_chains if 0 <= g < len(self.space.chains)
                          for c in self.space.chains[g]} & set(askable))
        negatable = set(self.negatable[source]) if self.negatable is not None else set(askable)
        negatable.difference_update(present)
        absent = [c for c in askable if c in negatable]
        if present and self.alone_prob > 0 and self.rng.random() < self.alone_prob:
            return self._named([self.rng.choice(present)])
        if present and self.rng.random() >= self.full_prob:
            chosen = self.rng.sample(present, self.rng.randint(1, len(present)))
        else:
            chosen = list(present)
        if absent:
            m = self.rng.randint(0, min(self.max_absent, len(absent)))
            chosen += self.rng.sample(absent, m)
        if not chosen:
            chosen = [self.rng.choice(askable)]
        classes = list(chosen)
        if self.distractors and self.rng.random() < self.distractor_prob:
            m = min(self.rng.randint(1, self.max_distractors), len(self.distractors))
            classes += [-1 - i for i in range(m)]
        self.rng.shuffle(classes)
        return self._named(classes)

    def _named(self, classes: list[int]) -> LabelBatch:
        """The batch for these concept ids (and distractor slots, < 0): names drawn, a
        synonym now and then."""
        picked = self.rng.sample(list(self.distractors), sum(c < 0 for c in classes))
        names = []
        for c in classes:
            if c < 0:
                names.append(picked[-1 - c])
                continue
            concept = self.space.concepts[c]
            alts = [n for n in self.vocabulary.get(concept, ()) if n != concept]
            if alts and self.rng.random() < self.synonym_prob:
                concept = self.rng.choice(alts)
            names.append(concept)
        return LabelBatch(names, [c if c >= 0 else -1 for c in classes],
                          self.target_lut(classes))

    def target_lut(self, classes: Sequence[int]) -> torch.Tensor:
        """Chain id -> channel of its finest asked concept, K ("none") if none asked."""
        k = len(classes)
        pos = {c: i for i, c in enumerate(classes) if c >= 0}
        lut = torch.full((256,), IGNORE, dtype=torch.int64)
        for g, parts in enumerate(self.space.chains):
            lut[g] = next((pos[c] for c in reversed(parts) if c in pos), k)
        return lut

    def full(self, source: int = 0) -> LabelBatch:
        classes = list(self.askable[source])
        return LabelBatch([self.space.concepts[c] for c in classes], classes,
                          self.target_lut(classes))


def build_vocabulary(space: ConceptSpace, base: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Concept -> names, with a name that is itself a concept kept for that concept only
    (CamVid's WordNet list calls a wall a building; now "wall" is a concept of its own)."""
    vocab = C.concept_vocabulary(space.concepts, base)
    own = set(space.concepts)
    taken: dict[str, str] = {}
    for concept, names in vocab.items():
        keep = []
        for n in names:
            if n != concept and (n in own or n in taken):
                continue
            taken[n] = concept
            keep.append(n)
        vocab[concept] = keep
    return vocab


def filter_distractors(distractors: Sequence[str], table, names: Sequence[str],
                       max_cos: float = 0.65) -> list[str]:
    """Distractors no trained name is close to: "chair" was a distractor while the model
    knew only streets, and is a concept now. A distractor with a trained name as one of its
    words is a kind of that thing ("folding chair", "work table", "file cabinet"), whatever
    the cosine says: trained as "none" on every pixel it taught that tables are nothing
    (table agreement 0.0 indoors)."""
    if not distractors:
        return []
    own = set(names)
    cand = [d for d in distractors if d not in own
            and not own.intersection(d.replace("-", " ").split())]
    if not cand:
        return []
    d = table(cand)
    n = table(list(names))
    sims = (d @ n.T).max(1).values
    return [w for w, s in zip(cand, sims.tolist()) if s < max_cos]
