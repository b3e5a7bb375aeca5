"""`lgseg pseudo-label` and the shipped teachers, on real frames with the real interpreters.

Each teacher's id -> name mapping is checked where a wrong offset would show: a street
frame has road at the bottom and sky or building at the top, a bedroom photo has a bed.
(The Cityscapes file's labels start with "background" while the network outputs train ids:
read with the wrong offset, its road would come out as "background".)
"""
from pathlib import Path

import cv2
import numpy as np
import pytest

from lgseg_ros.train import pseudo_label
from lgseg_ros.train.datasets import IGNORE, load_camvid, load_folder, read_label, read_rgb

SHARED = Path(__file__).resolve().parents[2] / "shared"
TEACHERS = SHARED / "teachers"
INDOOR = SHARED / "datasets" / "indoor"
ADE = TEACHERS / "ade20k_deeplabv3_mnv2.tflite"
CITYSCAPES = TEACHERS / "cityscapes_deeplab_mnv2_edgetpu_slim_quant.tflite"
VOC = TEACHERS / "pascal_voc_deeplabv3_mnv2_quant.tflite"

pytestmark = pytest.mark.skipif(not ADE.exists(), reason=f"teachers not found at {TEACHERS}")


@pytest.fixture(scope="module")
def street_frames(camvid_root):
    """Three CamVid train frames from different sequences and light, with human labels."""
    pairs = load_camvid(camvid_root, "train").pairs
    return [(read_rgb(img), read_label(lbl)) for img, lbl in (pairs[0], pairs[120], pairs[240])]


def _share(ids, names, region, name):
    sel = ids[region]
    sel = sel[sel >= 0]
    return float(np.mean(np.asarray(names)[sel] == name)) if sel.size else 0.0


@pytest.mark.parametrize("path", [ADE, CITYSCAPES], ids=["ade20k", "cityscapes"])
def test_street_teachers_name_road_and_sky_where_humans_did(path, street_frames):
    """On the pixels CamVid's annotators called road (sky), the teacher's most common
    class must be named "road" ("sky"): an id offset off by one would name them
    "background"/"sidewalk" (Cityscapes) or "sky"/"floor" (ADE20K)."""
    from lgseg_ros.train.teachers import Teacher
    t = Teacher(path)
    by_class = {3: [], 0: []}  # CamVid ids: road, sky
    for rgb, human in street_frames:
        ids, conf = t.predict(rgb)
        assert ids.shape == rgb.shape[:2] and conf.shape == rgb.shape[:2]
        assert 0.0 <= conf.min() and conf.max() <= 1.0
        for c in by_class:
            by_class[c].append(ids[(human == c) & (ids >= 0)])
    for c, name in ((3, "road"), (0, "sky")):
        got = np.concatenate(by_class[c])
        top = t.class_names[int(np.bincount(got).argmax())]
        assert top == name, f"human {name} pixels read mostly as {top!r}"


def test_voc_teacher_finds_the_cars_of_a_street_frame(street_frames):
    from lgseg_ros.train.teachers import Teacher
    rgb, human = street_frames[0]
    t = Teacher(VOC)
    ids, _ = t.predict(rgb)
    cars = human == 8  # CamVid's "car"
    assert _share(ids, t.class_names, cars, "car") > 0.3
    assert -1 in ids  # background is "no class", not a class named "background"


def test_ade_teacher_sees_a_bed_in_a_bedroom():
    from lgseg_ros.train.teachers import Teacher, majority
    t = Teacher(ADE)
    found = []
    for name in ("100_bedroom.jpg", "101_bedroom.jpg"):
        ids, _ = t.predict(read_rgb(INDOOR / "houses" / name))
        found.append([n for n, s in majority(ids, t.class_names)[:5]])
    assert all("bed" in top for top in found), found


