"""Training augmentation as real-time segmentation work uses it (BiSeNet, DDRNet, STDC...):
random scale, random crop padded with ignore, horizontal flip, colour jitter.

OpenCV/numpy on uint8 HxWx3 RGB + uint8 HxW labels; runs in DataLoader workers.
Randomness comes from torch's generator so that ``torch.manual_seed`` and the DataLoader's
per-worker seeding make runs reproducible without a separate numpy seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .datasets import IGNORE


def _rng() -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


@dataclass
class TrainAugment:
    crop: tuple[int, int] | None = (360, 480)  # (H, W); None keeps the scaled image
    scale: tuple[float, float] = (0.5, 2.0)
    base_size: tuple[int, int] | None = None  # resize to (H, W) before scaling (None: as stored)
    hflip: float = 0.5
    brightness: float = 0.25  # multiplicative factor in [1-b, 1+b]
    contrast: float = 0.25
    saturation: float = 0.25
    hue: float = 0.02  # fraction of the hue circle
    jitter_p: float = 0.8
    ignore: int = IGNORE

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rng = _rng()
        h, w = label.shape
        if self.base_size is not None:
            h, w = self.base_size
        s = rng.uniform(*self.scale)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        if (nh, nw) != image.shape[:2]:
            # INTER_AREA when shrinking avoids aliasing; labels must stay nearest (ids).
            interp = cv2.INTER_AREA if nh < image.shape[0] else cv2.INTER_LINEAR
            image = cv2.resize(image, (nw, nh), interpolation=interp)
            label = cv2.resize(label, (nw, nh), interpolation=cv2.INTER_NEAREST)
        if self.crop is not None:
            image, label = random_crop(image, label, self.crop, rng, self.ignore)
        if rng.random() < self.hflip:
            image, label = image[:, ::-1], label[:, ::-1]
        if rng.random() < self.jitter_p:
            image = color_jitter(image, rng, self.brightness, self.contrast, self.saturation,
                                 self.hue)
        return np.ascontiguousarray(image), np.ascontiguousarray(label)


def random_crop(image: np.ndarray, label: np.ndarray, size: tuple[int, int],
                rng: np.random.Generator, ignore: int = IGNORE):
    """Crop (H, W) at a random position; pad smaller images first (image 0, label ignore)."""
    ch, cw = size
    h, w = label.shape
    ph, pw = max(ch - h, 0), max(cw - w, 0)
    if ph or pw:
        # Padding goes on a random side so the model never learns "bottom/right is void".
        top, left = int(rng.integers(0, ph + 1)), int(rng.integers(0, pw + 1))
        image = cv2.copyMakeBorder(image, top, ph - top, left, pw - left,
                                   cv2.BORDER_CONSTANT, value=(0, 0, 0))
        label = cv2.copyMakeBorder(label, top, ph - top, left, pw - left,
                                   cv2.BORDER_CONSTANT, value=ignore)
        h, w = label.shape
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return image[y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]


def color_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float,
                 contrast: float, saturation: float, hue: float) -> np.ndarray:
    img = image.astype(np.float32)
    ops = list(rng.permutation(4))  # random order, as torchvision's ColorJitter
    for op in ops:
        if op == 0 and brightness > 0:
            img *= rng.uniform(1 - brightness, 1 + brightness)
        elif op == 1 and contrast > 0:
            mean = img.mean()
            img = (img - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean
        elif op == 2 and saturation > 0:
            gray = img @ np.array([0.299, 0.587, 0.114], np.float32)
            img = (img - gray[..., None]) * rng.uniform(1 - saturation, 1 + saturation) \
                + gray[..., None]
        elif op == 3 and hue > 0:
            hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
            shift = int(round(rng.uniform(-hue, hue) * 180))  # OpenCV's 8-bit hue is 0..179
            hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass
class EvalResize:
    """Resize the image to the network size; the label stays at its stored resolution so
    metrics are computed where the annotation lives (logits are upsampled to it)."""

    size: tuple[int, int] | None = None  # (H, W)

    def __call__(self, image: np.ndarray, label: np.ndarray):
        if self.size is not None and image.shape[:2] != tuple(self.size):
            h, w = self.size
            interp = cv2.INTER_AREA if h < image.shape[0] else cv2.INTER_LINEAR
            image = cv2.resize(image, (w, h), interpolation=interp)
        return image, label
