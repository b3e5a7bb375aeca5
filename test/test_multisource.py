"""Several label sources in one training run: nested targets, per-source label sets, and a
two-source `lgseg train` smoke run (tiny config, real MiniLM, real images)."""
import argparse
import json
import random

import cv2
import numpy as np
import pytest
import torch

from lgseg_ros.train import train
from lgseg_ros.train.datasets import IGNORE, load_camvid, read_label
from lgseg_ros.train.multisource import (ConceptSpace, MultiSourceDataset,
                                         MultiSourceLabelSampler, SourceSpec, build_vocabulary,
                                         filter_distractors)


def test_nested_targets_follow_what_was_asked():
    space = ConceptSpace(["building", "building > window", "wall", "road"])
    building, window, wall, road = (space.concepts.index(c)
                                    for c in ("building", "window", "wall", "road"))
    g_building, g_window, g_wall = 0, 1, 2
    s = MultiSourceLabelSampler(space, [list(range(len(space.concepts)))], {})
    both = s.target_lut([window, building])          # channels: window 0, building 1
    assert both[g_window] == 0 and both[g_building] == 1 and both[g_wall] == 2  # 2 = none
    only_building = s.target_lut([building])
    assert only_building[g_window] == 0 and only_building[g_building] == 0
    neither = s.target_lut([road, wall])
    assert neither[g_window] == 2 and neither[g_building] == 2 and neither[g_wall] == 1
    assert both[IGNORE] == IGNORE


def test_label_sets_come_from_what_the_source_can_answer():
    space = ConceptSpace(["sky", "car", "car > bus", "bed", "lamp"])
    ids = {c: space.concepts.index(c) for c in space.concepts}
    askable = [[ids["sky"], ids["car"], ids["bus"]], [ids["bed"], ids["lamp"], ids["sky"]]]
    s = MultiSourceLabelSampler(space, askable, {"car": ["car", "automobile"]},
                                rng=random.Random(0), synonym_prob=0.5,
                                distractors=["banana", "violin"], distractor_prob=0.5)
    seen_names = set()
    for _ in range(200):
        b = s.sample(0, [0, 2])  # chains present: sky, car > bus
        asked = {c for c in b.classes if c >= 0}
        assert asked <= set(askable[0])
        assert asked & {ids["sky"], ids["car"], ids["bus"]}  # something present is asked
        seen_names.update(b.names)
    assert {"automobile", "banana"} <= seen_names and "lamp" not in seen_names


def test_alone_prob_asks_one_present_concept_by_itself():
    """--alone-prob: the single-label query (one word, nothing beside it) as a share of the
    batches; otherwise about 1 % of them are (the subset draw rarely ends at one concept
    with no absent ones and no distractors)."""
    space = ConceptSpace(["sky", "car", "car > bus", "bed", "lamp"])
    ids = {c: space.concepts.index(c) for c in space.concepts}
    askable = [[ids["sky"], ids["car"], ids["bus"], ids["bed"]]]
    kw = dict(distractors=["banana", "violin"], distractor_prob=0.5, synonym_prob=0.5)
    shares = {}
    for alone in (0.0, 0.3):
        s = MultiSourceLabelSampler(space, askable, {"car": ["car", "automobile"]},
                                    rng=random.Random(3), alone_prob=alone, **kw)
        ones, names = 0, set()
        for _ in range(2000):
            b = s.sample(0, [0, 2])      # chains present: sky, car > bus
            if len(b.classes) == 1:
                ones += 1
                assert b.classes[0] in (ids["sky"], ids["car"], ids["bus"])
                names.update(b.names)
                chain = {ids["sky"]: 0, ids["car"]: 1, ids["bus"]: 2}[b.classes[0]]
                assert int(b.lut[chain]) == 0 and int(b.lut[3]) == 1    # asked / "none"
        shares[alone] = ones / 2000
        if alone:
            assert "automobile" in names and not names & {"banana", "violin"}
    # the subset draw alone ends at one concept now and then (6 % in this tiny space)
    assert shares[0.0] < 0.1 and 0.3 < shares[0.3] < 0.4