def test_pseudo_label_writes_a_folder_dataset_train_reads(tmp_path):
    src = tmp_path / "photos"
    (src / "a").mkdir(parents=True)
    for name in ("100_bedroom.jpg", "100_kitchen.jpg"):
        (src / "a" / name).symlink_to(INDOOR / "houses" / name)
    out = tmp_path / "pl"
    argv = ["--teacher", str(ADE), "--images", str(src), "--out", str(out), "--no-progress",
            "--holdout-share", "0.5"]
    assert pseudo_label.main(argv) == 0
    classes = [c for c in (out / "classes.txt").read_text().splitlines() if not c.startswith("#")]
    # names merged by meaning: ADE's "person" is the concept CamVid calls "pedestrian"
    assert "pedestrian" in classes and "person" not in classes and "window" in classes
    stems = sorted(p.stem for p in (out / "labels").glob("*.png"))
    assert stems == ["a__100_bedroom", "a__100_kitchen"]
    train = (out / "train.txt").read_text().split()
    hold = (out / "holdout.txt").read_text().split()
    assert sorted(train + hold) == stems and not set(train) & set(hold)
    ds = load_folder(out, None)
    img, lbl = ds.load(0)
    assert img.shape[:2] == lbl.shape
    conf = cv2.imread(str(out / "confidence" / f"{stems[0]}.png"), cv2.IMREAD_UNCHANGED)
    raw = cv2.imread(str(out / "labels" / f"{stems[0]}.png"), cv2.IMREAD_UNCHANGED)
    # the teacher's unsure pixels are ignore, the sure ones are classes
    assert np.all(raw[conf < 0.5 * 255 - 1] == IGNORE)
    assert (raw != IGNORE).mean() > 0.5
    # a second run resumes: nothing left to label
    mtime = (out / "labels" / f"{stems[0]}.png").stat().st_mtime_ns
    assert pseudo_label.main(argv) == 0
    assert (out / "labels" / f"{stems[0]}.png").stat().st_mtime_ns == mtime
    # a stricter threshold leaves more to ignore
    strict = tmp_path / "strict"
    assert pseudo_label.main(["--teacher", str(ADE), "--images", str(src), "--out", str(strict),
                              "--no-progress", "--min-confidence", "0.95"]) == 0
    raw2 = cv2.imread(str(strict / "labels" / f"{stems[0]}.png"), cv2.IMREAD_UNCHANGED)
    assert (raw2 == IGNORE).sum() > (raw == IGNORE).sum()


def test_nesting_into_camvid_refines_only_inside_the_human_parent(tmp_path, camvid_root):
    from lgseg_ros.train import concepts as C
    out = tmp_path / "fine"
    assert pseudo_label.main(["--teacher", str(CITYSCAPES), "--teacher", str(ADE),
                              "--images", "camvid:train", "--nest-into-camvid",
                              "--road-markings", "--limit", "2", "--out", str(out),
                              "--no-progress"]) == 0
    ds = load_folder(out, "train")
    assert len(ds) == 2 and ds.class_names[:11] == load_camvid(camvid_root, "train").class_names
    camvid = load_camvid(camvid_root, "train")
    refined = 0
    for i in range(2):
        _, lbl = ds.load(i)
        _, human = camvid.load(i)
        for cid, name in enumerate(ds.class_names):
            parts = C.chain(name)
            sel = lbl == cid
            if len(parts) == 2 and sel.any():
                refined += int(sel.sum())
                parent = ds.class_names.index(parts[0])
                assert np.all(human[sel] == parent), f"{name} outside its parent"
        # every pixel keeps its human class or a refinement of it; void stays ignore
        assert np.all(lbl[human == IGNORE] == IGNORE)
    assert refined > 0


def test_eval_splits_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="evaluation only"):
        pseudo_label.main(["--teacher", str(ADE), "--images", "camvid:val",
                           "--out", str(tmp_path / "x")])


def test_evaluation_labels_are_never_a_training_source(tmp_path):
    from lgseg_ros.train.multisource import MultiSourceDataset, SourceSpec
    out = tmp_path / "val_eval"
    assert pseudo_label.main(["--teacher", str(CITYSCAPES), "--images", "camvid:val",
                              "--nest-into-camvid", "--for-evaluation", "--limit", "1",
                              "--out", str(out), "--no-progress"]) == 0
    assert (out / pseudo_label.EVALUATION_ONLY_MARKER).exists()
    with pytest.raises(ValueError, match="evaluation frames"):
        MultiSourceDataset([SourceSpec(str(out), 1.0)], split="train")
