"""Frame pre- and post-processing around the network: resize / letterbox and back.

The network runs at a fixed size (H, W multiples of its stride) so that engines and CUDA
graphs are built once. A camera frame of any size is scaled to fit (keeping its aspect
ratio, padding the rest) or stretched; the label image is then mapped back to the input
resolution with nearest-neighbour sampling, so ids are never blended into ids that were
never predicted.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where the input frame sits inside the network canvas.

    The resized frame occupies rows [top, top + resized_h) and columns
    [left, left + resized_w) of the (net_h, net_w) canvas.
    """

    src_h: int
    src_w: int
    net_h: int
    net_w: int
    resized_h: int
    resized_w: int
    top: int
    left: int


def validate_rgb(rgb: object) -> np.ndarray:
    """An HxWx3 uint8 array or ValueError saying what is wrong with it."""
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"image must be a numpy array (HxWx3 uint8 RGB), got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 RGB, got shape {rgb.shape}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"image is empty (shape {rgb.shape})")
    if rgb.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {rgb.dtype}")
    return rgb


def plan(src_hw: tuple[int, int], net_hw: tuple[int, int], keep_aspect: bool = True) -> Geometry:
    src_h, src_w = int(src_hw[0]), int(src_hw[1])
    net_h, net_w = int(net_hw[0]), int(net_hw[1])
    if not keep_aspect:
        return Geometry(src_h, src_w, net_h, net_w, net_h, net_w, 0, 0)
    scale = min(net_h / src_h, net_w / src_w)
    resized_h = min(net_h, max(1, round(src_h * scale)))
    resized_w = min(net_w, max(1, round(src_w * scale)))
    # Centred padding: the network sees the frame's centre where it was trained to look.
    top = (net_h - resized_h) // 2
    left = (net_w - resized_w) // 2
    return Geometry(src_h, src_w, net_h, net_w, resized_h, resized_w, top, left)


def _interp(src: int, dst: int) -> int:
    # INTER_AREA averages when shrinking (no aliasing); bilinear when enlarging.
    return cv2.INTER_AREA if dst < src else cv2.INTER_LINEAR


def preprocess(rgb: np.ndarray, geom: Geometry, out: np.ndarray | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB -> [1, 3, net_h, net_w] float32 in [0, 1] (pad = 0).

    ``out`` may be a preallocated buffer of that shape, reused frame to frame.
    """
    if (geom.resized_h, geom.resized_w) != (geom.src_h, geom.src_w):
        rgb = cv2.resize(rgb, (geom.resized_w, geom.resized_h),
                         interpolation=_interp(geom.src_h * geom.src_w, geom.resized_h * geom.resized_w))
    if out is None:
        out = np.zeros((1, 3, geom.net_h, geom.net_w), np.float32)
    elif out.shape != (1, 3, geom.net_h, geom.net_w) or out.dtype != np.float32:
        raise ValueError(f"preprocess buffer has shape {out.shape} {out.dtype}, "
                         f"need (1, 3, {geom.net_h}, {geom.net_w}) float32")
    else:
        # Only the padding must be cleared; the frame region is overwritten below.
        if geom.top or geom.left or geom.resized_h != geom.net_h or geom.resized_w != geom.net_w:
            out.fill(0.0)
    region = out[0, :, geom.top:geom.top + geom.resized_h, geom.left:geom.left + geom.resized_w]
    # HWC uint8 -> CHW float in one strided multiply, no intermediate copy of the frame.
    np.multiply(rgb.transpose(2, 0, 1), np.float32(1.0 / 255.0), out=region, casting="unsafe")
    return out


def unletterbox(plane: np.ndarray, geom: Geometry) -> np.ndarray:
    """A [net_h, net_w] map -> [src_h, src_w], nearest-neighbour, padding removed."""
    if plane.shape != (geom.net_h, geom.net_w):
        raise ValueError(f"network output is {plane.shape}, expected {(geom.net_h, geom.net_w)}")
    crop = plane[geom.top:geom.top + geom.resized_h, geom.left:geom.left + geom.resized_w]
    if crop.shape == (geom.src_h, geom.src_w):
        return np.ascontiguousarray(crop)
    # cv2.resize handles uint8/uint16/int16/float32 with INTER_NEAREST_EXACT (pixel-centre
    # aligned, unlike INTER_NEAREST's top-left bias); int32 is not among them.
    if crop.dtype == np.int32:
        raise ValueError("convert ids to uint8/uint16 before unletterbox")
    return cv2.resize(crop, (geom.src_w, geom.src_h), interpolation=cv2.INTER_NEAREST_EXACT)
