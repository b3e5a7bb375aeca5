"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

The PyPI cv_bridge is a ROS 1 port that breaks on numpy 2, and a numpy view of
``msg.data`` is faster than cv_bridge anyway: rgb8 input costs no copy at all. Every
check a bad header can fail happens here, before the frame reaches the model, and fails
with ``ImageConversionError`` whose message says what was wrong, so the node can log it
and keep serving the next frame.

This module imports no rclpy: it works on anything shaped like the messages (the node
passes real ones, the tests too), which keeps it testable without a ROS graph.
"""
from __future__ import annotations

import io
import struct
import sys
import zlib
from dataclasses import dataclass

# OpenCV's decoder cap (OPENCV_IO_MAX_IMAGE_PIXELS) is set in lgseg_ros/__init__.py, before
# any cv2 import: a second line of defence behind the header checks below.
import cv2
import numpy as np

# JPEG through libjpeg-turbo in strict mode: a recoverable error (data cut short and closed
# with an end marker, a corrupt segment) raises instead of decoding the rest grey, and
# libjpeg's warning text comes back in the exception, not on the process's stderr. OpenCV
# offers neither: it printed "Corrupt JPEG data: ..." outside the node's log and served the
# damaged frame. Without the package (it is in every requirements file) OpenCV decodes, as
# before.
try:
    import simplejpeg  # noqa: E402
except ImportError:     # pragma: no cover - exercised where the wheel is missing
    simplejpeg = None
# PNG through Pillow for the same reasons: its decoder raises with the reason (a bad CRC, a
# stream cut short), where OpenCV's libpng printed "libpng error: ..." to the process's stderr
# for every damaged frame, outside the node's log and its throttle.
try:
    from PIL import Image as PILImage  # noqa: E402
except ImportError:     # pragma: no cover - exercised where the wheel is missing
    PILImage = None

from lgseg_ros.labels import shown  # noqa: E402


class ImageConversionError(ValueError):
    """A frame that cannot be converted; the message says why (the node logs and skips it)."""


@dataclass(frozen=True)
class _Encoding:
    channels: int
    itemsize: int  # bytes per channel value
    # cv2 conversion code to RGB, None when the data already is RGB; "shift" for 16-bit
    # encodings is applied first (>> 8 keeps the most significant byte).
    to_rgb: int | None


def _code(*names: str) -> int:
    # OpenCV named its Bayer codes after the second row of the pattern; 4.x+ adds aliases
    # named after the first row (what ROS uses). Prefer the unambiguous alias.
    for name in names:
        if hasattr(cv2, name):
            return getattr(cv2, name)
    raise AttributeError(names)


ENCODINGS: dict[str, _Encoding] = {
    "rgb8": _Encoding(3, 1, None),
    "bgr8": _Encoding(3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": _Encoding(4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": _Encoding(4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": _Encoding(1, 1, cv2.COLOR_GRAY2RGB),
    "rgb16": _Encoding(3, 2, None),
    "bgr16": _Encoding(3, 2, cv2.COLOR_BGR2RGB),
    "rgba16": _Encoding(4, 2, cv2.COLOR_RGBA2RGB),
    "bgra16": _Encoding(4, 2, cv2.COLOR_BGRA2RGB),
    "mono16": _Encoding(1, 2, cv2.COLOR_GRAY2RGB),
    "bayer_rggb8": _Encoding(1, 1, _code("COLOR_BayerRGGB2RGB", "COLOR_BayerBG2RGB")),
    "bayer_bggr8": _Encoding(1, 1, _code("COLOR_BayerBGGR2RGB", "COLOR_BayerRG2RGB")),
    "bayer_gbrg8": _Encoding(1, 1, _code("COLOR_BayerGBRG2RGB", "COLOR_BayerGR2RGB")),
    "bayer_grbg8": _Encoding(1, 1, _code("COLOR_BayerGRBG2RGB", "COLOR_BayerGB2RGB")),
    # yuv422 is UYVY in ROS (sensor_msgs/image_encodings.hpp); yuv422_yuy2 is YUYV.
    "yuv422": _Encoding(2, 1, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": _Encoding(2, 1, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": _Encoding(2, 1, cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": _Encoding(2, 1, cv2.COLOR_YUV2RGB_YUY2),
}

# Encodings that are images but not camera pictures: segmenting a depth map or a label
# image as if it were a photo gives confident nonsense, so these get a specific message.
_NOT_A_PICTURE = {
    "16UC1": "16UC1 is a depth or label image",
    "16SC1": "16SC1 is a depth or label image",
    "32FC1": "32FC1 is a depth image",
    "64FC1": "64FC1 is a depth image",
    "32SC1": "32SC1 is a label image",
    "8UC1": "8UC1 has no colour meaning (publish it as mono8 if it is a grey picture)",
    "8UC3": "8UC3 has no channel order (publish it as rgb8 or bgr8)",
    "8UC4": "8UC4 has no channel order (publish it as rgba8 or bgra8)",
}

SUPPORTED_ENCODINGS = tuple(ENCODINGS)


def _check_header(msg, max_pixels: int | None) -> _Encoding:
    enc = ENCODINGS.get(msg.encoding)
    if enc is None:
        why = _NOT_A_PICTURE.get(msg.encoding)
        if why:
            raise ImageConversionError(f"unsupported encoding {shown(msg.encoding)}: {why}; "
                                       f"supported: {', '.join(SUPPORTED_ENCODINGS)}")
        raise ImageConversionError(f"unsupported encoding {shown(msg.encoding)}; "
                                   f"supported: {', '.join(SUPPORTED_ENCODINGS)}")
    h, w = int(msg.height), int(msg.width)
    if h <= 0 or w <= 0:
        raise ImageConversionError(f"zero-size image {w}x{h}")
    check_pixel_limit(w, h, max_pixels)
    if enc.channels == 2 and w % 2:
        raise ImageConversionError(f"{msg.encoding} needs an even width, got {w}")
    return enc


def check_pixel_limit(width: int, height: int, max_pixels: int | None) -> None:
    """Raise when width*height is above max_pixels (None or <= 0: no limit)."""
    if max_pixels and max_pixels > 0 and width * height > max_pixels:
        raise ImageConversionError(
            f"{width}x{height} = {width * height} pixels is above max_image_pixels="
            f"{max_pixels}; to serve this camera, start the node with a larger one "
            "(-p max_image_pixels:=N)")


def image_to_numpy(msg, max_pixels: int | None = None) -> np.ndarray:
    """A read-only numpy view (H, W) or (H, W, C) of ``msg.data``, honouring step and endianness.

    No copy is made: the view keeps ``msg.data`` alive. Row padding (step larger than
    width * bytes per pixel) is skipped through the array's strides.
    """
    enc = _check_header(msg, max_pixels)
    h, w = int(msg.height), int(msg.width)
    row_bytes = w * enc.channels * enc.itemsize
    step = int(msg.step)
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width*bytes per pixel = {row_bytes} "
            f"({w} x {enc.channels * enc.itemsize}) for {msg.encoding}")
    if enc.itemsize > 1 and step % enc.itemsize:
        raise ImageConversionError(f"step {step} is not a multiple of {enc.itemsize} for {msg.encoding}")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    # The message defines len(data) == step * height; publishers that drop the padding of
    # the last row are tolerated since nothing is read from it.
    expected, tolerated = step * h, step * (h - 1) + row_bytes
    if buf.size not in (expected, tolerated):
        raise ImageConversionError(
            f"data has {buf.size} bytes, expected step*height = {step}*{h} = {expected} "
            f"for a {w}x{h} {msg.encoding} image")
    if enc.itemsize == 1:
        dtype = np.dtype(np.uint8)
    else:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
    shape = (h, w) if enc.channels == 1 else (h, w, enc.channels)
    strides = (step, enc.itemsize) if enc.channels == 1 else (step, enc.channels * enc.itemsize, enc.itemsize)
    arr = np.ndarray(shape, dtype=dtype, buffer=buf, strides=strides)
    arr.flags.writeable = False
    return arr


def image_to_rgb(msg, max_pixels: int | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB from any supported sensor_msgs/Image.

    rgb8 without row padding is returned as a view (no copy); everything else costs one
    OpenCV conversion. Raises ImageConversionError for anything that cannot be served.
    """
    arr = image_to_numpy(msg, max_pixels)
    enc = ENCODINGS[msg.encoding]
    if enc.itemsize == 2:
        arr = (arr >> 8).astype(np.uint8)
    if enc.to_rgb is None:
        return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return cv2.cvtColor(arr, enc.to_rgb)


