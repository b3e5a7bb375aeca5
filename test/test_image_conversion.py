"""Image <-> numpy conversion on real sensor_msgs messages, per encoding, including bad headers."""
import io
import json
import time

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from lgseg_ros.ros.image_conversion import (
    MAX_JPEG_SCANS, SUPPORTED_ENCODINGS, ImageConversionError, compressed_size, compressed_to_rgb,
    _decode_jpeg_strict, image_to_numpy, image_to_rgb, jpeg_scan_count, numpy_to_image)

RNG = np.random.default_rng(0)
H, W = 6, 10
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)


def make(arr: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """An Image from arr as a real publisher would fill it, with `pad` bytes after each row."""
    a = np.ascontiguousarray(arr)
    if a.dtype.itemsize == 2:
        a = a.astype(">u2" if bigendian else "<u2")
    rows = a.reshape(a.shape[0], -1).view(np.uint8)
    if pad:
        rows = np.concatenate([rows, np.full((rows.shape[0], pad), 0xAB, np.uint8)], axis=1)
    msg = Image()
    msg.height, msg.width, msg.encoding = a.shape[0], a.shape[1], encoding
    msg.is_bigendian = int(bigendian)
    msg.step = rows.shape[1]
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize("pad", [0, 6])
@pytest.mark.parametrize("encoding,arr", [
    ("rgb8", RGB),
    ("bgr8", RGB[..., ::-1]),
    ("rgba8", np.dstack([RGB, np.full((H, W), 7, np.uint8)])),
    ("bgra8", np.dstack([RGB[..., ::-1], np.full((H, W), 7, np.uint8)])),
])
def test_colour_encodings_give_rgb(encoding, arr, pad):
    out = image_to_rgb(make(arr, encoding, pad))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, RGB)


