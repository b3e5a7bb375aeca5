"""`--data-on-device`: the training set held on the device as uint8 and augmented there.

Runs on the CPU device here (CI has no GPU); the code is the same on CUDA, where only the
tensors' device differs.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lgseg_ros.train.augment import TrainAugment
from lgseg_ros.train.datasets import IGNORE
from lgseg_ros.train.device_data import DeviceData, index_batches


class _Frames:
    """The two methods DeviceData reads: ``load(i)`` and ``len``; sources by ``locate``."""

    def __init__(self, pairs, sources=None):
        self.pairs, self._sources = pairs, sources or [0] * len(pairs)

    def __len__(self):
        return len(self.pairs)

    def load(self, i):
        return self.pairs[i]

    def locate(self, i):
        return self._sources[i], i


def _frame(h, w, seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    lbl = np.zeros((h, w), np.uint8)
    lbl[:, w // 2:] = 3                       # two blocks, so nearest scaling keeps ids
    lbl[: h // 4] = IGNORE
    return img, lbl


def _plain(**kw):
    base = dict(crop=(24, 32), scale=(1.0, 1.0), hflip=0.0, jitter_p=0.0)
    return TrainAugment(**{**base, **kw})


def test_without_augmentation_a_batch_is_the_stored_frames():
    pairs = [_frame(24, 32, s) for s in range(3)]
    data = DeviceData(_Frames(pairs, [0, 1, 1]), "cpu", _plain())
    assert isinstance(data.images, torch.Tensor) and data.images.dtype == torch.uint8
    images, labels, sources = data.batch([2, 0])
    assert images.shape == (2, 3, 24, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and sources.tolist() == [1, 0]
    want = torch.from_numpy(pairs[2][0]).permute(2, 0, 1).float() / 255.0
    assert torch.equal(images[0], want)
    assert torch.equal(labels[1], torch.from_numpy(pairs[0][1]).long())


def test_flip_pad_and_scale_keep_labels_ids_and_pad_with_ignore():
    img, lbl = _frame(24, 32, 0)
    flip = DeviceData(_Frames([(img, lbl)]), "cpu", _plain(hflip=1.0))
    images, labels, _ = flip.batch([0])
    assert torch.equal(labels[0], torch.from_numpy(lbl[:, ::-1].copy()).long())

    torch.manual_seed(1)
    pad = DeviceData(_Frames([(img, lbl)]), "cpu", _plain(crop=(40, 48)))
    images, labels, _ = pad.batch([0])
    assert images.shape == (1, 3, 40, 48)
    # The whole frame lies somewhere in the crop (scale 1: every pixel kept once);
    # around it, image 0 and label IGNORE.
    assert int((labels[0] != IGNORE).sum()) == int((lbl != IGNORE).sum())
    assert float(images[0].sum() * 255.0) == pytest.approx(float(img.astype(np.float64).sum()))
    ys, xs = torch.nonzero(labels[0] == 3, as_tuple=True)
    assert int(ys.max() - ys.min()) + 1 == 24 - 24 // 4 and int(xs.max() - xs.min()) + 1 == 16

    shrink = DeviceData(_Frames([(img, lbl)]), "cpu", _plain(crop=(12, 16), scale=(0.5, 0.5)))
    _, labels, _ = shrink.batch([0])
    assert set(labels.unique().tolist()) <= {0, 3, IGNORE}
    assert labels.shape == (1, 12, 16)


def test_the_global_seed_reproduces_a_batch_and_jitter_stays_in_range():
    pairs = [_frame(30, 40, s) for s in range(2)]
    aug = TrainAugment(crop=(24, 32), scale=(0.6, 1.4), hflip=0.5, jitter_p=1.0, hue=0.05)
    data = DeviceData(_Frames(pairs), "cpu", aug)
    torch.manual_seed(7)
    a = data.batch([0, 1, 0])
    torch.manual_seed(7)
    b = data.batch([0, 1, 0])
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0][0], a[0][2])       # the same frame drawn twice differs
    assert 0.0 <= float(a[0].min()) and float(a[0].max()) <= 1.0


def test_frames_of_different_sizes_are_kept_one_by_one_and_crop_is_required():
    data = DeviceData(_Frames([_frame(24, 32, 0), _frame(32, 24, 1)]), "cpu", _plain(crop=(16, 16)))
    assert isinstance(data.images, list) and len(data) == 2
    assert data.batch([0, 1])[0].shape == (2, 3, 16, 16)
    assert data.nbytes == 2 * 24 * 32 * 4
    with pytest.raises(ValueError, match="--crop"):
        DeviceData(_Frames([_frame(24, 32, 0)]), "cpu", TrainAugment(crop=None))


def test_index_batches_drops_the_partial_last_batch():
    assert list(index_batches(range(7), 3)) == [[0, 1, 2], [3, 4, 5]]