def test_a_refinement_is_asked_when_present_never_as_an_absent_negative():
    """A teacher marks only the windows it is sure of inside CamVid's buildings: asking
    "window" of a street frame with no window marked would call its windows "none"."""
    space = ConceptSpace(["sky", "building", "building > window", "bed"])
    ids = {c: space.concepts.index(c) for c in space.concepts}
    askable = [[ids["sky"], ids["building"], ids["window"]]]
    s = MultiSourceLabelSampler(space, askable, {}, rng=random.Random(1), max_absent=3,
                                negatable=[[ids["sky"], ids["building"]]])
    asked_absent, asked_present = 0, 0
    for _ in range(300):
        absent_window = {c for c in s.sample(0, [0]).classes if c >= 0}  # only sky present
        asked_absent += ids["window"] in absent_window
        present = {c for c in s.sample(0, [0, 2]).classes if c >= 0}      # a window marked
        asked_present += ids["window"] in present
    assert asked_absent == 0 and asked_present > 50


def test_distractors_that_are_kinds_of_trained_things_are_dropped():
    words = ["chair", "table", "wall", "banana", "folding chair", "work-table", "brick"]
    onehot = {w: torch.eye(8)[i] for i, w in enumerate(words)}
    onehot["brick"] = torch.nn.functional.normalize(onehot["wall"] + 0.2 * onehot["brick"], dim=0)
    table = lambda ws: torch.stack([onehot[w] for w in ws])  # noqa: E731
    kept = filter_distractors(["folding chair", "work-table", "banana", "chair", "brick"],
                              table, ["chair", "table", "wall"])
    assert kept == ["banana"]  # kinds of chairs/tables by their words, brick by its cosine


def test_vocabulary_keeps_a_concept_name_for_its_own_concept():
    space = ConceptSpace(["building", "building > wall", "car", "car > truck"])
    vocab = build_vocabulary(space, {"building": ["building", "house", "wall"],
                                     "car": ["car", "truck", "auto"]})
    assert "wall" not in vocab["building"] and "house" in vocab["building"]
    assert "truck" not in vocab["car"] and vocab["truck"][0] == "truck"


def _write_folder(root, names, images_and_labels):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    for stem, (img, lbl) in images_and_labels.items():
        (root / "images" / f"{stem}.png").symlink_to(img)
        cv2.imwrite(str(root / "labels" / f"{stem}.png"), lbl)


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory, camvid_root):
    """Two folder datasets on real CamVid train frames: one with CamVid's 11 names and a
    nested "building > window" chain, one with other names (a second labeller)."""
    root = tmp_path_factory.mktemp("sources")
    cam = load_camvid(camvid_root, "train")
    street, other = {}, {}
    for i in range(2):
        img, lbl_path = cam.pairs[i]
        lbl = read_label(lbl_path)
        lbl[lbl == 11] = IGNORE                  # CamVid's void: id 11 is the chain here
        fine = lbl.copy()
        fine[:60][lbl[:60] == 1] = 11            # the top of each building: "window"
        street[f"s{i}"] = (img, fine)
        # a second source naming sky and road in its own words
        other_lbl = np.full(lbl.shape, IGNORE, np.uint8)
        other_lbl[lbl == 0], other_lbl[lbl == 3] = 0, 1
        other[f"o{i}"] = (img, other_lbl)
    from lgseg_ros.labels import CAMVID_CLASSES
    _write_folder(root / "street", [*CAMVID_CLASSES, "building > window"], street)
    _write_folder(root / "other", ["sky", "road"], other)
    return root


def test_sources_merge_into_one_chain_list(two_sources):
    ds = MultiSourceDataset([SourceSpec.parse(f"{two_sources / 'street'}:3"),
                             SourceSpec.parse(str(two_sources / "other"))], split="x")
    assert ds.shares == [0.75, 0.25]
    assert ds.class_names[:11][0] == "sky" and "building > window" in ds.class_names
    # the second source's sky is the same chain id as the first's
    _, lbl0, k0 = ds[0]
    _, lbl2, k2 = ds[2]
    assert (k0, k2) == (0, 1)
    sky = ds.class_names.index("sky")
    assert (lbl2 == sky).any() and set(torch.unique(lbl2).tolist()) <= {sky, 3, IGNORE}
    w = ds.class_weights()
    assert w.shape == (len(ds.class_names),) and torch.all(w > 0)
    window = ds.space.concepts.index("window")
    assert window in ds.askable[0] and window not in ds.negatable[0]
    assert ds.space.concepts.index("building") in ds.negatable[0]


