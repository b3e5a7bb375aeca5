"""Grounding report (what a word means to the model) and the training vocabulary it uses.

Real MiniLM embeddings throughout: the thresholds are claims about that text space.
"""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from lgseg_ros.runtime.grounding import DEFAULT_ANCHOR_FLOOR, ABSENT, GroundingReporter, vocabulary_from_metadata
from lgseg_ros.train import vocabulary
from lgseg_ros.train.openvocab import (DEV_RENAMES, DISTRACTORS, HELDOUT_RENAMES, NEAR_MISS,
                                      LabelSampler)


@pytest.fixture(scope="module")
def encoder():
    from lgseg_ros.text import build_text_encoder

    return build_text_encoder("minilm", cached=True)


def _report(encoder, vocab, distractors, labels):
    rep = GroundingReporter(vocab, encoder, distractors)
    return rep.report(labels, encoder.encode(labels).numpy())


def test_unseen_name_of_a_trained_class_is_grounded_and_unrelated_words_are_not(encoder):
    vocab = {"car": ["automobile", "truck"], "road": ["street"], "tree": ["vegetation"]}
    g = {x.label: x for x in _report(encoder, vocab, ["banana", "sofa"],
                                     ["sedan", "automobile", "mailbox", "banana"])}
    assert g["sedan"].nearest_class == "car" and g["sedan"].well_grounded
    assert g["sedan"].warning() is None
    assert g["automobile"].nearest_name == "automobile" and g["automobile"].score > 0.99
    assert not g["mailbox"].well_grounded
    # below the line but at or above the anchoring floor: read as its nearest class, and the
    # warning says which (with this three-class vocabulary that is a poor match: 0.31)
    w = g["mailbox"].warning()
    assert "mailbox" in w and "weak match, read as" in w
    assert g["mailbox"].score >= DEFAULT_ANCHOR_FLOOR
    # a distractor: trained to take no pixels, so the report says to expect an empty mask
    assert g["banana"].nearest_class == ABSENT and not g["banana"].well_grounded
    assert "empty mask" in g["banana"].warning()


def test_report_follows_label_order_and_caps_long_labels_in_warnings(encoder):
    labels = ["road", "x" * 5000, "car"]
    out = _report(encoder, {"car": [], "road": []}, [], labels)
    assert [x.label for x in out] == labels
    assert [x.nearest_class for x in (out[0], out[2])] == ["road", "car"]
    w = out[1].warning()
    assert w is not None and len(w) < 300 and "5000 chars" in w


def test_checkpoint_without_vocabulary_reports_unknown_without_warnings(encoder):
    vocab, distractors = vocabulary_from_metadata({})
    out = GroundingReporter(vocab, encoder, distractors).report(["car"], encoder.encode(["car"]).numpy())
    assert math.isnan(out[0].score) and out[0].well_grounded and out[0].warning() is None
    # older checkpoints record only their class names: those are the vocabulary
    assert vocabulary_from_metadata({"labels": ["sky", "road"]})[0] == {"sky": ["sky"], "road": ["road"]}


def test_segmenter_attaches_grounding_from_checkpoint_metadata(tmp_path: Path):
    import torch

    from lgseg_ros.model import build_model, get_config, save_checkpoint
    from lgseg_ros.runtime import Segmenter

    torch.manual_seed(0)
    cfg = get_config("test-tiny")
    ckpt = save_checkpoint(tmp_path / "v.safetensors", build_model(cfg), cfg,
                           {"vocabulary": {"car": ["automobile"], "pedestrian": ["person"]},
                            "distractors": ["banana"]})
    seg = Segmenter(checkpoint=str(ckpt), backend="torch", device="cpu", net_size=(64, 96),
                    grounding_warn_below=0.6)
    ls = seg.prepare_labels(["human", "car", "banana"])
    assert [g.label for g in ls.grounding] == ["human", "car", "banana"]
    assert ls.grounding[0].nearest_class == "pedestrian" and ls.grounding[0].well_grounded
    assert ls.grounding[2].nearest_class == ABSENT
    with pytest.raises(ValueError, match="warn_below"):
        GroundingReporter({}, seg.text_encoder, warn_below=1.5)


