"""Letterbox preprocessing and its inverse."""
import cv2
import numpy as np
import pytest

from lgseg_ros.runtime import preprocess as pp


@pytest.mark.parametrize("src,net,expect", [
    ((360, 480), (384, 480), (360, 480, 12, 0)),     # the benchmark frame: pad rows only
    ((720, 960), (384, 480), (360, 480, 12, 0)),     # downscale by 2, then pad
    ((480, 480), (384, 480), (384, 384, 0, 48)),     # square: pad columns
    ((100, 1000), (384, 480), (48, 480, 168, 0)),
])
def test_plan_keeps_aspect_and_centres(src, net, expect):
    g = pp.plan(src, net, keep_aspect=True)
    assert (g.resized_h, g.resized_w, g.top, g.left) == expect
    assert g.resized_h <= net[0] and g.resized_w <= net[1]


def test_plan_stretch_fills_canvas():
    g = pp.plan((123, 457), (384, 480), keep_aspect=False)
    assert (g.resized_h, g.resized_w, g.top, g.left) == (384, 480, 0, 0)


def test_preprocess_values_layout_and_padding():
    rgb = np.zeros((360, 480, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 128, 0
    g = pp.plan(rgb.shape[:2], (384, 480))
    x = pp.preprocess(rgb, g)
    assert x.shape == (1, 3, 384, 480) and x.dtype == np.float32
    inner = x[0, :, 12:372]
    np.testing.assert_allclose(inner[0], 1.0)
    np.testing.assert_allclose(inner[1], 128 / 255, rtol=1e-6)
    np.testing.assert_allclose(inner[2], 0.0)
    assert not x[0, :, :12].any() and not x[0, :, 372:].any()
    # A reused buffer with stale content must come out identical.
    buf = np.full((1, 3, 384, 480), 7.0, np.float32)
    np.testing.assert_array_equal(pp.preprocess(rgb, g, out=buf), x)


def test_preprocess_downscale_matches_cv2_area():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (720, 960, 3), np.uint8)
    g = pp.plan(rgb.shape[:2], (384, 480))
    x = pp.preprocess(rgb, g)
    ref = cv2.resize(rgb, (480, 360), interpolation=cv2.INTER_AREA).transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(x[0, :, 12:372], ref, atol=1e-6)


@pytest.mark.parametrize("src", [(360, 480), (720, 960), (240, 320), (480, 480), (97, 131)])
def test_unletterbox_inverts_the_geometry(src):
    """A label map carried into the canvas and back lands where it started."""
    h, w = src
    labels = np.zeros(src, np.uint8)
    labels[: h // 2, : w // 3] = 1
    labels[h // 2:, w // 3:] = 2
    labels[h // 4: 3 * h // 4, w // 2:] = 3
    g = pp.plan(src, (384, 480))
    canvas = np.full((384, 480), 200, np.uint8)  # padding value must never come back
    canvas[g.top:g.top + g.resized_h, g.left:g.left + g.resized_w] = cv2.resize(
        labels, (g.resized_w, g.resized_h), interpolation=cv2.INTER_NEAREST_EXACT)
    back = pp.unletterbox(canvas, g)
    assert back.shape == src and back.dtype == np.uint8
    assert 200 not in back
    # Nearest there and back can move a boundary by a pixel, no more.
    assert np.mean(back == labels) > 0.97
    if g.resized_h == h:
        np.testing.assert_array_equal(back, labels)


def test_unletterbox_uint16_and_shape_errors():
    g = pp.plan((50, 70), (64, 96))
    plane = np.full((64, 96), 65535, np.uint16)
    assert pp.unletterbox(plane, g).dtype == np.uint16
    with pytest.raises(ValueError, match="expected"):
        pp.unletterbox(np.zeros((32, 32), np.uint8), g)


@pytest.mark.parametrize("bad,msg", [
    (np.zeros((0, 5, 3), np.uint8), "empty"),
    (np.zeros((5, 5), np.uint8), "HxWx3"),
    (np.zeros((5, 5, 4), np.uint8), "HxWx3"),
    (np.zeros((5, 5, 3), np.float32), "uint8"),
    ([[1, 2, 3]], "numpy array"),
])
def test_validate_rgb_rejects_bad_frames(bad, msg):
    with pytest.raises(ValueError, match=msg):
        pp.validate_rgb(bad)