def test_concept_weight_sets_every_chain_ending_in_the_leaf():
    from lgseg_ros.train.multisource import override_concept_weights, parse_concept_weight
    chains = ["building", "building > door", "door", "screen door", "wall"]
    w = override_concept_weights(torch.ones(5), chains, [parse_concept_weight("door=3")])
    assert w.tolist() == [1.0, 3.0, 3.0, 1.0, 1.0]
    with pytest.raises(SystemExit, match="dor"):
        override_concept_weights(torch.ones(5), chains, [("dor", 2.0)])
    for bad in ("door", "=2", "door=0", "door=-1", "door=nan", "door=1e9", "door=x"):
        with pytest.raises(argparse.ArgumentTypeError, match="--concept-weight"):
            parse_concept_weight(bad)


def test_two_source_training_smoke(two_sources, tmp_path):
    out = tmp_path / "run"
    rc = train.main(["--config", "test-tiny", "--source", f"{two_sources / 'street'}:0.5",
                     "--source", f"{two_sources / 'other'}:0.5", "--train-split", "x",
                     "--iters", "4", "--batch-size", "2", "--crop", "72", "96",
                     "--scale", "0.2", "0.2", "--workers", "0", "--no-progress",
                     "--log-every", "1", "--threads", "1", "--class-weights", "concept-freq",
                     "--concept-weight", "window=2.5",
                     "--distractor-prob", "0.5", "--out", str(out), "--no-eval"])
    assert rc == 0
    from lgseg_ros.model import read_checkpoint_metadata
    _, meta = read_checkpoint_metadata(out / "final.safetensors")
    assert "window" in meta["labels"] and "building > window" not in meta["labels"]
    assert meta["vocabulary"]["window"][0] == "window"
    assert len(meta["sources"]) == 2
    losses = [json.loads(x)["loss"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and all(np.isfinite(losses))


def test_distill_loss_keeps_only_what_the_teacher_gets_right():
    from lgseg_ros.train.losses import distill_loss
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 4, 6, 8, generator=g) * 3
    target = teacher.argmax(1).repeat_interleave(4, 1).repeat_interleave(4, 2)  # 24x32 labels
    assert float(distill_loss(teacher.clone(), teacher, target)) == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(2, 4, 6, 8, generator=g, requires_grad=True)
    kd = distill_loss(student, teacher, target)
    assert float(kd.detach()) > 0.01
    kd.backward()
    assert student.grad.abs().sum() > 0
    # where the teacher disagrees with the labels (or they are ignored) nothing is distilled
    wrong = (teacher.argmax(1) + 1) % 4
    far = wrong.repeat_interleave(4, 1).repeat_interleave(4, 2)
    assert float(distill_loss(student, teacher, far)) == 0.0
    assert float(distill_loss(student, teacher, torch.full_like(target, IGNORE))) == 0.0
    # half the pixels wrong: the loss is the mean over the other half, not diluted
    mixed = target.clone()
    mixed[:, :, :16] = far[:, :, :16]
    full = distill_loss(student, teacher, target)
    half = distill_loss(student, teacher, mixed)
    assert float(half) != pytest.approx(float(full))
    assert float(half) > 0


def test_two_source_training_with_distillation_smoke(two_sources, tmp_path):
    """`--distill`: a frozen teacher (here a first run's checkpoint) scores each batch of the
    named source; the distillation term is logged and finite."""
    first = tmp_path / "first"
    common = ["--config", "test-tiny", "--train-split", "x", "--batch-size", "2",
              "--crop", "72", "96", "--scale", "0.2", "0.2", "--workers", "0",
              "--no-progress", "--log-every", "1", "--threads", "1", "--no-eval"]
    assert train.main([*common, "--source", str(two_sources / "street"), "--iters", "2",
                       "--out", str(first)]) == 0
    out = tmp_path / "run"
    rc = train.main([*common, "--init", str(first / "final.safetensors"),
                     "--source", f"{two_sources / 'street'}:0.5",
                     "--source", f"{two_sources / 'other'}:0.5", "--iters", "6",
                     "--distill", str(first / "final.safetensors"),
                     "--distill-sources", str(two_sources / "street"), "--out", str(out)])
    assert rc == 0
    recs = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    kd = [r["distill"] for r in recs if "distill" in r]
    assert kd and all(np.isfinite(v) and v >= 0 for v in kd)
    with pytest.raises(SystemExit, match="not among --source"):
        train.main([*common, "--source", str(two_sources / "street"), "--iters", "1",
                    "--distill", str(first / "final.safetensors"),
                    "--distill-sources", "elsewhere", "--out", str(tmp_path / "x")])


def test_two_source_training_with_the_data_on_the_device(two_sources, tmp_path):
    """`--data-on-device` (the GPU recipe's data path, on the CPU device here): both
    sources are drawn, nested labels reach the loss, and the run writes its checkpoint."""
    out = tmp_path / "run"
    rc = train.main(["--config", "test-tiny", "--train-split", "x", "--batch-size", "2",
                     "--crop", "72", "96", "--scale", "0.2", "0.3", "--workers", "0",
                     "--no-progress", "--log-every", "1", "--threads", "1", "--no-eval",
                     "--source", f"{two_sources / 'street'}:0.5",
                     "--source", f"{two_sources / 'other'}:0.5", "--iters", "4",
                     "--data-on-device", "--device", "cpu", "--out", str(out)])
    assert rc == 0 and (out / "final.safetensors").is_file()
    recs = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert recs and all(np.isfinite(r["loss"]) for r in recs)


def test_a_written_text_table_trains_exactly_as_the_encoder_without_it(two_sources, tmp_path,
                                                                      monkeypatch):
    """`--write-text-table` then `--text-table`: the run a GPU machine without the text
    encoder would make. Same seed, same losses; the encoder is never built."""
    common = ["--config", "test-tiny", "--train-split", "x", "--batch-size", "2",
              "--crop", "72", "96", "--scale", "0.2", "0.3", "--workers", "0",
              "--no-progress", "--log-every", "1", "--threads", "1", "--no-eval",
              "--source", f"{two_sources / 'street'}:0.5",
              "--source", f"{two_sources / 'other'}:0.5", "--iters", "3", "--seed", "5"]
    table = tmp_path / "table.safetensors"
    assert train.main([*common, "--write-text-table", str(table), "--out", str(tmp_path / "w")]) == 0
    assert table.is_file() and not (tmp_path / "w" / "final.safetensors").exists()
    assert train.main([*common, "--out", str(tmp_path / "enc")]) == 0

    import lgseg_ros.text

    def no_encoder(*a, **k):
        raise AssertionError("the text encoder was built although --text-table was given")
    monkeypatch.setattr(lgseg_ros.text, "build_text_encoder", no_encoder)
    assert train.main([*common, "--text-table", str(table), "--out", str(tmp_path / "tab")]) == 0

    def losses(run):
        return [json.loads(x)["loss"] for x in (tmp_path / run / "train_log.jsonl").read_text().splitlines()]
    assert losses("tab") == pytest.approx(losses("enc"), rel=1e-5)

    from lgseg_ros.train.text_table import load_text_table
    with pytest.raises(ValueError, match="text encoder"):
        load_text_table(table, "openclip:ViT-B-32", None)
    enc = load_text_table(table, *_tiny_text())
    with pytest.raises(KeyError, match="no embedding for 1 name"):
        enc.encode(["sky", "a word no run asks"])


def _tiny_text():
    from lgseg_ros.model.configs import get_config
    cfg = get_config("test-tiny")
    return cfg.text_encoder, cfg.prompt_template


def test_agreement_scores_nested_words_as_training_targets_them():
    from lgseg_ros.train.agreement import _targets
    names = ["building", "building > window", "road"]
    label = np.array([[0, 1, 2, IGNORE]], np.uint8)
    assert _targets(label, names, ["window", "building"]).tolist() == [[1, 0, 2, IGNORE]]
    assert _targets(label, names, ["building"]).tolist() == [[0, 0, 1, IGNORE]]
    assert _targets(label, names, ["window"]).tolist() == [[1, 0, 1, IGNORE]]


def test_agreement_command_on_the_smoke_checkpoint(two_sources, tmp_path):
    from lgseg_ros.train import agreement
    out = tmp_path / "run"
    assert train.main(["--config", "test-tiny", "--source", str(two_sources / "street"),
                       "--train-split", "x", "--iters", "1", "--batch-size", "1",
                       "--crop", "72", "96", "--workers", "0", "--no-progress",
                       "--threads", "1", "--out", str(out), "--no-eval"]) == 0
    report = tmp_path / "agreement.json"
    assert agreement.main(["--checkpoint", str(out / "final.safetensors"),
                           "--data", str(two_sources / "street"), "--split", "x",
                           "--words", "building,window,sky", "--alone", "--regions", "window",
                           "--ask-as", "sky=heavens", "--long-side", "96",
                           "--sheet", str(tmp_path / "window.png"), "--out", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["images"] == 2 and r["asked_as"] == ["building", "window", "heavens"]
    for part in ("together", "alone"):
        ious = [v for v in r[part]["per_word_iou"].values() if v is not None]
        assert ious and all(0 <= v <= 100 for v in ious)
    assert r["regions"]["window"]["regions"] >= 1
    # the contact sheet: one row per image holding a labelled window, three panels each, the
    # middle one green exactly where the labels say window
    sheet = cv2.imread(str(tmp_path / "window.png"))
    assert r["sheet"]["rows"] == 2 and sheet.shape[0] == 2 * (200 + 4)
    image, labelled = np.split(sheet[:200], 3, axis=1)[:2]
    assert ((labelled == (0, 255, 0)).all(-1)).mean() > 0.01
    # what the word was painted on: the label under each marked pixel; the window chain's
    # share of them is the pixel precision itself
    w = r["regions"]["window"]
    assert set(w["marked_on"]) <= {"building", "building > window", "sky", "road", "tree",
                                   "car", "pavement", "pole", "sign symbol", "fence",
                                   "pedestrian", "bicyclist"}
    if w["marked_on"]:
        assert sum(w["marked_on"].values()) <= 100.1
        assert w["marked_on"].get("building > window", 0.0) == pytest.approx(
            w["pixel_precision"], abs=0.1)


def test_marked_on_names_the_labels_under_a_words_pixels_largest_first():
    from lgseg_ros.train.agreement import _marked_on
    where = np.zeros(256, np.int64)
    where[[0, 2, 255]] = [30, 60, 10]          # 255 (ignore) never reaches it in practice
    assert _marked_on(where, ["wall", "floor", "door"]) == {"door": 60.0, "wall": 30.0,
                                                             "255": 10.0}
    assert _marked_on(np.zeros(256, np.int64), ["wall"]) == {}


def test_agreement_routes_each_query_as_the_default_does(two_sources, tmp_path):
    """--checkpoint default scores what a user of the default Segmenter gets: each set and
    each word asked alone goes to the model runtime/routing.py picks (the shipped pair), and
    the report says which."""
    from lgseg_ros.train import agreement
    report = tmp_path / "routed.json"
    assert agreement.main(["--checkpoint", "default", "--data", str(two_sources / "street"),
                           "--split", "x", "--words", "road,traffic light", "--alone",
                           "--context", "sky", "--long-side", "96", "--threads", "1",
                           "--out", str(report)]) == 0
    r = json.loads(report.read_text())
    # among street words a part reads as its class (street model); alone it is the thing
    assert r["routes"] == {"road, traffic light, sky": "street", "road": "street",
                           "traffic light": "rooms"}
    for part in ("together", "alone"):
        assert all(v is None or 0 <= v <= 100 for v in r[part]["per_word_iou"].values())


def test_agreement_scores_one_name_with_the_nodes_margin(two_sources, tmp_path):
    """`lgseg agreement --single-label-margin M` (the node's single_label_margin): a word
    asked alone can only gain pixels as M grows, the words asked together are unchanged."""
    from lgseg_ros.train import agreement
    out = tmp_path / "run"
    assert train.main(["--config", "test-tiny", "--source", str(two_sources / "street"),
                       "--train-split", "x", "--iters", "1", "--batch-size", "1",
                       "--crop", "72", "96", "--workers", "0", "--no-progress",
                       "--threads", "1", "--out", str(out), "--no-eval"]) == 0
    reports = {}
    for m in ("0", "4"):
        reports[m] = tmp_path / f"m{m}.json"
        assert agreement.main(["--checkpoint", str(out / "final.safetensors"),
                               "--data", str(two_sources / "street"), "--split", "x",
                               "--words", "building,sky", "--alone", "--regions", "sky",
                               "--long-side", "96", "--single-label-margin", m,
                               "--out", str(reports[m])]) == 0
    r0, r4 = (json.loads(reports[m].read_text()) for m in ("0", "4"))
    assert r4["single_label_margin"] == 4.0
    assert r0["together"] == r4["together"] and r0["regions"] == r4["regions"]
    # the margin itself, on fixed logits: "none" leads by 0.5 and by 2.0
    logits = torch.tensor([[[[1.0, 0.0]], [[1.5, 2.0]]]])
    rgb = np.zeros((1, 2, 3), np.uint8)
    net = lambda x, text: logits.clone()                         # noqa: E731
    assert agreement._predict(net, rgb, None, 2).tolist() == [[1, 1]]
    assert agreement._predict(net, rgb, None, 2, 1.0).tolist() == [[0, 1]]
    with pytest.raises(SystemExit, match="single-label-margin"):
        agreement.main(["--checkpoint", "x", "--data", "x", "--words", "a",
                        "--single-label-margin", "-1"])