def test_rgb8_without_padding_is_a_view_of_msg_data():
    msg = make(RGB, "rgb8")
    view = image_to_numpy(msg)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))
    assert not view.flags.writeable
    assert np.shares_memory(image_to_rgb(msg), np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("pad", [0, 3])
def test_mono8_is_replicated_to_three_channels(pad):
    grey = RGB[..., 0]
    out = image_to_rgb(make(grey, "mono8", pad))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", ["mono16", "rgb16", "bgr16"])
def test_16bit_keeps_the_high_byte_in_either_byte_order(encoding, bigendian):
    src = RGB.astype(np.uint16) * 256 + 255  # low byte all ones: must be dropped, not wrapped
    if encoding == "mono16":
        src, expect = src[..., 0], np.repeat(RGB[..., :1], 3, axis=2)
    elif encoding == "bgr16":
        src, expect = src[..., ::-1], RGB
    else:
        expect = RGB
    msg = make(src, encoding, pad=4, bigendian=bigendian)
    np.testing.assert_array_equal(image_to_numpy(msg).astype(np.uint16), np.ascontiguousarray(src))
    np.testing.assert_array_equal(image_to_rgb(msg), expect)


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_demosaics_with_the_ros_pattern_names(pattern):
    # A flat colour survives demosaicing exactly away from the border, so a wrong pattern
    # (channels swapped) shows at once.
    colour = np.array([200, 90, 20], np.uint8)
    h, w = 8, 8
    idx = {"r": 0, "g": 1, "b": 2}
    mosaic = np.zeros((h, w), np.uint8)
    for dy in range(2):
        for dx in range(2):
            mosaic[dy::2, dx::2] = colour[idx[pattern[dy * 2 + dx]]]
    out = image_to_rgb(make(mosaic, f"bayer_{pattern}8"))
    np.testing.assert_array_equal(out[2:-2, 2:-2], np.broadcast_to(colour, (h - 4, w - 4, 3)))


@pytest.mark.parametrize("encoding,code", [("yuv422", cv2.COLOR_RGB2YUV_UYVY),
                                           ("yuv422_yuy2", cv2.COLOR_RGB2YUV_YUY2)])
def test_yuv422_round_trips_a_flat_colour(encoding, code):
    flat = np.broadcast_to(np.array([30, 140, 220], np.uint8), (4, 8, 3)).copy()
    packed = cv2.cvtColor(flat, code)  # HxWx2
    out = image_to_rgb(make(packed, encoding, pad=2))
    assert np.abs(out.astype(int) - flat).max() <= 3  # YUV quantisation


@pytest.mark.parametrize("encoding,words", [
    ("16UC1", "depth or label"), ("32FC1", "depth"), ("8UC3", "channel order"), ("nv12", "supported:")])
def test_unsupported_encodings_are_named(encoding, words):
    msg = make(RGB, "rgb8")
    msg.encoding = encoding
    with pytest.raises(ImageConversionError, match=words) as err:
        image_to_rgb(msg)
    assert encoding in str(err.value)


def test_bad_headers_are_rejected_with_the_reason():
    zero = Image(encoding="rgb8")
    with pytest.raises(ImageConversionError, match="zero-size"):
        image_to_rgb(zero)
    narrow = make(RGB, "rgb8")
    narrow.step = W * 3 - 1
    with pytest.raises(ImageConversionError, match="step .* smaller"):
        image_to_rgb(narrow)
    wide = make(RGB, "rgb8")
    wide.step = W * 3 + 8  # claims padding the data does not have
    with pytest.raises(ImageConversionError, match="expected step\\*height"):
        image_to_rgb(wide)
    short = make(RGB, "rgb8")
    short.data = short.data[:-10]
    with pytest.raises(ImageConversionError, match="bytes"):
        image_to_rgb(short)
    big = make(RGB, "rgb8")
    with pytest.raises(ImageConversionError, match="max_image_pixels"):
        image_to_rgb(big, max_pixels=H * W - 1)
    assert image_to_rgb(big, max_pixels=H * W).shape == (H, W, 3)
    odd = make(np.zeros((2, 3, 2), np.uint8), "yuv422")
    with pytest.raises(ImageConversionError, match="even width"):
        image_to_rgb(odd)


def test_pixel_limit_is_checked_before_touching_data():
    # A 4K header with no data behind it fails on the limit, not on a huge allocation.
    msg = Image(height=2160, width=3840, encoding="rgb8", step=3840 * 3)
    with pytest.raises(ImageConversionError, match="8294400 pixels"):
        image_to_rgb(msg, max_pixels=1920 * 1080)


def test_last_row_without_padding_is_tolerated():
    msg = make(RGB, "rgb8", pad=6)
    msg.data = msg.data[:-6]
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_compressed_image_decodes_and_reports_its_size(ext):
    big = cv2.resize(RGB, (40, 24), interpolation=cv2.INTER_NEAREST)
    ok, buf = cv2.imencode(ext, cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(format=ext[1:])
    msg.data = buf.tobytes()
    assert compressed_size(np.frombuffer(msg.data, np.uint8).data) == (40, 24)
    out = compressed_to_rgb(msg)
    assert out.shape == (24, 40, 3)
    tol = 0 if ext == ".png" else 60
    assert np.abs(out.astype(int) - big).mean() <= max(tol / 4, 0)
    with pytest.raises(ImageConversionError, match="max_image_pixels"):
        compressed_to_rgb(msg, max_pixels=40 * 24 - 1)


def test_compressed_garbage_is_rejected():
    msg = CompressedImage(format="jpeg")
    msg.data = b"\xff\xd8garbage" + bytes(100)
    with pytest.raises(ImageConversionError, match="decode"):
        compressed_to_rgb(msg)
    with pytest.raises(ImageConversionError, match="empty"):
        compressed_to_rgb(CompressedImage(format="png"))


def test_a_damaged_jpeg_is_refused_naming_the_damage_and_prints_nothing(capfd):
    """Probe round 9 left this known: a JPEG cut short and closed with an end marker decoded
    with its missing half grey and was served as a frame, and libjpeg printed "Corrupt JPEG
    data: ..." to the process's stderr, outside the node's log and its throttle. JPEG now
    decodes strictly: such a frame is refused with libjpeg's reason and nothing is printed."""
    rng = np.random.default_rng(3)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), (0, 0), 2)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    whole = buf.tobytes()
    msg = CompressedImage(format="jpeg")
    msg.data = whole
    good = compressed_to_rgb(msg)
    assert good.shape == (240, 320, 3)
    # The same pixels OpenCV decodes (both are libjpeg-turbo; at most rounding differs).
    ref = cv2.cvtColor(cv2.imdecode(np.frombuffer(whole, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.abs(good.astype(int) - ref).max() <= 2
    capfd.readouterr()
    cut_and_closed = whole[:len(whole) // 2] + b"\xff\xd9"
    cut = whole[:len(whole) // 2]
    scan = whole.index(b"\xff\xda")
    corrupt = whole[:scan + 600] + b"\xff\xc4" + whole[scan + 602:]   # a table marker mid-scan
    for name, data, reason in (("cut and closed", cut_and_closed, "premature end of data segment"),
                               ("cut", cut, "Premature end of JPEG file"),
                               ("marker inside the scan", corrupt, "")):
        msg.data = data
        # What OpenCV did with it: a frame, the damaged part filled in.
        if name == "cut and closed":
            assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
            capfd.readouterr()
        with pytest.raises(ImageConversionError, match=f"could not decode JPEG.*{reason}") as e:
            compressed_to_rgb(msg)
        assert f"{len(data)} bytes" in str(e.value), name
        assert capfd.readouterr().err == "", name


def _progressive_jpeg_with_repeated_scan(rgb: np.ndarray, extra_scans: int) -> bytes:
    """A real progressive JPEG (OpenCV) with its last scan repeated: libjpeg decodes every
    copy as a refinement pass over the whole image, so bytes stay small and time grows."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    data = buf.tobytes()
    last_sos, eoi = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return data[:eoi] + data[last_sos:eoi] * extra_scans + data[eoi:]


def test_a_jpeg_with_thousands_of_scans_is_refused_before_decoding():
    """Probe round 4: a 337 KB 2048x2048 progressive JPEG repeating one scan 20,000 times
    held the node's worker for 7.7 s in libjpeg. Scans are counted before decoding."""
    rgb = cv2.resize(RGB, (64, 48), interpolation=cv2.INTER_NEAREST)
    normal = _progressive_jpeg_with_repeated_scan(rgb, 0)
    assert 2 <= jpeg_scan_count(normal) <= 16          # what a progressive encoder writes
    msg = CompressedImage(format="jpeg")
    msg.data = normal
    assert compressed_to_rgb(msg).shape == (48, 64, 3)
    msg.data = _progressive_jpeg_with_repeated_scan(rgb, MAX_JPEG_SCANS)
    assert cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR) is not None  # libjpeg takes it
    with pytest.raises(ImageConversionError, match=rf"has {jpeg_scan_count(msg.data)} scans, more than {MAX_JPEG_SCANS}"):
        compressed_to_rgb(msg)


def test_a_4mp_jpeg_at_the_scan_cap_costs_a_bounded_number_of_passes():
    """Under the cap a frame is decoded (or refused by the strict decoder) after one pass per
    scan: the worst a 4 MP frame can cost. Prints the decode times (run with -s): a baseline
    JPEG, the encoder's progressive one, and the same with its last scan repeated up to the
    cap (libjpeg's refinement of a repeated scan is inconsistent, which the strict decoder
    reports only after the passes)."""
    rng = np.random.default_rng(0)
    rgb = cv2.resize(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), (2048, 2048),
                     interpolation=cv2.INTER_LINEAR)
    prog = _progressive_jpeg_with_repeated_scan(rgb, 0)
    frames = {"baseline": cv2.imencode(".jpg", rgb)[1].tobytes(), "progressive": prog,
              "at the cap": _progressive_jpeg_with_repeated_scan(rgb, MAX_JPEG_SCANS - jpeg_scan_count(prog)),
              # what the decoder alone spends on twice the cap (the node refuses it unread)
              "twice the cap, decoder alone": _progressive_jpeg_with_repeated_scan(
                  rgb, 2 * MAX_JPEG_SCANS - jpeg_scan_count(prog))}
    report = {}
    for name, data in frames.items():
        msg = CompressedImage(format="jpeg", data=data)
        times, outcome = [], "decoded"
        for _ in range(3):
            t0 = time.perf_counter()
            try:
                if name.endswith("decoder alone"):
                    _decode_jpeg_strict(np.frombuffer(data, np.uint8), (2048, 2048), msg)
                else:
                    compressed_to_rgb(msg)
            except ImageConversionError as e:
                assert "scans, more than" not in str(e)      # counted, then decoded
                outcome = "refused after decoding"
            times.append(time.perf_counter() - t0)
        report[name] = {"scans": jpeg_scan_count(data), "bytes": len(data),
                        "ms_median": round(1000 * sorted(times)[1], 1), "outcome": outcome}
    assert report["at the cap"]["scans"] == MAX_JPEG_SCANS
    msg = CompressedImage(format="jpeg", data=frames["twice the cap, decoder alone"])
    with pytest.raises(ImageConversionError, match="scans, more than"):
        compressed_to_rgb(msg)
    print(json.dumps({"jpeg_2048x2048_decode": report}))


def test_numpy_to_image_round_trips_with_the_header():
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    for arr, enc in [(RGB, "rgb8"), (RGB[..., 0].copy(), "mono8"),
                     (RGB[..., 0].astype(np.uint16) * 257, "16UC1")]:
        msg = numpy_to_image(arr, header=header)
        assert msg.encoding == enc and msg.header == header
        assert (msg.height, msg.width) == arr.shape[:2]
        assert msg.step == arr.shape[1] * arr.itemsize * (3 if arr.ndim == 3 else 1)
        if enc == "16UC1":
            back = np.frombuffer(msg.data, ">u2" if msg.is_bigendian else "<u2").reshape(arr.shape)
        else:
            back = image_to_numpy(msg)
        np.testing.assert_array_equal(back, arr)


def test_supported_list_covers_the_issue_minimum():
    assert {"rgb8", "bgr8", "rgba8", "bgra8", "mono8"} <= set(SUPPORTED_ENCODINGS)


def test_a_damaged_png_is_refused_naming_the_damage_and_prints_nothing(capfd):
    """Probe round 11 left this known: OpenCV's libpng printed "libpng error: ..." to the
    process's stderr for every damaged PNG frame, outside the node's log and its throttle.
    PNG now decodes through Pillow: a damaged frame is refused with the reason, and nothing
    is printed. Good frames decode to the pixels OpenCV gives, 8- and 16-bit, colour and grey."""
    rng = np.random.default_rng(4)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (0, 0), 2)
    msg = CompressedImage(format="png")
    for arr in (cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), rgb[..., 0],
                rgb.astype(np.uint16) * 257 + 3, rgb[..., 1].astype(np.uint16) * 256 + 200):
        ok, buf = cv2.imencode(".png", arr)
        assert ok
        msg.data = buf.tobytes()
        ref = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(compressed_to_rgb(msg), ref, err_msg=str(arr.dtype))
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    whole = buf.tobytes()
    idat = whole.index(b"IDAT")
    flipped = bytearray(whole)
    flipped[idat + 200] ^= 0xFF
    capfd.readouterr()
    for name, data in (("cut", whole[:len(whole) // 2]), ("damaged stream", bytes(flipped))):
        # What OpenCV did with it: nothing decoded, and a libpng line on stderr.
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is None
        assert "libpng" in capfd.readouterr().err, name
        msg.data = data
        # refused by the chunk walk (a chunk past the end, a CRC) or by Pillow, size named
        with pytest.raises(ImageConversionError, match=f"PNG CompressedImage.*{len(data)} bytes"):
            compressed_to_rgb(msg)
        assert capfd.readouterr().err == "", name


def _png_chunk(kind: bytes, body: bytes = b"") -> bytes:
    import struct
    import zlib
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_a_png_of_a_million_chunks_is_refused_before_decoding():
    """Pillow reads PNG chunks in a Python loop holding the GIL: a 12 MB PNG with a million
    empty chunks before its image data took 2 s to open, and every thread of the node waited.
    Chunks are counted first (64 + one per 4 KB); real encoders' files pass whatever their
    size, with libpng's 8 KB data chunks as with one large chunk."""
    from lgseg_ros.ros.image_conversion import PNG_BYTES_PER_CHUNK, PNG_CHUNKS_BASE, png_chunk_count
    rng = np.random.default_rng(5)
    msg = CompressedImage(format="png")
    for shape in ((48, 64, 3), (720, 1280, 3)):    # noise: libpng splits it into 8 KB chunks
        ok, buf = cv2.imencode(".png", rng.integers(0, 256, shape, dtype=np.uint8))
        msg.data = buf.tobytes()
        assert compressed_to_rgb(msg).shape == shape
    whole = buf.tobytes()
    assert png_chunk_count(whole, 10**6) > 300          # libpng's 8 KB IDAT chunks
    idat = whole.index(b"IDAT") - 4
    for n, refused in ((PNG_CHUNKS_BASE, False), (10**6, True)):
        data = whole[:idat] + _png_chunk(b"abCd") * n + whole[idat:]
        msg.data = data
        if not refused:
            assert compressed_to_rgb(msg).shape == (720, 1280, 3)
            continue
        limit = PNG_CHUNKS_BASE + len(data) // PNG_BYTES_PER_CHUNK
        assert png_chunk_count(data, limit) == limit + 1   # the walk stops there
        start = time.perf_counter()
        with pytest.raises(ImageConversionError, match=f"more than {limit} chunks"):
            compressed_to_rgb(msg)
        refused_s = time.perf_counter() - start
        # What Pillow alone spends on it (what the node spent, holding the GIL, before).
        from PIL import Image as PILImage
        start = time.perf_counter()
        with PILImage.open(io.BytesIO(data)) as im:
            im.load()
        print(json.dumps({"png_million_chunks_mb": round(len(data) / 1e6, 1),
                          "pillow_open_s": round(time.perf_counter() - start, 2),
                          "refused_s": round(refused_s, 4)}))


def _png(ihdr: bytes, *chunks: bytes) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + b"".join(chunks) + _png_chunk(b"IEND")


def test_a_png_is_decoded_from_its_image_chunks_only():
    """Probe round 12. Pillow parsed every ancillary chunk it knows: a 34 MB tEXt, zTXt,
    eXIf or private chunk beside a 16x16 image (inside the size cap of a 4 MP frame) was read,
    split, decoded and kept, 104-172 MB of Python allocations for one frame that was then
    served; an APNG control chunk out of place or a palette with a tRNS table made Pillow
    print a UserWarning on the process's stderr; an IDAT with a wrong CRC, a chunk claiming
    more bytes than there are, or data without IEND were served (libpng refused all three).
    Pillow now gets IHDR, PLTE and IDAT only, CRC-checked: the same pixels, no warning,
    ~2 MB for those frames, and damage refused naming the chunk. An IHDR or PLTE longer than
    the standard allows (13 bytes; 768) cost ~100 MB the same way, and is refused."""
    import contextlib
    import struct
    import tracemalloc
    import warnings
    import zlib

    from PIL import Image as PILImage
    rgb_ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    rows = np.random.default_rng(6).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    idat = _png_chunk(b"IDAT", zlib.compress(b"".join(b"\x00" + r.tobytes() for r in rows)))
    pal_ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 3, 0, 0, 0)
    pal_idat = _png_chunk(b"IDAT", zlib.compress(b"".join(b"\x00" + bytes(range(i, i + 16))
                                                          for i in range(16))))
    msg = CompressedImage(format="png")

    def served(data, image_only):
        """Decoded without a warning, to OpenCV's pixels of the image chunks alone."""
        msg.data = data
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = compressed_to_rgb(msg)
        assert not caught, [str(w.message) for w in caught]
        ref = cv2.imdecode(np.frombuffer(image_only, np.uint8), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(out, cv2.cvtColor(ref, cv2.COLOR_BGR2RGB))
        return out

    # Warnings Pillow printed to stderr (each once per process outside pytest).
    plain = _png(rgb_ihdr, idat)
    served(_png(rgb_ihdr, _png_chunk(b"acTL", bytes(8)), idat), plain)
    served(_png(rgb_ihdr, _png_chunk(b"acTL", struct.pack(">II", 1, 0)) * 2, idat), plain)
    plte = _png_chunk(b"PLTE", bytes(range(256)) * 3)
    served(_png(pal_ihdr, plte, _png_chunk(b"tRNS", bytes([0, 128, 255])), pal_idat),
           _png(pal_ihdr, plte, pal_idat))
    with warnings.catch_warnings(record=True) as caught:   # what Pillow alone does with it
        warnings.simplefilter("always")
        PILImage.open(io.BytesIO(_png(pal_ihdr, plte, _png_chunk(b"tRNS", bytes([0, 128, 255])),
                                      pal_idat))).convert("RGB")
    assert caught

    # A large ancillary chunk costs the decoder nothing now.
    report = {}
    big = 34_000_000   # a 4 MP frame may be 8 bytes a pixel + 1 MB
    for kind, body in ((b"tEXt", b"k\x00" + b"\xe9" * big), (b"zTXt", b"k\x00\x00" + b"x" * big),
                       (b"prVt", b"a" * big)):
        data = _png(rgb_ihdr, _png_chunk(kind, body), idat)
        msg.data = data       # the message's own copy is not the decoder's
        tracemalloc.start()
        try:
            np.testing.assert_array_equal(compressed_to_rgb(msg), rows)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            with PILImage.open(io.BytesIO(data)) as im:   # what the node spent before
                im.load()
            before = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        report[kind.decode()] = {"png_mb": round(len(data) / 1e6, 1),
                                 "pillow_whole_file_peak_mb": round(before / 1e6, 1),
                                 "decode_peak_mb": round(peak / 1e6, 1)}
        assert peak < 16e6, (kind, peak)
    print(json.dumps({"png_large_ancillary_chunk": report}))
    report = {}

    # Image chunks larger than the standard allows cost the same: refused by their length.
    for kind, ihdr, body in ((b"IHDR", None, rgb_ihdr + bytes(big)), (b"PLTE", pal_ihdr, bytes(big))):
        data = (_png(rgb_ihdr, idat).replace(_png_chunk(b"IHDR", rgb_ihdr), _png_chunk(b"IHDR", body))
                if ihdr is None else _png(pal_ihdr, _png_chunk(b"PLTE", body), pal_idat))
        msg.data = data
        with pytest.raises(ImageConversionError, match=f"chunk '{kind.decode()}' of {len(body)} bytes"):
            compressed_to_rgb(msg)
        tracemalloc.start()
        try:
            with contextlib.suppress(Exception), PILImage.open(io.BytesIO(data)) as im:
                im.load()                                     # what the node spent before
            report[f"oversized {kind.decode()}"] = {
                "png_mb": round(len(data) / 1e6, 1),
                "pillow_whole_file_peak_mb": round(tracemalloc.get_traced_memory()[1] / 1e6, 1)}
        finally:
            tracemalloc.stop()
    print(json.dumps({"png_oversized_image_chunks": report}))

    # Damage libpng refused and Pillow served: refused naming the chunk.
    good = plain
    crc_at = good.index(b"IEND") - 4 - 1
    bad_crc = bytearray(good)
    bad_crc[crc_at] ^= 0x01
    for data, reason in ((bytes(bad_crc), "chunk 'IDAT' at byte 33 fails its CRC"),
                         (good[:-12], "ends without its IEND chunk"),
                         (good[:33] + struct.pack(">I", 2**31 - 1) + good[37:-12],
                          "chunk 'IDAT' at byte 33 claims 2147483647 bytes, past the end")):
        msg.data = data
        with PILImage.open(io.BytesIO(data)) as im:      # Pillow alone: served
            im.load()
        with pytest.raises(ImageConversionError, match=f"{len(data)} bytes.*{reason}"):
            compressed_to_rgb(msg)


def test_a_png_with_a_second_ihdr_is_refused_before_decoding():
    """Probe round 12: the pixel limit read the first IHDR, Pillow took the size of the last
    one. A 0.42 MB PNG whose first IHDR said 16x16 and second 12000x12000 was decoded whole
    (Pillow printed its DecompressionBombWarning on stderr) and only then refused for the
    size mismatch. A second IHDR is now refused by the chunk walk, and Pillow's size is
    compared with the header's before it allocates the pixels.
    LGSEG_MEASURE_PILLOW=1 prints what Pillow alone spends on the file (a child process's
    peak RSS and time), as JSON with -s."""
    import os
    import struct
    import subprocess
    import sys
    import tracemalloc
    import zlib

    from PIL import Image as PILImage
    side = 12000
    z = zlib.compressobj(9)
    row = b"\x00" + bytes(side * 3)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    data = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0))
            + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND"))
    assert compressed_size(data) == (16, 16)                  # what the pixel limit checks
    with pytest.warns(PILImage.DecompressionBombWarning):     # printed on stderr outside pytest
        with PILImage.open(io.BytesIO(data)) as im:           # what Pillow would allocate
            assert im.size == (side, side)
    msg = CompressedImage(format="png", data=data)
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(ImageConversionError, match="second IHDR chunk at byte 33"):
            compressed_to_rgb(msg)
        took = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8e6 and took < 0.5, (peak, took)
    report = {"png_mb": round(len(data) / 1e6, 2), "refused_s": round(took, 4),
              "refused_peak_mb": round(peak / 1e6, 1)}
    if os.environ.get("LGSEG_MEASURE_PILLOW") == "1":
        child = ("import io, resource, sys, time; from PIL import Image; d = sys.stdin.buffer.read(); "
                 "t = time.perf_counter(); Image.open(io.BytesIO(d)).convert('RGB'); "
                 "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
        out = subprocess.run([sys.executable, "-c", child], input=data, capture_output=True, timeout=120)
        seconds, peak_mb = map(float, out.stdout.split())
        report.update(pillow_alone_s=round(seconds, 2), pillow_alone_peak_rss_mb=round(peak_mb),
                      pillow_stderr=out.stderr.decode()[:100])
    print(json.dumps({"png_second_ihdr": report}))


def test_the_opencv_fallback_decodes_the_same_image_chunks_and_prints_nothing(monkeypatch, capfd):
    """Without Pillow, PNG frames go to OpenCV's libpng, which printed "libpng warning: iCCP:
    too short" (and the like for every ancillary chunk it dislikes) on the process's stderr,
    once per frame and outside the log's throttle. The fallback now decodes the checked image
    chunks (IHDR, PLTE, IDAT) that Pillow gets: the same pixels, nothing printed."""
    import struct
    import zlib

    from lgseg_ros.ros import image_conversion as ic
    monkeypatch.setattr(ic, "PILImage", None)
    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    rows = np.random.default_rng(8).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    idat = _png_chunk(b"IDAT", zlib.compress(b"".join(b"\x00" + r.tobytes() for r in rows)))
    iccp = _png_chunk(b"iCCP", b"prof\x00\x00" + zlib.compress(b"not a profile" * 10))
    msg = CompressedImage(format="png", data=_png(ihdr, iccp, _png_chunk(b"tEXt", b"k\x00v"), idat))
    capfd.readouterr()
    np.testing.assert_array_equal(compressed_to_rgb(msg), rows)
    assert "libpng" not in capfd.readouterr().err
