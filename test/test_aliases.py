"""The WordNet alias table: words the text space misreads are read as the concept WordNet
says they name (runtime/aliases.py, built by train/aliases.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lgseg_ros.runtime.aliases import ALIAS_FILE, AliasReader, load_aliases, shipped_aliases

REPO = Path(__file__).resolve().parents[1]
STREET = REPO / "models" / "lgseg_lite_minilm.safetensors"
ROOMS = REPO / "models" / "lgseg_lite_minilm_rooms.safetensors"


def _wordnet_root():
    """WordNet for the tests that rebuild from it, installed as test_grounding installs it:
    these tests run first alphabetically, and skipped on a fresh CI machine when they only
    looked for it (session 13's first fresh-clone run)."""
    from apt_support import ensure_debian_packages
    from lgseg_ros.train.wordnet import DEFAULT_ROOT
    ensure_debian_packages(["wordnet-base"], (Path(DEFAULT_ROOT) / "data.noun").is_file,
                           "WordNet (Debian wordnet-base)")
    return DEFAULT_ROOT


def test_the_shipped_table_is_what_the_rule_builds():
    from lgseg_ros.train import aliases as build
    _wordnet_root()
    assert build.dumps(build.build()) == ALIAS_FILE.read_text(), \
        "stale: rebuild with python -m lgseg_ros.train.aliases"


def test_no_trained_name_distractor_or_near_miss_is_an_alias():
    from lgseg_ros.train.aliases import model_vocabularies
    from lgseg_ros.train.vocabulary import NEAR_MISS
    table = shipped_aliases()
    vocab, distractors = model_vocabularies()
    trained = {n.lower() for c, ns in vocab.items() for n in [c, *ns]}
    assert len(table) > 5000
    assert not trained & set(table)
    assert not {d.lower() for d in distractors} & set(table)
    assert not {n.lower() for n in NEAR_MISS} & set(table)
    # every concept named is one a shipped model was trained on
    assert {c for cs in table.values() for c in cs} <= set(vocab)


def test_concepts_are_seeded_with_the_sense_their_class_means(monkeypatch):
    """WordNet's first sense of a class name is often another thing: its first "poster" is a
    post horse, its first "barrel" a gun barrel, its first "toilet" the room. The table named
    those things after ADE20K's classes until SENSE_SEEDS chose the senses by their glosses."""
    from lgseg_ros.train import aliases
    from lgseg_ros.train.wordnet import WordNet
    wn = WordNet(_wordnet_root())
    vocab, _ = aliases.model_vocabularies()
    chosen = dict(aliases.SENSE_SEEDS)
    monkeypatch.setattr(aliases, "SENSE_SEEDS", {})
    for concept, spec in chosen.items():
        # a sense of the concept's own name, and one the automatic rule would not have taken
        assert concept.replace(" ", "_") == spec.rsplit(".", 2)[0], (concept, spec)
        assert aliases.seed_senses(wn, concept, vocab[concept]) != [wn.synset(spec)], spec
    table = shipped_aliases()
    assert table.get("placard") == ("poster",) and "post horse" not in table
    assert table.get("commode") == ("toilet",) and table.get("notice board") == ("bulletin board",)
    assert "gun barrel" not in table and "chromatography column" not in table


def test_the_reader_folds_plurals_defers_to_trained_words_and_refuses_ambiguity():
    table = {"walker": ("pedestrian",), "minibus": ("bus", "car"), "hedge": ("fence",)}
    street = AliasReader(["pedestrian", "car", "fence"], ["pedestrian", "car", "fence", "hedges"], table)
    assert street.concept_of("Walker") == "pedestrian"
    assert street.concept_of("  walkers ") == "pedestrian"
    assert street.concept_of("minibus") == "car"            # the street model knows only car
    assert street.concept_of("hedges") is None              # a trained word speaks for itself
    assert street.concept_of("ranger") is None
    rooms = AliasReader(["pedestrian", "car", "bus"], ["pedestrian", "car", "bus"], table)
    assert rooms.concept_of("minibus") is None              # bus or car: the embedding decides
    assert rooms.concept_of("hedge") is None                # no fence in this model


def test_a_damaged_or_oversized_table_is_refused(tmp_path):
    bad = tmp_path / "a.json"
    bad.write_text(json.dumps({"format": 99, "aliases": {}}))
    with pytest.raises(ValueError, match="format 1"):
        load_aliases(bad)
    big = tmp_path / "b.json"
    with open(big, "wb") as f:
        f.truncate(9 << 20)
    with pytest.raises(ValueError, match="more than an alias table can be"):
        load_aliases(big)


@pytest.fixture(scope="module")
def street_segmenter():
    from lgseg_ros.runtime.segmenter import Segmenter
    return Segmenter(checkpoint=str(STREET), backend="onnxruntime", precision="fp32")


def test_a_word_the_text_space_misreads_gets_its_concepts_masks(street_segmenter):
    """"walker" is WordNet's synonym of "pedestrian", but its embedding lies nearest the road
    name "lane" (0.46), so the street model read it as road (the rooms model as "hill").
    Read by the table, its masks are the pedestrian's, and the report says so."""
    import cv2

    from lgseg_ros.resources import package_path
    from lgseg_ros.runtime.grounding import GroundingReporter, vocabulary_from_metadata
    seg = street_segmenter
    emb = np.asarray(seg.text_encoder.encode(["walker"]), np.float32)
    vocab, distractors = vocabulary_from_metadata(seg.source.meta)
    plain = GroundingReporter(vocab, seg.text_encoder, distractors, aliases=False)
    assert plain.report(["walker"], emb)[0].nearest_class != "pedestrian"
    g = seg.grounding.report(["walker"], emb)[0]
    assert (g.nearest_class, g.nearest_name, g.alias, g.well_grounded, g.score) == \
        ("pedestrian", "pedestrian", True, True, 1.0)

    rgb = cv2.cvtColor(cv2.imread(str(package_path("demo/frames/0016E5_08109.jpg"))), cv2.COLOR_BGR2RGB)
    words = ["road", "car", "building", "sky"]
    walker = seg.prepare_labels(words + ["walker"])
    person = seg.prepare_labels(words + ["pedestrian"])
    a, b = seg.segment(rgb, walker), seg.segment(rgb, person)
    assert (b.ids == 4).sum() > 100, "the frame should show pedestrians"
    np.testing.assert_array_equal(a.ids, b.ids)
    assert [x.alias for x in walker.grounding] == [False] * 4 + [True]


def test_a_word_read_as_another_label_in_the_set_is_refused_naming_what_it_reads_as(street_segmenter):
    """Review of audit round 18: 'sedan' is read as 'car' by the table, so beside 'car' both
    were one vector and sedan's mask was always empty. Refused, saying what it reads as."""
    from lgseg_ros.labels import LabelSetError

    with pytest.raises(LabelSetError, match=r"label 1 'sedan' is the same as label 0 'car' to "
                                            r"the model: it is read as 'car' by the WordNet table"):
        street_segmenter.prepare_labels(["car", "sedan", "road"])
    assert street_segmenter.prepare_labels(["sedan", "road"]).grounding[0].alias
