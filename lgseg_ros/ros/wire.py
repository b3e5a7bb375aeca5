"""Input frames read from their serialized (CDR) form, checked before any copy is made.

The node subscribes to images with ``raw=True`` (issue 20, item 9). rclpy's normal path turns
a received sample into a C message and then into Python (a ``bytes`` and an ``array.array``
of ``data``): four buffers of the sample's size alive at once, so a 200 MB ``data`` field on
a 2x2 frame raised the node's peak RSS by 816 MB before the node could look at it. Taking
the serialized bytes skips both conversions; this module reads the fields the node checks
(header, sizes, encoding, format, data length) from those bytes, refuses what no
``max_image_pixels`` allows, and hands the frame path a message-shaped object whose
``data`` is a view into the received bytes: a good frame costs no copy here at all.

Fast DDS itself still reassembles and copies the whole sample before rclpy sees it: see the
README, Troubleshooting, "Oversized samples", for what is and is not bounded.

Wire layout (XCDR1 / plain CDR, what rmw_fastrtps sends): a 4-byte encapsulation header
(0x0000 big endian, 0x0001 little endian, then 2 option bytes), then the fields in order,
each aligned to its own size counted from the end of the encapsulation header; strings are a
uint32 length that includes the terminating NUL, then the bytes; sequences a uint32 count,
then the elements.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from types import SimpleNamespace

from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from lgseg_ros.labels import shown
from lgseg_ros.ros.frame_checks import MAX_FRAME_ID_CHARS, FrameRejected, check_frame, check_nanosec
from lgseg_ros.ros.image_conversion import ENCODINGS, check_pixel_limit

# Bytes per pixel of the widest encoding the node accepts (rgba16 / bgra16).
MAX_BYTES_PER_PIXEL = max(e.channels * e.itemsize for e in ENCODINGS.values())
# A PNG may be slightly larger than its raw pixels (a filter byte per row, zlib and chunk
# framing: well under 1% plus a few hundred bytes); JPEG is smaller. This much slack on top
# of the raw size of the largest allowed image leaves every real encoder room.
COMPRESSED_SLACK_BYTES = 1 << 20
# Real drivers pad rows to 4 to 512 bytes (GPU pitch); no row needs more than this.
MAX_ROW_PADDING = 4096
# encoding and format are short names ("rgb8", "jpeg", "rgb8; jpeg compressed bgr8").
MAX_NAME_CHARS = 256


class _Reader:
    """Sequential CDR reads over one buffer, bounds-checked (a short sample is refused)."""

    def __init__(self, raw: bytes | memoryview) -> None:
        self.buf = memoryview(raw)
        if len(self.buf) < 4:
            raise FrameRejected(f"serialized sample of {len(self.buf)} bytes is shorter than "
                                "its CDR encapsulation header")
        kind = bytes(self.buf[:2])
        # Plain CDR (XCDR1, what rmw_fastrtps sends) or plain XCDR2 (final types, as a peer
        # on another DDS may send): with no field wider than 4 bytes, as in Image and
        # CompressedImage, both lay the fields out the same way.
        if kind not in (b"\x00\x00", b"\x00\x01", b"\x00\x06", b"\x00\x07"):
            raise FrameRejected(f"CDR encapsulation {kind.hex()} is not plain CDR "
                                "(0000, 0001, 0006 or 0007)")
        self.order = "<" if kind[1] & 1 else ">"
        self.max_align = 4 if kind[1] >= 6 else 8
        self.pos = 4

    def take(self, n: int, field: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise FrameRejected(f"{field} claims {n} bytes at offset {self.pos} of a "
                                f"{len(self.buf)}-byte sample (truncated or corrupt)")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def _align(self, size: int) -> None:
        # XCDR2 aligns nothing to more than 4 bytes; XCDR1 aligns a float64 to 8.
        size = min(size, self.max_align)
        self.pos += (-(self.pos - 4)) % size

    def f64s(self, n: int, field: str) -> None:
        """Skip ``n`` float64 values (bounds-checked)."""
        self._align(8)
        self.take(8 * n, field)

    def u32(self, field: str) -> int:
        self._align(4)
        return struct.unpack(self.order + "I", self.take(4, field))[0]

    def i32(self, field: str) -> int:
        self._align(4)
        return struct.unpack(self.order + "i", self.take(4, field))[0]

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def string(self, field: str, max_chars: int) -> str:
        n = self.u32(f"{field} length")
        # Checked before the bytes are copied: the length is what the peer claims. A
        # character is at most 4 bytes of UTF-8, so more than 4*max_chars bytes are more
        # than max_chars characters (frame_checks counts the characters of shorter ones).
        if n > 4 * max_chars + 1:
            raise FrameRejected(f"{field} of {n - 1} bytes is longer than {max_chars} characters; "
                                "outputs copy the header, so it is refused")
        # Trailing NULs (the terminator, and a driver's fixed-size buffer: 'camera\0\0\0')
        # end the string as rclpy reads it too.
        raw = bytes(self.take(n, field)).rstrip(b"\0")
        # Refused rather than repaired: an output copies the header, and rclpy cuts a string
        # at its first NUL, so 'camera\0x' went out as 'camera', and invalid UTF-8 as U+FFFD
        # (audit round 18): the header would no longer be the one received.
        nul = raw.find(0)
        if nul >= 0:
            raise FrameRejected(f"{field} has a NUL byte at offset {nul}; strings end at the "
                                "first NUL, so it is refused")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FrameRejected(f"{field} is not valid UTF-8 (byte {e.start}); it is "
                                "refused") from None


def _header(r: _Reader) -> Header:
    sec = r.i32("header.stamp.sec")
    nanosec = r.u32("header.stamp.nanosec")
    check_nanosec(nanosec)
    frame_id = r.string("header.frame_id", MAX_FRAME_ID_CHARS)
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


@dataclass
class WireImage:
    """The fields of a sensor_msgs/Image the node uses; ``data`` is a view of the sample."""
    header: Header
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: memoryview


@dataclass
class WireCompressedImage:
    header: Header
    format: str
    data: memoryview


def read_image(raw: bytes | memoryview, max_pixels: int | None) -> WireImage:
    """A serialized sensor_msgs/Image, refused (FrameRejected naming the field and value)
    when its header is too long, its size is above ``max_pixels`` or its ``data`` is longer
    than ``step * height``. Encoding and step are checked later, by image_conversion."""
    r = _Reader(raw)
    header = _header(r)
    height, width = r.u32("height"), r.u32("width")
    encoding = r.string("encoding", MAX_NAME_CHARS)
    is_bigendian = r.u8("is_bigendian")
    step = r.u32("step")
    n = r.u32("data length")
    check_pixel_limit(width, height, max_pixels)
    # step is what the peer claims: a 2x2 frame with a 100 MB step would pass the
    # step*height check below, so a row may hold the widest pixel and padding, no more.
    max_step = width * MAX_BYTES_PER_PIXEL + MAX_ROW_PADDING
    if step > max_step:
        raise FrameRejected(f"step={step} is above {max_step} bytes (width*{MAX_BYTES_PER_PIXEL} + "
                            f"{MAX_ROW_PADDING} padding) for a {width}x{height} {shown(encoding)} image")
    if n > step * height:
        raise FrameRejected(f"data has {n} bytes, more than step*height = {step}*{height} = "
                            f"{step * height} for a {width}x{height} {shown(encoding)} image")
    data = r.take(n, "data")
    return WireImage(header, height, width, encoding, is_bigendian, step, data)


def read_compressed(raw: bytes | memoryview, max_pixels: int | None) -> WireCompressedImage:
    """A serialized sensor_msgs/CompressedImage, refused when its header is too long or its
    ``data`` is longer than any JPEG or PNG of ``max_pixels`` pixels can be. The image size
    in the JPEG/PNG header is checked later, by image_conversion, before decoding."""
    r = _Reader(raw)
    header = _header(r)
    fmt = r.string("format", MAX_NAME_CHARS)
    n = r.u32("data length")
    if max_pixels and max_pixels > 0:
        limit = max_pixels * MAX_BYTES_PER_PIXEL + COMPRESSED_SLACK_BYTES
        if n > limit:
            raise FrameRejected(f"CompressedImage data has {n} bytes, more than a JPEG or PNG of "
                                f"max_image_pixels={max_pixels} pixels can take ({limit})")
    data = r.take(n, "data")
    return WireCompressedImage(header, fmt, data)


# A refused sample above this size left Fast DDS holding a receive buffer as large (its
# payload pool keeps the largest payload it ever reallocated: 216 MB stayed after a 200 MB
# sample); the node then renews that subscription, which hands the pool back. Legit frames
# never get here unless refused, and a renewal is throttled per camera.
RENEW_INPUT_ABOVE_BYTES = 16 << 20

# CameraInfo is passed through as its serialized bytes. A real one is under 1 KB (a 256-
# character frame_id, D of 5-14 coefficients, K, R, P); an 80 MB D array raised peak RSS
# by 336 MB and kept 160 MB (the receive pool and the republished sample; probe round 4).
MAX_CAMERA_INFO_BYTES = 64 << 10


def check_camera_info(raw: bytes | memoryview) -> None:
    """A serialized sensor_msgs/CameraInfo the node may pass on as it is: at most
    MAX_CAMERA_INFO_BYTES, and every field there (header, sizes, distortion model and D, K,
    R, P, binning, ROI), with a frame_id of at most 256 characters. FrameRejected otherwise,
    naming the field. The bytes are republished unconverted, so a peer's 64 bytes of garbage
    or a sample cut short went out on ~/camera_info to every consumer (probe round 10)."""
    if len(raw) > MAX_CAMERA_INFO_BYTES:
        raise FrameRejected(f"{len(raw)} bytes, more than {MAX_CAMERA_INFO_BYTES} (a real "
                            "CameraInfo is under 1 KB)")
    r = _Reader(raw)
    check_frame(SimpleNamespace(header=_header(r)))
    r.u32("height")
    r.u32("width")
    r.string("distortion_model", MAX_NAME_CHARS)
    r.f64s(r.u32("d length"), "d")
    for field, n in (("k", 9), ("r", 9), ("p", 12)):
        r.f64s(n, field)
    for field in ("binning_x", "binning_y", "roi.x_offset", "roi.y_offset", "roi.height", "roi.width"):
        r.u32(field)
    r.u8("roi.do_rectify")
    # Up to 3 bytes of alignment padding may follow the last field; more is a sample with
    # something appended, which the node would have relayed whole (probe round 14).
    trailing = len(r.buf) - r.pos
    if trailing > 3:
        raise FrameRejected(f"{trailing} bytes after roi.do_rectify, the message's last field "
                            "(at most 3 bytes of padding may follow it)")


def read_frame(raw: bytes, compressed: bool, max_pixels: int | None) -> WireImage | WireCompressedImage:
    return read_compressed(raw, max_pixels) if compressed else read_image(raw, max_pixels)
