"""Colours for label masks: a stable colour per label name, colour masks and overlays.

A colour follows the label's *name*, not its id: the operator who asked for
["road", "car"] and then ["car", "person", "road"] sees road in the same colour in both,
across runs and machines (the hash is fixed, not Python's salted ``hash``). The
``palette`` colour map trades that for colours guaranteed distinct within one set.

ROS-free: used by the node, the demo and evaluation plots alike.
"""
from __future__ import annotations

import colorsys
import hashlib
from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np

from lgseg_ros.labels import unlabeled_value

COLORMAPS = ("hash", "palette")
UNLABELED_COLOR = (0, 0, 0)
_GOLDEN = 0.6180339887498949


def _hsv_to_rgb8(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


# Street-scene names keep the colours people know from Cityscapes (and synonyms share
# them), so a mask reads at a glance; every other name gets a hashed colour.
_CITYSCAPES = {
    ("road", "street", "lane"): (128, 64, 128),
    ("pavement", "sidewalk", "footpath"): (244, 35, 232),
    ("building", "house", "wall"): (70, 70, 70),
    ("pole", "lamp post", "post"): (153, 153, 153),
    ("sign symbol", "traffic sign", "sign", "traffic light"): (220, 220, 0),
    ("tree", "vegetation", "bush"): (107, 142, 35),
    ("sky",): (70, 130, 180),
    ("fence",): (190, 153, 153),
    ("car", "automobile", "vehicle", "truck", "bus"): (0, 0, 142),
    ("pedestrian", "person", "people", "human"): (220, 20, 60),
    ("bicyclist", "cyclist", "rider", "bicycle", "bike"): (119, 11, 32),
    ("terrain", "grass"): (152, 251, 152),
}
KNOWN_COLORS = {name: rgb for names, rgb in _CITYSCAPES.items() for name in names}


def color_for_label(name: str) -> tuple[int, int, int]:
    """(r, g, b) for a label name; the same on every run, machine and label order.

    Hashed colours keep saturation and value in a band that is visible both as a flat
    colour mask and blended over a camera image (no near-black, no near-white).
    """
    if name in KNOWN_COLORS:
        return KNOWN_COLORS[name]
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    hue = int.from_bytes(digest[0:2], "big") / 65536.0
    sat = 0.55 + 0.40 * digest[2] / 255.0
    val = 0.70 + 0.30 * digest[3] / 255.0
    return _hsv_to_rgb8(hue, sat, val)


def palette_color(index: int) -> tuple[int, int, int]:
    """Distinct colours by position (golden-ratio hue steps); depends on label order."""
    hue = (index * _GOLDEN + 0.11) % 1.0
    sat = 0.85 if index % 2 == 0 else 0.60
    val = 0.95 if (index // 2) % 2 == 0 else 0.75
    return _hsv_to_rgb8(hue, sat, val)


@lru_cache(maxsize=32)
def color_lut(names: tuple[str, ...], colormap: str = "hash") -> np.ndarray:
    """Lookup table id -> colour, 256 or 65536 rows (the mask dtype's range), read-only.

    Rows at and above len(names) (the unlabeled value included) are UNLABELED_COLOR.
    Cached: the table is built once per label set, never per frame.
    """
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colour map {colormap!r}; choose one of {', '.join(COLORMAPS)}")
    size = 256 if unlabeled_value(len(names)) == 255 else 65536
    lut = np.empty((size, 3), np.uint8)
    lut[:] = UNLABELED_COLOR
    for i, name in enumerate(names):
        lut[i] = color_for_label(name) if colormap == "hash" else palette_color(i)
    lut.flags.writeable = False
    return lut


def colorize(ids: np.ndarray, label_set_names: Sequence[str], colormap: str = "hash") -> np.ndarray:
    """HxWx3 uint8 RGB colour mask for an HxW id mask (uint8 or uint16); unlabeled is black."""
    lut = color_lut(tuple(label_set_names), colormap)
    if ids.dtype == np.uint8 and lut.shape[0] == 256:
        # cv2.LUT is ~1 ms at 640x480 against ~4 ms for numpy fancy indexing.
        return cv2.LUT(cv2.merge([ids, ids, ids]), lut.reshape(1, 256, 3))
    # clip: an id past the table (impossible from the Segmenter) shows as unlabeled.
    return np.take(lut, ids, axis=0, mode="clip")


def equal_mask(ids: np.ndarray, value: int) -> np.ndarray:
    """uint8 mask, 255 where ``ids == value``. cv2.compare in one native pass, except for a
    1x1 array, which OpenCV takes for a scalar and refuses (a 1x1 frame lost its overlay and
    class masks to that)."""
    if ids.size == 1:
        return np.where(ids == value, np.uint8(255), np.uint8(0)).astype(np.uint8)
    return cv2.compare(ids, value, cv2.CMP_EQ)


def overlay(rgb: np.ndarray, color: np.ndarray, alpha: float = 0.5,
            ids: np.ndarray | None = None, num_labels: int | None = None) -> np.ndarray:
    """Blend ``color`` over ``rgb`` with weight ``alpha`` (0: image only, 1: colours only).

    With ``ids`` and ``num_labels``, unlabeled pixels keep the camera image instead of
    being darkened by the black of the colour mask.
    """
    if rgb.shape != color.shape:
        raise ValueError(f"image {rgb.shape} and colour mask {color.shape} differ in shape")
    alpha = float(min(max(alpha, 0.0), 1.0))
    out = cv2.addWeighted(np.ascontiguousarray(rgb), 1.0 - alpha, color, alpha, 0.0)
    if ids is not None and num_labels is not None:
        unlabeled = equal_mask(ids, unlabeled_value(num_labels))
        cv2.copyTo(np.ascontiguousarray(rgb), unlabeled, out)
    return out
