"""Datasets, augmentation, label sampling and metrics of lgseg_ros.train (fast, CPU)."""
import math
import random

import cv2
import numpy as np
import pytest
import torch

from lgseg_ros.train.augment import TrainAugment, random_crop
from lgseg_ros.train.datasets import IGNORE, load_camvid, load_folder, read_classes_file
from lgseg_ros.train.losses import seg_loss
from lgseg_ros.train.metrics import BinaryIoU, ConfusionMatrix
from lgseg_ros.train.openvocab import (HELDOUT_RENAMES, TRAIN_SYNONYMS, LabelSampler,
                                       jitter_text, parse_rename)


# ---------------------------------------------------------------- metrics, by hand
def test_confusion_matrix_hand_made_case():
    target = torch.tensor([[0, 0, 1], [1, 2, IGNORE]])
    pred = torch.tensor([[0, 1, 1], [1, 2, 0]])  # the last pixel is ignored
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    # class 0: TP 1, FN 1 (predicted 1), FP 0 (the 0 on the ignored pixel does not count)
    # class 1: TP 2, FP 1, FN 0;  class 2: TP 1
    iou = cm.iou()
    assert iou == pytest.approx([1 / 2, 2 / 3, 1.0])
    s = cm.summary(["a", "b", "c"])
    assert s["miou"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert s["pixel_acc"] == pytest.approx(4 / 5)
    assert s["per_class_iou"]["b"] == pytest.approx(2 / 3)
    assert s["pixels"] == 5


def test_confusion_matrix_none_prediction_and_absent_class():
    cm = ConfusionMatrix(4)
    # class 3 never appears in target or prediction -> NaN, left out of the mean
    cm.update(torch.tensor([0, 4, 2, 2]), torch.tensor([0, 0, 2, 1]))
    iou = cm.iou()
    # 0: TP 1, FN 1 (answered "none" = 4) -> 1/2;  1: TP 0, FN 1 -> 0;  2: TP 1, FP 1 -> 1/2
    assert iou[:3] == pytest.approx([0.5, 0.0, 0.5])
    assert math.isnan(iou[3])
    s = cm.summary()
    assert s["miou"] == pytest.approx(1 / 3)
    assert s["none_rate"] == pytest.approx(1 / 4)
    assert s["per_class_iou"]["3"] is None
    with pytest.raises(ValueError):
        cm.update(torch.tensor([5]), torch.tensor([0]))


def test_binary_iou_hand_made_case():
    target = torch.tensor([2, 2, 1, 0, IGNORE, 2])
    pred_is_c = torch.tensor([1, 0, 1, 0, 1, 1])
    b = BinaryIoU()
    b.update(pred_is_c, target, c=2)
    # TP 2 (pos 0, 5), FN 1 (pos 1), FP 1 (pos 2); the ignored pixel counts nowhere
    assert (b.tp, b.fp, b.fn, b.tn) == (2, 1, 1, 1)
    assert b.iou() == pytest.approx(2 / 4)


# ---------------------------------------------------------------- datasets
def test_camvid_loads_with_void_ignored(camvid_root):
    ds = load_camvid(camvid_root, "val")
    assert len(ds) == 101 and ds.num_classes == 11
    img, lbl = ds[0]
    assert img.shape == (3, 360, 480) and img.dtype == torch.float32
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.max() > 0.5
    assert lbl.shape == (360, 480) and lbl.dtype == torch.int64
    values = set(lbl.unique().tolist())
    assert values <= set(range(11)) | {IGNORE}
    raw = cv2.imread(str(ds.pairs[0][1]), cv2.IMREAD_UNCHANGED)
    assert ((raw == 11) == (lbl.numpy() == IGNORE)).all()
    assert len(load_camvid(camvid_root, "train")) == 367


def _write_folder(root, n=3, ignore_line="ignore: 200"):
    (root / "images").mkdir()
    (root / "labels").mkdir()
    (root / "classes.txt").write_text(f"# my classes\nfloor\nperson\n\ndoor\n{ignore_line}\n")
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(root / "images" / f"f{i}.jpg"), rng.integers(0, 255, (16, 24, 3), np.uint8))
        lbl = rng.integers(0, 3, (16, 24)).astype(np.uint8)
        lbl[0, :5] = 200   # the declared ignore value
        lbl[1, :2] = 7     # a value that is no class: must become ignore, not a bad index
        cv2.imwrite(str(root / "labels" / f"f{i}.png"), lbl)
    (root / "val.txt").write_text("f2\n")


def test_folder_dataset(tmp_path):
    _write_folder(tmp_path)
    assert read_classes_file(tmp_path / "classes.txt") == (("floor", "person", "door"), 200)
    ds = load_folder(tmp_path, "val")
    assert len(ds) == 1 and ds.class_names == ("floor", "person", "door")
    img, lbl = ds[0]
    assert img.shape == (3, 16, 24) and lbl.shape == (16, 24)
    assert (lbl[0, :5] == IGNORE).all() and (lbl[1, :2] == IGNORE).all()
    assert set(lbl[2:].unique().tolist()) <= {0, 1, 2}
    assert len(load_folder(tmp_path, "train")) == 3  # no train.txt: every pair


def test_folder_dataset_rejects_bad_classes_file(tmp_path):
    _write_folder(tmp_path, ignore_line="ignore: 1")
    with pytest.raises(ValueError, match="collides"):
        load_folder(tmp_path)


# ---------------------------------------------------------------- augmentation
def _coded_pair(h=36, w=48):
    rng = np.random.default_rng(1)
    lbl = rng.integers(0, 11, (h, w)).astype(np.uint8)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = lbl * 20 + 10  # the image encodes its own label
    img[..., 1] = np.arange(w, dtype=np.uint8)[None] * 5
    return img, lbl


