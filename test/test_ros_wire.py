"""lgseg_ros.ros.wire: frames read from their serialized form (issue 20, item 9).

The reference is rclpy's own serializer (the bytes rmw_fastrtps puts on the wire and hands a
raw subscription): every field read back must equal the message's, and a frame whose sizes
no max_image_pixels allows is refused naming the field before its data is copied.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from lgseg_ros.ros.frame_checks import FrameRejected
from lgseg_ros.ros.image_conversion import ImageConversionError, image_to_rgb
from lgseg_ros.ros.wire import MAX_ROW_PADDING, read_compressed, read_frame, read_image


def _image(h=3, w=5, encoding="rgb8", step=None, data=None, frame_id="cam", pad=0, bigendian=0,
           nanosec=123456789):
    bpp = {"rgb8": 3, "mono8": 1, "rgba16": 8, "mono16": 2}[encoding]
    step = step if step is not None else w * bpp + pad
    msg = Image(height=h, width=w, encoding=encoding, step=step, is_bigendian=bigendian)
    msg.header = Header(frame_id=frame_id)
    msg.header.stamp.sec, msg.header.stamp.nanosec = -7, nanosec
    msg.data = bytes(data) if data is not None else bytes((i * 7) % 256 for i in range(step * h))
    return msg


@pytest.mark.parametrize("kw", [dict(), dict(encoding="mono8", w=4, frame_id=""),
                                dict(encoding="rgba16", frame_id="a" * 255, pad=6),
                                dict(encoding="mono16", frame_id="caméra_ø", bigendian=1),
                                dict(h=1, w=1, encoding="mono8")])
def test_image_fields_match_rclpy_serialization(kw):
    msg = _image(**kw)
    got = read_image(serialize_message(msg), max_pixels=None)
    assert got.header == msg.header
    assert (got.height, got.width, got.encoding, got.is_bigendian, got.step) == \
        (msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step)
    assert bytes(got.data) == bytes(msg.data)
    # The frame path reads it like the message itself.
    assert np.array_equal(image_to_rgb(got), image_to_rgb(msg))


def test_big_endian_cdr_is_read_too():
    """rmw_fastrtps on a big-endian host sends CDR_BE (0x0000); built by hand here."""
    fid = b"cam\0"
    body = struct.pack(">iiI", 5, 6, len(fid)) + fid
    body += struct.pack(">II", 1, 2) + struct.pack(">I", 5) + b"rgb8\0"
    body += b"\0" + b"\0\0"            # is_bigendian at 33, then padding to 36 (offsets from byte 4)
    body += struct.pack(">II", 6, 6) + bytes(range(6))
    got = read_image(b"\x00\x00\x00\x00" + body, max_pixels=None)
    assert (got.header.stamp.sec, got.header.stamp.nanosec, got.header.frame_id) == (5, 6, "cam")
    assert (got.height, got.width, got.encoding, got.step) == (1, 2, "rgb8", 6)
    assert bytes(got.data) == bytes(range(6))


def test_compressed_fields_match_rclpy_serialization():
    msg = CompressedImage(format="jpeg", data=b"\xff\xd8" + bytes(1000))
    msg.header.frame_id = "cam"
    got = read_compressed(serialize_message(msg), max_pixels=4_000_000)
    assert (got.header, got.format, bytes(got.data)) == (msg.header, msg.format, bytes(msg.data))
    assert isinstance(read_frame(serialize_message(msg), True, None), type(got))


def test_the_data_is_a_view_not_a_copy():
    raw = serialize_message(_image(h=40, w=40))
    got = read_image(raw, max_pixels=None)
    assert isinstance(got.data, memoryview) and got.data.obj is raw


@pytest.mark.parametrize("msg, max_pixels, field", [
    (_image(h=2, w=2, step=6, data=bytes(1 << 20)), None, "data has 1048576 bytes"),
    (_image(h=2, w=2, step=6 + MAX_ROW_PADDING + 8 * 2 + 1, data=b""), None, "step="),
    (_image(h=3000, w=3000, encoding="mono8", data=b""), 4_194_304, "max_image_pixels"),
    (_image(frame_id="f" * 1025), None, "header.frame_id of 1025 bytes is longer than 256 characters"),
    (_image(encoding="rgb8", frame_id="x"), None, None),
    (_image(nanosec=1_000_000_000), None, "header.stamp.nanosec=1000000000 is not below 1,000,000,000"),
    (_image(nanosec=2**32 - 1), None, "header.stamp.nanosec=4294967295"),
    (_image(nanosec=999_999_999), None, None),
])
def test_sizes_no_image_can_have_are_refused_by_field(msg, max_pixels, field):
    raw = serialize_message(msg)
    if field is None:
        read_image(raw, max_pixels)
        return
    # ImageConversionError (FrameRejected is one): the node counts and logs it as a rejection.
    with pytest.raises(ImageConversionError, match=field) as e:
        read_image(raw, max_pixels)
    assert len(str(e.value)) < 300


def test_a_long_encoding_name_is_refused_before_it_is_copied():
    msg = Image(height=1, width=1, encoding="e" * 100_000, step=1, data=b"x")
    with pytest.raises(FrameRejected, match="encoding of 100000 bytes"):
        read_image(serialize_message(msg), max_pixels=None)


def test_compressed_data_larger_than_any_allowed_image_is_refused():
    msg = CompressedImage(format="png", data=bytes(40 << 20))
    with pytest.raises(FrameRejected, match="CompressedImage data has 41943040 bytes"):
        read_compressed(serialize_message(msg), max_pixels=4_194_304)
    read_compressed(serialize_message(msg), max_pixels=8_000_000)  # fits 8 MP of rgba16


@pytest.mark.parametrize("cut", [0, 3, 4, 9, 20, -1])
def test_truncated_or_corrupt_samples_are_refused_not_raised_as_anything_else(cut):
    raw = serialize_message(_image())
    raw = raw[:cut] if cut >= 0 else raw[:-1]
    with pytest.raises(FrameRejected):
        read_image(raw, max_pixels=None)
    with pytest.raises(FrameRejected, match="not plain CDR"):   # PL_CDR_LE: mutable types
        read_image(b"\x00\x03\x00\x00" + serialize_message(_image())[4:], max_pixels=None)


def test_plain_xcdr2_little_endian_reads_the_same():
    """A peer on another DDS may send plain XCDR2 (0x0007); with no field wider than 4
    bytes the layout is XCDR1's."""
    raw = serialize_message(_image())
    a, b = read_image(raw, None), read_image(b"\x00\x07" + raw[2:], None)
    assert (a.header, a.encoding, a.step, bytes(a.data)) == (b.header, b.encoding, b.step, bytes(b.data))