# --- CompressedImage -------------------------------------------------------------------

# Markers and fill bytes read before a JPEG's frame header (SOF). A camera writes about 10
# segments there (APP0/APP1, DQT, DHT, ...; an ICC profile adds at most 255 APP2 chunks);
# the walk is Python, holding the GIL: a 34 MB JPEG with 8.6 million empty COM segments
# before its SOF held the node for 1.6 s, 34 MB of fill bytes for 2.4 s (probe round 10).
MAX_JPEG_HEADER_STEPS = 4096


def compressed_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) read from a PNG or JPEG header without decoding, else None.

    Lets the pixel limit reject a huge frame before paying for its decode. A JPEG with more
    than MAX_JPEG_HEADER_STEPS markers before its frame header raises ImageConversionError.
    """
    b = bytes(data[:32]) if len(data) >= 32 else bytes(data)
    if b.startswith(b"\x89PNG\r\n\x1a\n") and len(b) >= 24 and b[12:16] == b"IHDR":
        w, h = struct.unpack(">II", b[16:24])
        return w, h
    if b.startswith(b"\xff\xd8"):
        mv = memoryview(data)
        i, n = 2, len(mv)
        for _ in range(MAX_JPEG_HEADER_STEPS):
            if i + 4 > n:
                return None
            if mv[i] != 0xFF:
                return None
            marker = mv[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
                i += 2
                continue
            seg_len = (mv[i + 2] << 8) | mv[i + 3]
            # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                if i + 9 > n:
                    return None
                h = (mv[i + 5] << 8) | mv[i + 6]
                w = (mv[i + 7] << 8) | mv[i + 8]
                return w, h
            i += 2 + seg_len
        raise ImageConversionError(
            f"JPEG CompressedImage of {len(mv)} bytes has more than {MAX_JPEG_HEADER_STEPS} "
            "markers or fill bytes before its frame header (a camera writes about 10); not decoded")
    return None


# Formats OpenCV would decode but whose size this module does not read before decoding:
# refused by name. Each once let a kilobyte-sized message claim a giant image (a 1 KB RLE
# BMP of 30000x30000 cost 3-5 GB and 6-10 s; a 256 KB WebP of 12000x12000, 1.8 GB).
_REFUSED_FORMATS = (
    (b"BM", "BMP"),
    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "BigTIFF"), (b"MM\x00+", "BigTIFF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"\xff\x4f\xff\x51", "JPEG 2000 codestream"),
    (b"#?RADIANCE", "Radiance HDR"), (b"#?RGBE", "Radiance HDR"),
    (b"\x59\xa6\x6a\x95", "Sun raster"), (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"PF", "PFM"), (b"Pf", "PFM"),
    (b"P1", "PBM"), (b"P2", "PGM"), (b"P3", "PPM"), (b"P4", "PBM"), (b"P5", "PGM"),
    (b"P6", "PPM"), (b"P7", "PAM"),
)
ACCEPTED_COMPRESSED = ("jpeg", "png")
# A camera writes baseline JPEG (1 scan); progressive encoders write about 10. libjpeg runs
# every scan over the whole image and takes as many as it is given: a 337 KB 2048x2048 JPEG
# repeating one 16-byte scan 20,000 times held the node's worker for 7.7 s. At the cap a
# 4 MP frame still costs a pass per scan (64 scans: 0.6-0.7 s against 0.05 s for 10, on the
# 2-core VM), so the cap is about 3x what an encoder writes, not 6x.
MAX_JPEG_SCANS = 32


def jpeg_scan_count(data: bytes | memoryview) -> int:
    """Start-of-scan markers (FF DA). Entropy-coded data stuffs every FF byte with 00, so
    FF DA there is always a marker; one inside an APPn segment (an EXIF thumbnail's) counts
    too, which only makes the count an upper bound."""
    return bytes(data).count(b"\xff\xda")


# PNG chunks allowed before a frame is decoded: 64, plus one per 4 KB of the file. Encoders
# write image data in chunks of 8-64 KB (libpng 8 KB, Pillow 64 KB) and a few small ones
# beside them. Pillow walks chunks in Python holding the GIL: a 15 MB PNG of a million empty
# chunks held every thread of the node for 2 s (test_image_conversion.py prints it).
PNG_CHUNKS_BASE = 64
PNG_BYTES_PER_CHUNK = 4096


def _png_chunk_heads(view: memoryview):
    """(position, kind, length) of each chunk after the signature, up to IEND or the end of
    the data: only each chunk's 8-byte head is read, its body skipped."""
    pos, end = 8, len(view)
    while pos + 8 <= end:
        length = int.from_bytes(view[pos:pos + 4], "big")
        kind = bytes(view[pos + 4:pos + 8])
        yield pos, kind, length
        if kind == b"IEND":
            return
        pos += 12 + length


def png_chunk_count(data: bytes | memoryview, limit: int) -> int:
    """Chunks from the signature to IEND (or the end of the data), counting stops past
    ``limit``: the walk costs at most ``limit`` + 1 steps."""
    count = 0
    for count, _ in enumerate(_png_chunk_heads(memoryview(data)), 1):
        if count > limit:
            break
    return count


# What Pillow is given of a PNG: its image (IHDR, PLTE, IDAT, a fresh IEND). Pillow parses every
# ancillary chunk it knows, and each cost something without changing a pixel of the RGB the
# node makes: a 34 MB tEXt, zTXt, eXIf or private chunk beside a 16x16 image (within the size
# cap of a 4 MP frame) was read, split, decoded and kept, 104-172 MB of Python allocations for
# that frame; an APNG control chunk out of place, or a palette with a tRNS table, made Pillow
# print a UserWarning to the process's stderr, outside the node's log and its throttle. Pillow
# does not check IDAT CRCs either (libpng did): they are checked here, and a chunk that runs
# past the end of the data, or data without IEND, is a frame cut short.
PNG_IMAGE_CHUNKS = (b"IHDR", b"PLTE", b"IDAT")
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def png_image_only(data: bytes | memoryview, limit: int) -> bytes:
    """The PNG's signature, IHDR, PLTE and IDAT chunks and an IEND, as one bytes object
    (the one copy the decoder needs). ImageConversionError, naming the chunk, for more than
    ``limit`` chunks, a chunk past the end, a wrong CRC on a kept chunk, or no IEND."""
    view = memoryview(data)
    end = len(view)
    kept = [view[:8]]
    for count, (pos, kind, length) in enumerate(_png_chunk_heads(view), 1):
        if count > limit:
            raise ImageConversionError(
                f"PNG CompressedImage of {end} bytes has more than {limit} chunks (an encoder "
                f"writes one per 8-64 KB of image data; {PNG_CHUNKS_BASE} + one per "
                f"{PNG_BYTES_PER_CHUNK // 1024} KB are allowed); not decoded")
        if kind == b"IEND":
            break
        if pos + 12 + length > end:
            raise ImageConversionError(
                f"PNG CompressedImage of {end} bytes: chunk {shown(kind.decode('latin-1'))} at "
                f"byte {pos} claims {length} bytes, past the end (cut short); not decoded")
        if kind == b"IHDR" and pos != 8:
            # Pillow took the last IHDR's size: a 0.4 MB PNG whose second IHDR said
            # 12000x12000, behind a first one of 16x16 that the pixel limit had passed,
            # decoded to 1.4 GB in 3 s (probe round 12). libpng refused it.
            raise ImageConversionError(
                f"PNG CompressedImage of {end} bytes has a second IHDR chunk at byte {pos} "
                "(its size is read from the first); not decoded")
        if (kind == b"IHDR" and length != 13) or (kind == b"PLTE" and length > 768):
            # the PNG standard's sizes (13 bytes; 256 colours of 3): Pillow read whatever the
            # length said, and a 34 MB IHDR or PLTE cost ~100 MB as a large tEXt did
            raise ImageConversionError(
                f"PNG CompressedImage of {end} bytes: chunk {shown(kind.decode('latin-1'))} of "
                f"{length} bytes (at most {13 if kind == b'IHDR' else 768}); not decoded")
        if kind in PNG_IMAGE_CHUNKS:
            body = view[pos + 8:pos + 8 + length]
            crc = int.from_bytes(view[pos + 8 + length:pos + 12 + length], "big")
            if zlib.crc32(body, zlib.crc32(kind)) != crc:
                raise ImageConversionError(
                    f"PNG CompressedImage of {end} bytes: chunk {shown(kind.decode('latin-1'))} "
                    f"at byte {pos} fails its CRC (damaged); not decoded")
            kept.append(view[pos:pos + 12 + length])
    else:
        raise ImageConversionError(
            f"PNG CompressedImage of {end} bytes ends without its IEND chunk (cut short); "
            "not decoded")
    kept.append(_PNG_IEND)
    return b"".join(kept)


def compressed_format(data: bytes | memoryview) -> str:
    """'jpeg', 'png', or the name of what the bytes are (refused), from their magic bytes."""
    head = bytes(data[:16])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp":
        return "AVIF/HEIF" if head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1") else "ISO media"
    for magic, name in _REFUSED_FORMATS:
        if head.startswith(magic):
            return name
    return f"unrecognised data (first bytes {head[:8].hex(' ')})"


def compressed_to_rgb(msg, max_pixels: int | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB from a sensor_msgs/CompressedImage in JPEG or PNG.

    The size is read from the JPEG SOF or PNG IHDR header and checked against max_pixels
    before anything is decoded; every other format is refused by name, since OpenCV would
    allocate whatever size its header claims.
    """
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageConversionError("empty CompressedImage")
    fmt = compressed_format(data.data)
    if fmt not in ACCEPTED_COMPRESSED:
        raise ImageConversionError(
            f"CompressedImage in {fmt} (format field {shown(msg.format)}, {data.size} bytes) "
            "is not accepted: only JPEG and PNG, whose size is checked before decoding")
    size = compressed_size(data.data)
    if size is None:
        raise ImageConversionError(
            f"{fmt} CompressedImage of {data.size} bytes: no image size in its header "
            "(truncated or corrupt); not decoded")
    if size[0] == 0 or size[1] == 0:
        raise ImageConversionError(f"zero-size compressed image {size[0]}x{size[1]}")
    check_pixel_limit(size[0], size[1], max_pixels)
    if fmt == "jpeg":
        scans = jpeg_scan_count(data.data)
        if scans > MAX_JPEG_SCANS:
            raise ImageConversionError(
                f"JPEG CompressedImage of {data.size} bytes has {scans} scans, more than "
                f"{MAX_JPEG_SCANS} (a camera writes 1, a progressive encoder about 10; each "
                "scan costs a pass over the whole image); not decoded")
    if fmt == "png":
        image_only = png_image_only(data.data, PNG_CHUNKS_BASE + data.size // PNG_BYTES_PER_CHUNK)
    if fmt == "jpeg" and simplejpeg is not None:
        return _decode_jpeg_strict(data, size, msg)
    if fmt == "png" and PILImage is not None:
        return _decode_png_strict(image_only, data.size, size, msg)
    # The fallback decodes the same checked image chunks that Pillow would.
    encoded = np.frombuffer(image_only, np.uint8) if fmt == "png" else data
    try:
        bgr = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    except cv2.error as e:  # OPENCV_IO_MAX_IMAGE_PIXELS and friends raise
        raise ImageConversionError(f"could not decode {fmt} CompressedImage: "
                                   f"{shown(str(e).strip(), 120)}") from None
    if bgr is None or bgr.size == 0:
        raise ImageConversionError(
            f"could not decode {fmt} CompressedImage (format field {shown(msg.format)}, "
            f"{data.size} bytes)")
    # Swapped sides are a JPEG whose EXIF orientation imdecode applied (OpenCV fallback).
    if (bgr.shape[1], bgr.shape[0]) not in (size, size[::-1]):
        raise ImageConversionError(f"{fmt} decoded to {bgr.shape[1]}x{bgr.shape[0]}, its header "
                                   f"said {size[0]}x{size[1]}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _decode_png_strict(image_only: bytes, nbytes: int, size: tuple[int, int], msg) -> np.ndarray:
    """RGB from a PNG's image chunks (png_image_only), refusing a damaged one with Pillow's
    reason; nothing is printed. 16-bit samples keep their high byte, as OpenCV's 8-bit decode
    did. The size was checked against max_image_pixels from the IHDR before this is called."""
    try:
        with PILImage.open(io.BytesIO(image_only), formats=["PNG"]) as im:
            if im.size != tuple(size):   # before anything is allocated for the pixels
                raise ImageConversionError(
                    f"PNG CompressedImage of {nbytes} bytes: the decoder read a size of "
                    f"{im.size[0]}x{im.size[1]} where its header says {size[0]}x{size[1]}; "
                    "not decoded")
            im.load()
            if im.mode.startswith("I"):    # 16-bit grey ("I;16", "I;16B") or 32-bit "I"
                grey = (np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8)
                rgb = np.repeat(grey[..., None], 3, axis=2)
            else:
                rgb = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except ImageConversionError:
        raise
    except Exception as e:   # Pillow raises OSError, SyntaxError, ValueError, EOFError, ...
        raise ImageConversionError(
            f"could not decode PNG CompressedImage (format field {shown(msg.format)}, "
            f"{nbytes} bytes): {shown(str(e).strip(), 200)}") from None
    return np.ascontiguousarray(rgb)


def _decode_jpeg_strict(data: np.ndarray, size: tuple[int, int], msg) -> np.ndarray:
    """RGB from a JPEG, refusing any frame libjpeg had to repair. EXIF orientation is not
    applied: the masks keep the geometry the camera stored, which its CameraInfo describes.
    The decode releases the GIL, as OpenCV's did."""
    try:
        rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError as e:    # libjpeg's error or warning, e.g. premature end of data
        raise ImageConversionError(
            f"could not decode JPEG CompressedImage (format field {shown(msg.format)}, "
            f"{data.size} bytes): {shown(str(e).strip(), 120)}; a camera sends whole "
            "frames, so this one was cut short or damaged on the way") from None
    if (rgb.shape[1], rgb.shape[0]) != size:
        raise ImageConversionError(f"jpeg decoded to {rgb.shape[1]}x{rgb.shape[0]}, its header "
                                   f"said {size[0]}x{size[1]}")
    return rgb


# --- numpy -> Image ----------------------------------------------------------------------

_OUT_ENCODINGS = {
    (np.dtype(np.uint8), 1): "mono8",
    (np.dtype(np.uint16), 1): "16UC1",
    (np.dtype(np.uint8), 3): "rgb8",
}


def numpy_to_image(array: np.ndarray, encoding: str | None = None, header=None, image_cls=None):
    """A sensor_msgs/Image holding ``array`` (HxW or HxWxC), with ``header`` copied as is.

    ``encoding`` defaults from dtype and channels (mono8, 16UC1, rgb8). 16-bit data is
    written in this machine's byte order and ``is_bigendian`` says which. One copy
    (``tobytes``), about 0.15 ms for 640x480 rgb8.
    """
    if image_cls is None:
        from sensor_msgs.msg import Image as image_cls  # deferred: keeps this module ROS-free to import
    a = np.ascontiguousarray(array)
    if a.ndim not in (2, 3):
        raise ValueError(f"expected HxW or HxWxC, got shape {a.shape}")
    channels = 1 if a.ndim == 2 else a.shape[2]
    if encoding is None:
        encoding = _OUT_ENCODINGS.get((a.dtype, channels))
        if encoding is None:
            raise ValueError(f"no default encoding for dtype {a.dtype} with {channels} channels")
    msg = image_cls()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    big = a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and sys.byteorder == "big")
    msg.is_bigendian = int(big and a.dtype.itemsize > 1)
    msg.step = int(a.strides[0])
    msg.data = a.tobytes()
    return msg