def test_augment_keeps_image_and_label_aligned_through_crop_pad_and_flip():
    img, lbl = _coded_pair()
    aug = TrainAugment(crop=(40, 40), scale=(1.0, 1.0), jitter_p=0.0, hflip=0.5)
    torch.manual_seed(0)
    flipped = 0
    for _ in range(20):
        im2, lb2 = aug(img, lbl)
        assert im2.shape == (40, 40, 3) and lb2.shape == (40, 40)
        valid = lb2 != IGNORE
        assert (~valid).sum() == 40 * 40 - 36 * 40  # 4 rows of ignore padding
        assert (im2[..., 0][valid] == lb2[valid] * 20 + 10).all()
        assert (im2[~valid] == 0).all()
        cols = im2[..., 1][valid.all(1)][0].astype(int)
        flipped += int(cols[0] > cols[-1])
    assert 0 < flipped < 20  # both orientations occur


def test_augment_scale_and_jitter():
    img, lbl = _coded_pair(90, 120)
    aug = TrainAugment(crop=(64, 64), scale=(0.5, 2.0))
    torch.manual_seed(1)
    outs = [aug(img, lbl) for _ in range(10)]
    for im2, lb2 in outs:
        assert im2.shape == (64, 64, 3) and im2.dtype == np.uint8
        assert set(np.unique(lb2)) <= set(range(11)) | {IGNORE}
    torch.manual_seed(1)
    again = [aug(img, lbl) for _ in range(10)]
    assert all((a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(outs, again))
    assert not all((outs[0][0] == o[0]).all() for o in outs[1:])


def test_random_crop_pads_with_ignore():
    img = np.full((4, 5, 3), 9, np.uint8)
    lbl = np.ones((4, 5), np.uint8)
    im2, lb2 = random_crop(img, lbl, (6, 8), np.random.default_rng(0))
    assert im2.shape == (6, 8, 3) and (lb2 == IGNORE).sum() == 48 - 20 and (lb2 == 1).sum() == 20


# ---------------------------------------------------------------- label sampling and loss
def test_label_sampler_subsets_none_target_and_synonyms():
    names = list(TRAIN_SYNONYMS)
    s = LabelSampler(names, subset_prob=1.0, synonym_prob=1.0, rng=random.Random(0))
    sizes = set()
    for _ in range(50):
        b = s.sample()
        k = len(b.classes)
        sizes.add(k)
        assert len(set(b.classes)) == k and len(b.names) == k
        for pos, c in enumerate(b.classes):
            assert b.lut[c] == pos
            assert b.names[pos] in TRAIN_SYNONYMS[names[c]]  # synonym_prob=1: always renamed
        dropped = set(range(11)) - set(b.classes)
        assert all(b.lut[c] == k for c in dropped)
        assert b.lut[IGNORE] == IGNORE
    assert len(sizes) > 5
    s2 = LabelSampler(names, subset_prob=1.0, none_target=False, rng=random.Random(0))
    b = s2.sample()
    assert all(b.lut[c] == IGNORE for c in set(range(11)) - set(b.classes))
    full = s2.full()
    assert full.names == names and full.classes == list(range(11))


def test_text_noise_moves_each_label_by_the_asked_angle_and_keeps_its_norm():
    g = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(64, 384, generator=g), dim=-1) * 2.0
    assert jitter_text(text, 0.0) is text
    for sigma in (0.5, 1.0):
        moved = jitter_text(text, sigma, torch.Generator().manual_seed(1))
        torch.testing.assert_close(moved.norm(dim=-1), text.norm(dim=-1))
        cos = torch.nn.functional.cosine_similarity(moved, text, dim=-1)
        # 384 dimensions: the cosine concentrates near 1 / sqrt(1 + sigma^2)
        assert cos.mean().item() == pytest.approx(1 / math.sqrt(1 + sigma ** 2), abs=0.02)
        assert cos.std().item() < 0.03
    a = jitter_text(text, 0.5, torch.Generator().manual_seed(2))
    b = jitter_text(text, 0.5, torch.Generator().manual_seed(3))
    assert not torch.allclose(a, b)   # fresh noise per draw, not a fixed offset


def test_heldout_renames_are_unseen_in_training():
    trained = {n for alts in TRAIN_SYNONYMS.values() for n in alts} | set(TRAIN_SYNONYMS)
    assert not set(HELDOUT_RENAMES.values()) & trained
    assert parse_rename("car=automobile, pedestrian = person") == {
        "car": "automobile", "pedestrian": "person"}
    with pytest.raises(ValueError):
        parse_rename("car")


def test_weighted_loss_matches_manual_weighting():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 2, 2)
    target = torch.tensor([[[0, 2], [1, IGNORE]]])
    classes = torch.tensor([[[4, 7], [1, 0]]])
    w = torch.zeros(8)
    w[4], w[7], w[1] = 1.0, 3.0, 0.5
    ce = -torch.log_softmax(logits, 1)
    expect = (1.0 * ce[0, 0, 0, 0] + 3.0 * ce[0, 2, 0, 1] + 0.5 * ce[0, 1, 1, 0]) / 4.5
    assert seg_loss(logits, target, classes, w).item() == pytest.approx(expect.item(), rel=1e-5)
    plain = (ce[0, 0, 0, 0] + ce[0, 2, 0, 1] + ce[0, 1, 1, 0]) / 3
    assert seg_loss(logits, target).item() == pytest.approx(plain.item(), rel=1e-5)