def test_a_camera_info_with_bytes_appended_is_refused():
    """Probe round 14: every field of a CameraInfo was read, but not where the sample ended,
    so up to 63 KB appended to a valid one went out whole on ~/camera_info. Alignment
    padding (at most 3 bytes) may follow the last field; anything more is refused."""
    from sensor_msgs.msg import CameraInfo

    from lgseg_ros.ros.wire import check_camera_info

    info = CameraInfo(width=120, height=90, distortion_model="plumb_bob", d=[0.5] * 5)
    info.header.frame_id = "camera"
    raw = serialize_message(info)
    check_camera_info(raw)
    check_camera_info(raw + b"\0" * 3)
    for extra in (4, 60_000):
        with pytest.raises(FrameRejected, match=f"{extra} bytes after roi.do_rectify"):
            check_camera_info(raw + b"\0" * extra)


def test_a_camera_info_stamped_with_a_second_or_more_of_nanoseconds_is_refused():
    """Probe round 17: the relayed camera_info copies the frame's header rules, so a stamp
    builtin_interfaces/Time does not allow is refused there too, naming the field."""
    from sensor_msgs.msg import CameraInfo

    from lgseg_ros.ros.wire import check_camera_info

    info = CameraInfo(width=120, height=90, distortion_model="plumb_bob", d=[0.5] * 5)
    info.header.stamp.nanosec = 999_999_999
    check_camera_info(serialize_message(info))
    info.header.stamp.nanosec = 1_000_000_000
    with pytest.raises(FrameRejected, match="header.stamp.nanosec=1000000000 is not below"):
        check_camera_info(serialize_message(info))


@pytest.mark.parametrize("byte,match", [(b"\x00", "header.frame_id has a NUL byte at offset 6"),
                                        (b"\xff", r"header.frame_id is not valid UTF-8 \(byte 6\)")])
def test_a_frame_id_rclpy_would_not_copy_exactly_is_refused(byte, match):
    """Audit round 18: 'camera\\0x' was read whole, and rclpy cut it to 'camera' in every
    output (invalid UTF-8 became U+FFFD), so the outputs' header was not the one received.
    Built by replacing one byte of a serialized frame, since rclpy cannot send either."""
    from sensor_msgs.msg import CameraInfo

    from lgseg_ros.ros.wire import check_camera_info

    raw = serialize_message(_image(frame_id="cameraQx"))
    assert read_image(raw, None).header.frame_id == "cameraQx"
    bad = raw.replace(b"cameraQx", b"camera" + byte + b"x")
    with pytest.raises(FrameRejected, match=match):
        read_image(bad, max_pixels=None)
    # A fixed-size buffer's trailing NULs end the string, as rclpy reads it.
    padded = raw.replace(b"cameraQx", b"camera\0\0")
    assert read_image(padded, None).header.frame_id == "camera"
    info = CameraInfo(width=120, height=90, distortion_model="plumb_bob", d=[0.5] * 5)
    info.header.frame_id = "cameraQx"
    with pytest.raises(FrameRejected, match=match):
        check_camera_info(serialize_message(info).replace(b"cameraQx", b"camera" + byte + b"x"))
