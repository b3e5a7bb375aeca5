"""The default model: the two shipped models behind one Segmenter, chosen per label set.

Why two: the street model (CamVid's 11 classes, 71.2 mIoU on CamVid val) answers "none"
to almost every other word, and indoors it is blind; the rooms model knows 149 concepts
(rooms, and finer street words) but scores 66.3 on CamVid val (D85). Neither is the right
default alone. A label set is work done once per label change (DeOP), so that is where the
choice is made: each word's nearest name in the rooms model's trained vocabulary names a
concept; if every concept is one of the street model's classes (or a word trained to be
absent, or nothing near at all), the set runs on the street model, else on the rooms
model. Each frame still runs one network. "person, car, road" stays on the street model
("person" is the rooms model's name for pedestrian); "floor, door" or "car, bus" go to the
rooms model, which answers for every concept of the set, the street ones included.

Two rules keep street sets on the street model. A word moves a set only when it is well
grounded (at or above the grounding line, 0.6 by default) to its concept, or named by the
WordNet table (runtime/aliases.py): "graffiti" is nearest "painting" at 0.54, and would
otherwise take a whole set of street classes to the weaker model ("walker", nearest "hill",
did so before the table read it as pedestrian). And a part of a street thing that the street model reads as that thing
(STREET_PARTS: a bicycle is CamVid's bicyclist, a street light its pole, a bus its car)
moves a set only when its street class is asked too, or when it is asked alone: "bike" or
"streetlight" among street words means the class; "bicyclist, bicycle" asks for the
difference, which only the rooms model knows; and "traffic light" by itself asks for traffic
lights, which the street model cannot tell from its signs (it read the word as "sign symbol":
20.8 IoU against the teachers' traffic lights on CamVid val, the rooms model (D85) 36.3;
bicycle 12.3 against 22.6; over the eight parts scored there, 4.6 against 8.0 mean IoU:
models/README.md, "Fine words, default" and the rooms model's fine-word table).
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from .grounding import DEFAULT_WARN_BELOW, GroundingReporter, vocabulary_from_metadata

log = logging.getLogger(__name__)

ROOMS_CHECKPOINT_NAME = "lgseg_lite_minilm_rooms.safetensors"

# Concepts the rooms model learnt as parts of a CamVid class on street frames
# (train/concepts.NEST_RULES), among vehicles, riders, poles, signs and the road, which the
# street model was trained to read as that class ("bus" and "truck" are car names there,
# "bicycle" a bicyclist name, "street lamp" a pole name). Walls, windows and doors are
# nested in building too, but are room concepts first: they always take the rooms model.
STREET_PARTS: dict[str, frozenset[str]] = {
    "bus": frozenset({"car"}), "truck": frozenset({"car"}), "van": frozenset({"car"}),
    "train": frozenset({"car"}), "motorcycle": frozenset({"bicyclist", "car"}),
    "bicycle": frozenset({"bicyclist"}), "street light": frozenset({"pole"}),
    "traffic light": frozenset({"sign symbol", "pole"}), "road marking": frozenset({"road"}),
}


def rooms_checkpoint_path() -> str | None:
    """The shipped rooms model beside the default one (source tree or installed share)."""
    from lgseg_ros.resources import package_path

    path = package_path(f"models/{ROOMS_CHECKPOINT_NAME}")
    return str(path) if path is not None and path.is_file() else None


@dataclasses.dataclass(frozen=True)
class Route:
    rooms: bool
    # the words that needed the rooms model, each with the concept it was read as
    because: tuple[tuple[str, str], ...] = ()

    def describe(self, max_words: int = 3) -> str:
        if not self.rooms:
            return "street model (every word is a street class, a part read as one, or unknown)"
        shown = ", ".join(f"'{w[:40]}' ({c[:40]})" for w, c in self.because[:max_words])
        more = len(self.because) - max_words
        return f"rooms model: {shown}" + (f" and {more} more" if more > 0 else "")


class ModelRouter:
    """Reads each word against the rooms model's trained vocabulary (the larger one) and
    says whether the set needs the rooms model."""

    def __init__(self, street_classes: Sequence[str], rooms_reporter: GroundingReporter):
        self.street_classes = frozenset(street_classes)
        self.reporter = rooms_reporter

    @classmethod
    def from_metadata(cls, street_meta, rooms_meta, encoder,
                      warn_below: float = DEFAULT_WARN_BELOW) -> "ModelRouter":
        street_vocab, _ = vocabulary_from_metadata(street_meta)
        rooms_vocab, rooms_distractors = vocabulary_from_metadata(rooms_meta)
        missing = sorted(set(street_vocab) - set(rooms_vocab))
        if missing:   # a street class the rooms model cannot answer for: never route
            raise ValueError(f"the rooms model does not know the street classes {missing}")
        return cls(street_vocab, GroundingReporter(rooms_vocab, encoder, rooms_distractors,
                                                   warn_below=warn_below))

    def route(self, names: Sequence[str], embeddings: np.ndarray) -> Route:
        """``embeddings``: the words as encoded, [K, D], before any anchoring."""
        report = self.reporter.report(list(names), embeddings)
        asked = {g.nearest_class for g in report if g.known}
        because = []
        for g in report:
            concept = g.nearest_class
            if not g.well_grounded or concept in self.street_classes:
                continue   # well_grounded is False for a distractor (ABSENT) too
            if len(report) > 1 and concept in STREET_PARTS and not STREET_PARTS[concept] & asked:
                continue   # among street words: read as its street class by the street model
            because.append((g.label, concept))
        return Route(rooms=bool(because), because=tuple(because))