# ---------------------------------------------------------------- anchoring
def _cos(a, b):
    import numpy as np

    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_anchor_moves_grounded_words_towards_their_trained_name_and_leaves_the_rest(encoder):
    import numpy as np

    vocab = {"car": ["automobile", "truck"], "road": ["street"], "tree": ["vegetation"],
             "pedestrian": ["person"]}
    # the embedding search alone (the WordNet table reads "sedan" and "bystander" directly:
    # test_aliases.py)
    rep = GroundingReporter(vocab, encoder, ["banana"], aliases=False)
    words = ["car", "sedan", "bystander", "mango", "zqxj vbkw"]
    raw = encoder.encode(words).numpy()
    car = encoder.encode(["car"]).numpy()[0]
    g = {x.label: x for x in rep.report(words, raw)}
    out = rep.anchor(raw, 0.5)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert _cos(out[0], raw[0]) > 0.9999                     # a trained name is its own anchor
    assert _cos(out[1], car) > _cos(raw[1], car) + 0.1       # "sedan" moves towards "car"
    assert 0.8 < _cos(out[1], raw[1]) < 0.99                 # ... and keeps part of itself
    # below the warning line but nearest the right concept: read as that concept, with a
    # warning that says so (it used to be left as it was, and got an empty mask)
    person = encoder.encode(["person"]).numpy()[0]
    assert g["bystander"].nearest_class == "pedestrian" and not g["bystander"].well_grounded
    assert "read as 'pedestrian'" in g["bystander"].warning()
    assert _cos(out[2], person) > _cos(raw[2], person) + 0.1
    # nearest a distractor: moved towards the distractor (which training keeps empty)
    banana = encoder.encode(["banana"]).numpy()[0]
    assert g["mango"].nearest_class == ABSENT
    assert _cos(out[3], banana) > _cos(raw[3], banana) + 0.05
    # near nothing trained (below the floor): untouched
    assert g["zqxj vbkw"].score < rep.anchor_floor
    assert _cos(out[4], raw[4]) > 0.9999
    assert np.array_equal(rep.anchor(raw, 0.0), raw)
    assert _cos(rep.anchor(raw, 1.0)[1], car) > 0.9999      # weight 1: the trained name
    with pytest.raises(ValueError, match="anchor"):
        rep.anchor(raw, 1.5)
    # without a recorded vocabulary there is nothing to anchor to
    assert np.array_equal(GroundingReporter({}, encoder).anchor(raw, 0.5), raw)


def test_segmenter_anchors_embeddings_and_reports_the_word_as_given(tmp_path: Path):
    import torch

    from lgseg_ros.model import build_model, get_config, save_checkpoint
    from lgseg_ros.runtime import Segmenter

    torch.manual_seed(0)
    cfg = get_config("test-tiny")
    ckpt = save_checkpoint(tmp_path / "v.safetensors", build_model(cfg), cfg,
                           {"vocabulary": {"car": ["automobile"], "pedestrian": ["person"]}})
    kw = dict(checkpoint=str(ckpt), backend="torch", device="cpu", net_size=(64, 96))
    anchored = Segmenter(**kw).prepare_labels(["human", "car"])
    plain = Segmenter(**kw, label_anchor=0.0).prepare_labels(["human", "car"])
    assert _cos(anchored.embeddings[1], plain.embeddings[1]) > 0.9999
    assert _cos(anchored.embeddings[0], plain.embeddings[0]) < 0.99
    assert [g.score for g in anchored.grounding] == [g.score for g in plain.grounding]
    assert not anchored.embeddings.flags.writeable
    with pytest.raises(ValueError, match="label_anchor"):
        Segmenter(**kw, label_anchor=-0.1)


