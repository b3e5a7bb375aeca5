"""Colour per label name, colour masks and overlays."""
import subprocess
import sys

import numpy as np
import pytest

from lgseg_ros import viz
from lgseg_ros.labels import UNLABELED_8, UNLABELED_16


def test_colour_follows_the_name_not_the_order():
    a = viz.colorize(np.array([[0, 1]], np.uint8), ["road", "car"])
    b = viz.colorize(np.array([[2, 0]], np.uint8), ["car", "person", "road"])
    np.testing.assert_array_equal(a[0, 0], b[0, 0])  # road
    np.testing.assert_array_equal(a[0, 1], b[0, 1])  # car
    assert tuple(a[0, 0]) == viz.color_for_label("road")


def test_colour_is_stable_across_processes():
    # Python's str hash is salted per process; the colour must not be.
    code = "from lgseg_ros.viz import color_for_label; print(color_for_label('traffic light'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert out.stdout.strip() == str(viz.color_for_label("traffic light"))


def test_colours_are_visible_and_mostly_distinct():
    names = ["sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence",
             "car", "pedestrian", "bicyclist"]
    cols = [viz.color_for_label(n) for n in names]
    assert len(set(cols)) == len(cols)
    assert viz.color_for_label("road") == (128, 64, 128)  # Cityscapes' road, as people know it
    assert viz.color_for_label("person") == viz.color_for_label("pedestrian")
    for n in ["door", "floor", "forklift", "traffic cone", "pallet", "shelf"]:
        c = viz.color_for_label(n)
        assert max(c) >= 170 and c != viz.UNLABELED_COLOR  # hashed colours: value >= 0.7
    pal = [viz.palette_color(i) for i in range(64)]
    assert len(set(pal)) == 64


def test_unlabeled_is_black_in_8_and_16_bit():
    ids8 = np.array([[0, UNLABELED_8]], np.uint8)
    out = viz.colorize(ids8, ["a"])
    assert out.dtype == np.uint8 and out.shape == (1, 2, 3)
    assert tuple(out[0, 1]) == viz.UNLABELED_COLOR
    names = [f"l{i}" for i in range(300)]
    ids16 = np.array([[299, UNLABELED_16, 0]], np.uint16)
    out16 = viz.colorize(ids16, names)
    assert tuple(out16[0, 0]) == viz.color_for_label("l299")
    assert tuple(out16[0, 1]) == viz.UNLABELED_COLOR


def test_palette_colour_map_and_unknown_map():
    out = viz.colorize(np.array([[0, 1]], np.uint8), ["x", "y"], colormap="palette")
    assert tuple(out[0, 0]) == viz.palette_color(0) and tuple(out[0, 1]) == viz.palette_color(1)
    with pytest.raises(ValueError, match="colour map"):
        viz.colorize(np.zeros((1, 1), np.uint8), ["x"], colormap="rainbow")


def test_colorize_matches_the_lookup_table_on_a_real_sized_mask():
    rng = np.random.default_rng(1)
    names = [f"c{i}" for i in range(12)]
    ids = rng.integers(0, 12, (48, 64)).astype(np.uint8)
    ids[::7] = UNLABELED_8
    lut = viz.color_lut(tuple(names), "hash")
    np.testing.assert_array_equal(viz.colorize(ids, names), lut[ids])


def test_overlay_blends_labeled_pixels_and_keeps_the_image_elsewhere():
    rgb = np.full((2, 2, 3), 100, np.uint8)
    ids = np.array([[0, UNLABELED_8], [0, 0]], np.uint8)
    color = viz.colorize(ids, ["a"])
    out = viz.overlay(rgb, color, 0.25, ids=ids, num_labels=1)
    expect = np.round(0.75 * 100 + 0.25 * color[0, 0].astype(float)).astype(np.uint8)
    np.testing.assert_array_equal(out[0, 0], expect)
    np.testing.assert_array_equal(out[0, 1], rgb[0, 1])
    np.testing.assert_array_equal(viz.overlay(rgb, color, 0.0), rgb)
    np.testing.assert_array_equal(viz.overlay(rgb, color, 1.0), color)
    with pytest.raises(ValueError, match="shape"):
        viz.overlay(rgb, color[:1], 0.5)