def test_anchoring_lifts_heldout_names_on_the_shipped_model(tmp_path: Path):
    """The measured effect, on the shipped model and real CamVid val frames: lgseg eval
    scores the held-out names with and without anchoring (models/README.md has the full
    split)."""
    import json

    from lgseg_ros.runtime.segmenter import default_checkpoint_path
    from lgseg_ros.train import evaluate

    ckpt = default_checkpoint_path()
    miou = {}
    for w in (0.0, 0.5):
        out = tmp_path / f"a{w}"
        assert evaluate.main(["--checkpoint", str(ckpt), "--limit-images", "6", "--no-subset",
                              "--no-probes", "--rename", "heldout", "--label-anchor", str(w),
                              "--grid", "0", "--threads", "2", "--no-progress",
                              "--out", str(out)]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert m["label_anchor"] == w
        miou[w] = (m["full"]["miou"], m["renamed"]["heldout"]["miou"])
    assert abs(miou[0.5][0] - miou[0.0][0]) < 0.005          # trained names: unchanged
    assert miou[0.5][1] > miou[0.0][1] + 0.05, miou          # held-out names: lifted
    # the card's comparison table, from these two evaluations
    from lgseg_ros.train.summarize import eval_table

    rows = eval_table([tmp_path / "a0.0", tmp_path / "a0.5"]).splitlines()
    assert "heldout names mIoU (ratio)" in rows[0] and len(rows) == 4
    assert rows[3].startswith("| a0.5 | 0.5 | ") and f"{100 * miou[0.5][1]:.1f} (" in rows[3]


# ---------------------------------------------------------------- the training vocabulary
def test_heldout_and_near_miss_names_are_absent_from_everything_trained_on():
    v = vocabulary.load()
    trained = [n for names in v["classes"].values() for n in names] + v["distractors"]
    for cls, held in v["heldout"].items():
        assert cls in v["classes"]
        clash = [t for t in trained if vocabulary.shares_word(t, held)]
        assert not clash, f"held-out {held!r} shares a word with trained names {clash}"
    # the dev list (label_anchor was chosen on it) is unseen too and apart from held-out
    assert set(DEV_RENAMES) == set(v["classes"])
    for dev in DEV_RENAMES.values():
        clash = [t for t in trained + list(v["heldout"].values()) if vocabulary.shares_word(t, dev)]
        assert not clash, f"dev name {dev!r} shares a word with {clash}"
    for miss in v["near_miss"]:
        assert miss not in trained
    # a name two classes claim would teach nothing; distractors name no class
    owners = {}
    for cls, names in v["classes"].items():
        for n in names:
            owners.setdefault(n, set()).add(cls)
    assert all(len(c) == 1 for c in owners.values())
    assert not set(v["distractors"]) & set(owners)
    assert HELDOUT_RENAMES == v["heldout"] and NEAR_MISS == tuple(v["near_miss"])


def test_shipped_vocabulary_is_what_wordnet_gives():
    """The shipped file is exactly what `python -m lgseg_ros.train.vocabulary` builds."""
    from apt_support import ensure_debian_packages

    ensure_debian_packages(["wordnet-base"], Path("/usr/share/wordnet/data.noun").is_file,
                           "WordNet (Debian wordnet-base)")
    assert vocabulary.build() == vocabulary.load()


def test_distractors_get_no_pixels_and_none_is_the_last_channel():
    s = LabelSampler(list(vocabulary.load()["classes"]), subset_prob=0.5, synonym_prob=0.3,
                     distractor_prob=1.0, max_distractors=5, rng=random.Random(3))
    seen = 0
    for _ in range(50):
        b = s.sample()
        k = len(b.names)
        d_pos = [i for i, c in enumerate(b.classes) if c == -1]
        assert 1 <= len(d_pos) <= 5
        seen += len(d_pos)
        assert all(b.names[i] in DISTRACTORS for i in d_pos)
        targets = set(b.lut.tolist()) - {255}
        assert not targets & set(d_pos), "a distractor channel received pixels"
        assert targets <= set(range(k + 1)) and (k in targets or len(b.classes) - len(d_pos) == 11)
    assert seen > 50


def test_unseen_word_lists_share_no_word_with_the_rooms_models_vocabulary():
    """The words `encoder_choice` and the model card score as unseen are unseen: none shares
    a word with a name the shipped rooms checkpoint records (HELDOUT 'human' is the exception
    its card reports: that run trained it as a pedestrian name)."""
    from lgseg_ros.model.checkpoint import read_checkpoint_metadata
    from lgseg_ros.resources import package_path
    from lgseg_ros.runtime.grounding import vocabulary_from_metadata
    from lgseg_ros.train.encoder_choice import INDOOR_UNSEEN

    rooms = package_path("models/lgseg_lite_minilm_rooms.safetensors")
    if rooms is None:
        pytest.skip("the rooms model is not installed here")
    vocab, distractors = vocabulary_from_metadata(read_checkpoint_metadata(rooms)[1])
    trained = [n for names in vocab.values() for n in names] + distractors
    for word, concept in INDOOR_UNSEEN.items():
        assert concept in vocab, concept
        clash = [t for t in trained if vocabulary.shares_word(t, word)]
        assert not clash, f"indoor unseen {word!r} shares a word with {clash}"
    for word in DEV_RENAMES.values():
        assert not [t for t in trained if vocabulary.shares_word(t, word)], word


def test_a_checkpoint_vocabulary_is_bounded_before_it_is_encoded(caplog):
    """Audit round 17: the vocabulary a checkpoint records is encoded at configure, and had no
    bound: 256 classes with one 128-character name each took 28 s and 1.8 GB there (a 16 MB
    header holds ~2,000 such names). Names longer than MAX_VOCABULARY_NAME_CHARS (no label
    can ask for them) and names past the first MAX_VOCABULARY_NAMES are left out of
    grounding with one warning; the checkpoint still loads (`lgseg train` takes class names
    of any length, so refusing them would refuse a user's own model)."""
    from lgseg_ros.runtime.grounding import MAX_VOCABULARY_NAME_CHARS, MAX_VOCABULARY_NAMES

    many = {f"class {i}": [f"class {i}", f"name {i}"] for i in range(MAX_VOCABULARY_NAMES)}
    with caplog.at_level("WARNING", logger="lgseg_ros.runtime.grounding"):
        vocab, _ = vocabulary_from_metadata({"vocabulary": many})
    assert sum(1 + len(set(n) - {c}) for c, n in vocab.items()) == MAX_VOCABULARY_NAMES
    assert f"{MAX_VOCABULARY_NAMES} names left out of grounding" in caplog.text
    long = "r" * (MAX_VOCABULARY_NAME_CHARS + 1)
    vocab, distractors = vocabulary_from_metadata({"vocabulary": {"road": ["road", long, "street"],
                                                                  long: [long]},
                                                   "distractors": ["d" * 65, "zebra"]})
    assert vocab == {"road": ["road", "street"]} and distractors == ["zebra"]
    vocab, distractors = vocabulary_from_metadata({"labels": ["road"], "distractors": "not a list"})
    assert vocab == {"road": ["road"]} and distractors == []


def test_the_vocabulary_is_encoded_in_batches_with_the_same_embeddings(encoder):
    """Encoded VOCABULARY_BATCH names at a time (memory bounded by the batch), with the
    embeddings one uncached call over every name gives."""
    import numpy as np

    from lgseg_ros.runtime.grounding import VOCABULARY_BATCH

    inner = encoder.encoder   # the encoder under the cache: no row served from a cache
    sizes = []

    class CountingEncoder:
        def encode(self, labels):
            sizes.append(len(labels))
            return inner.encode(labels)

    vocab = {f"thing {i}": [f"object number {i}", f"item {i}"] for i in range(VOCABULARY_BATCH)}
    reporter = GroundingReporter(vocab, CountingEncoder())
    batched = reporter.vocabulary_embeddings()
    assert batched.shape[0] == len(reporter.names) > VOCABULARY_BATCH
    assert max(sizes) <= VOCABULARY_BATCH and sum(sizes) == len(reporter.names)
    whole = inner.encode(reporter.names)
    whole = whole.detach().cpu().numpy() if hasattr(whole, "detach") else np.asarray(whole)
    np.testing.assert_allclose(batched, whole, atol=1e-5)
