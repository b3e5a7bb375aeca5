"""Issue 10: the node survives hostile input and real camera sizes.

`lgseg node` runs as its own process (a crash is an exit, not a test error) at default
input settings, on real Fast DDS over loopback, started WITHOUT a Fast DDS profile in its
environment so that it applies the shipped one itself. The test process has the profile
(test_node_support applies it at import), as a camera driver should.
Each test names the item of the issue it covers.
"""
from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import time
import zlib

import cv2
import numpy as np
import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import (DescribeParameters, GetParameters, ListParameters, SetParameters,
                                SetParametersAtomically)
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from lgseg_ros.ros.node import ConfigError, LgsegNode, _check_checkpoint_path
from lgseg_ros.srv import SetLabels
from test_image_conversion import _png_chunk
from test_node_support import (RELIABLE, change_state, node_env, RosHarness, camvid_frames, header,  # noqa: F401
                               node_params, rgb_msg, serving_node, stamp_key, tiny_checkpoint,
                               tiny_torch_args, wait_until)

NS = "/hostile"
NODE = f"{NS}/lgseg_node"
CAMERA = f"{NS}/camera/image_raw"
# The target for "the node keeps serving": the next good frame is answered within 1 s.
NEXT_FRAME_DEADLINE_S = 1.0
# Frames of a 30 Hz stream that the node's depth-1 input may replace before its callback
# runs, on a loaded 2-core machine (see test_large_raw_frames_at_30_hz_all_reach_the_node).
LATEST_FRAME_SLACK = 3


@pytest.fixture(scope="module")
def env(tiny_checkpoint):
    # A class-mask topic remapped onto the camera, for a label not in the start-up set
    # (test_a_class_topic_remapped_onto_an_input_or_output_is_refused)
    remap = ["-r", f"{NODE}/class/lamp/mask:={CAMERA}"]
    with serving_node(NS, CAMERA, [*remap, *tiny_torch_args(tiny_checkpoint)], env=node_env()) as parts:
        yield Env(*parts)


class Env(tuple):
    """(harness, node process, recorder, raw publisher), plus the input mode the node is in."""

    def __new__(cls, *items):
        self = super().__new__(cls, items)
        self.compressed = False
        self.cpub = None
        return self


def _transition(h, transition_id: int) -> bool:
    return change_state(h, NODE, transition_id, timeout=30)


def use_mode(env_, compressed: bool) -> None:
    """Switch the node's input between Image and CompressedImage (applies at activate)."""
    h, proc, rec, pub = env_
    if env_.compressed == compressed:
        return
    value = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=compressed)
    assert set_params(h, [ParameterMsg(name="use_compressed", value=value)])[0].successful
    assert _transition(h, Transition.TRANSITION_DEACTIVATE)
    assert _transition(h, Transition.TRANSITION_ACTIVATE)
    env_.compressed = compressed
    if compressed and env_.cpub is None:
        env_.cpub = h.client.create_publisher(CompressedImage, CAMERA + "/compressed", RELIABLE)
    if compressed:
        wait_until(lambda: env_.cpub.get_subscription_count() > 0, timeout=15, what="compressed sub")
    else:
        wait_until(lambda: pub.get_subscription_count() > 0, timeout=15, what="raw sub")


def _good_frame(compressed: bool):
    frame = camvid_frames(1)[0]
    if not compressed:
        return rgb_msg(frame)
    ok, jpg = cv2.imencode(".jpg", frame[..., ::-1])
    return CompressedImage(header=header(), format="jpeg", data=jpg.tobytes())


def serve_one(env_, deadline: float = NEXT_FRAME_DEADLINE_S) -> float:
    """Publish one good frame; seconds until its label_mask came back (asserts the deadline)."""
    h, proc, rec, pub = env_
    assert proc.alive(), f"node exited with {proc.proc.returncode}:\n{proc.text()[-4000:]}"
    msg = _good_frame(env_.compressed)
    t0 = time.monotonic()
    (env_.cpub if env_.compressed else pub).publish(msg)
    rec.wait_stamp(f"{NODE}/label_mask", stamp_key(msg.header), timeout=deadline + 10)
    took = time.monotonic() - t0
    assert took < deadline, f"next good frame answered after {took:.2f} s"
    return took


def raw_param(name: str, type_: int, **value) -> ParameterMsg:
    return ParameterMsg(name=name, value=ParameterValue(type=type_, **value))


def set_params(h, params: list[ParameterMsg]):
    client = h.client.create_client(SetParameters, f"{NODE}/set_parameters")
    try:
        return h.call(client, SetParameters.Request(parameters=params)).results
    finally:
        h.client.destroy_client(client)


def get_params(h, names: list[str]):
    client = h.client.create_client(GetParameters, f"{NODE}/get_parameters")
    try:
        return h.call(client, GetParameters.Request(names=names)).values
    finally:
        h.client.destroy_client(client)


def set_labels(h, labels):
    client = h.client.create_client(SetLabels, f"{NODE}/set_labels")
    try:
        return h.call(client, SetLabels.Request(labels=labels), timeout=30)
    finally:
        h.client.destroy_client(client)


def test_unknown_parameter_value_type_is_refused_and_the_node_keeps_serving(env):
    """Item 1: a SetParameters request with ParameterValue.type 99 ended the process."""
    h, proc, _, _ = env
    serve_one(env)
    results = set_params(h, [raw_param("overlay_alpha", 99),
                             raw_param("overlay_alpha", ParameterType.PARAMETER_DOUBLE, double_value=0.25)])
    assert not results[0].successful and "unknown ParameterValue.type 99" in results[0].reason
    assert "overlay_alpha" in results[0].reason
    assert results[1].successful, results[1].reason  # the good one in the same request is served
    client = h.client.create_client(SetParametersAtomically, f"{NODE}/set_parameters_atomically")
    reply = h.call(client, SetParametersAtomically.Request(
        parameters=[raw_param("labels", 200), raw_param("no_such_parameter", 3)]))
    h.client.destroy_client(client)
    assert not reply.result.successful and "type 200" in reply.result.reason
    # Undeclared names and an undeclare (type NOT_SET) are refused, not fatal.
    results = set_params(h, [raw_param("no_such_parameter", ParameterType.PARAMETER_INTEGER, integer_value=1),
                             raw_param("net_height", ParameterType.PARAMETER_NOT_SET)])
    assert [r.successful for r in results] == [False, False]
    # Probe round 13: a wrongly typed value of 1,000,000 doubles was repr'd whole for the
    # refusal (seconds of the executor); the refusal shows its head and its length
    from array import array
    big = set_params(h, [raw_param("overlay_alpha", ParameterType.PARAMETER_DOUBLE_ARRAY,
                                   double_array_value=array("d", range(1_000_000)))])[0]
    assert not big.successful and "overlay_alpha" in big.reason
    assert "(1000000 items)" in big.reason and len(big.reason) < 300
    assert proc.alive()
    serve_one(env)
    assert get_params(h, ["overlay_alpha"])[0].double_value == 0.25


def test_every_listed_parameter_is_readable_one_by_one_and_all_at_once(env):
    """Item 9: `cameras` had no value, so GetParameters for it, or for all, returned nothing."""
    h = env[0]
    client = h.client.create_client(ListParameters, f"{NODE}/list_parameters")
    names = list(h.call(client, ListParameters.Request()).result.names)
    h.client.destroy_client(client)
    assert "cameras" in names and "labels" in names
    values = get_params(h, names)  # what `ros2 param dump` and rqt_reconfigure ask
    assert len(values) == len(names)
    unset = [n for n, v in zip(names, values) if v.type == ParameterType.PARAMETER_NOT_SET]
    assert not unset, unset
    cameras = get_params(h, ["cameras"])
    assert cameras[0].type == ParameterType.PARAMETER_STRING_ARRAY and list(cameras[0].string_array_value) == []


@pytest.mark.parametrize("param, words", [
    (raw_param("net_height", ParameterType.PARAMETER_INTEGER, integer_value=1_000_000),
     ["net_height=1000000", "32 to 1024, step 32"]),
    (raw_param("net_width", ParameterType.PARAMETER_INTEGER, integer_value=100), ["net_width=100", "step 32"]),
    (raw_param("qos_depth", ParameterType.PARAMETER_INTEGER, integer_value=0), ["qos_depth=0", "1 to 10"]),
    (raw_param("max_image_pixels", ParameterType.PARAMETER_INTEGER, integer_value=2 ** 40),
     ["max_image_pixels=1099511627776", "1 to 33554432"]),
    (raw_param("status_period", ParameterType.PARAMETER_DOUBLE, double_value=0.0), ["status_period=0.0", "0.05 to 3600"]),
    (raw_param("overlay_alpha", ParameterType.PARAMETER_DOUBLE, double_value=math.nan), ["overlay_alpha=nan", "0.0 to 1.0"]),
    (raw_param("score_threshold", ParameterType.PARAMETER_DOUBLE, double_value=-1.0), ["score_threshold=-1.0"]),
    (raw_param("label_anchor", ParameterType.PARAMETER_DOUBLE, double_value=math.inf),
     ["label_anchor=inf", "0.0 to 1.0"]),
    (raw_param("net_height", ParameterType.PARAMETER_STRING, string_value="abc"),
     ["net_height takes int, got string 'abc'"]),
    (raw_param("labels", ParameterType.PARAMETER_INTEGER, integer_value=3), ["labels takes string_array, got integer 3"]),
    (raw_param("cameras", ParameterType.PARAMETER_STRING_ARRAY, string_array_value=["front", "9rear"]),
     ["cameras", "'9rear' is not a valid ROS namespace"]),
    (raw_param("cameras", ParameterType.PARAMETER_STRING_ARRAY, string_array_value=["a b"]), ["'a b'"]),
    (raw_param("cameras", ParameterType.PARAMETER_STRING_ARRAY, string_array_value=[f"c{i}" for i in range(17)]),
     ["at most 16"]),
    (raw_param("device", ParameterType.PARAMETER_STRING, string_value="x" * 100_000),
     ["device=", "(100000 characters)", "longer than 4096"]),
    (raw_param("checkpoint", ParameterType.PARAMETER_STRING, string_value="x" * 100_000),
     ["checkpoint is read-only"]),
    (raw_param("backend", ParameterType.PARAMETER_STRING, string_value="gpu"), ["backend='gpu'", "auto, torch"]),
])
def test_bad_parameter_values_are_refused_with_name_value_and_range(env, param, words):
    """Items 3 and 10: ranges checked when set, with the range in the message; type errors
    name types, not rclpy's numeric codes; camera names checked when set; values cut short."""
    h = env[0]
    before = get_params(h, [param.name])[0]
    result = set_params(h, [param])[0]
    assert not result.successful
    for w in words:
        assert w in result.reason, result.reason
    assert "'2'" not in result.reason and "'4'" not in result.reason  # no numeric type codes
    assert len(result.reason) < 400
    assert get_params(h, [param.name])[0] == before


def test_checkpoint_errors_say_what_the_path_is(tmp_path):
    """Item 10: a directory or /dev/zero read "no such file"."""
    cases = {str(tmp_path): "is a directory", "/dev/zero": "not a regular file",
             str(tmp_path / "missing.safetensors"): "no such file"}
    for path, words in cases.items():
        with pytest.raises(ConfigError, match=words):
            _check_checkpoint_path(path)


@pytest.mark.parametrize("module", ["lgseg_ros.ros.node", "lgseg_ros.demo"])
def test_opencv_decoder_cap_is_in_force_in_the_node_process(module):
    """Item 2, second line of defence: OpenCV's own allocation cap (read once, when cv2
    loads) is set in a process that imports the node, whatever the header checks miss; and
    in the tools that read image folders (audit round 19: a 249 KB PNG of 16000x16000 held
    `lgseg demo` 16.6 s at 1.55 GB under OpenCV's own 1 Gpx default)."""
    code = (f"import {module}, cv2, numpy as np\n"
            "from lgseg_ros.ros.params import MAX_IMAGE_PIXELS_CAP\n"
            "ok, b = cv2.imencode('.png', np.zeros((6000, 6000), np.uint8))\n"
            "assert 6000 * 6000 > MAX_IMAGE_PIXELS_CAP\n"
            "try:\n    cv2.imdecode(b, cv2.IMREAD_GRAYSCALE)\nexcept cv2.error as e:\n"
            "    print('refused', 'CV_IO_MAX_IMAGE_PIXELS' in str(e))\n")
    env = dict(os.environ)
    env.pop("OPENCV_IO_MAX_IMAGE_PIXELS", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.stdout.strip() == "refused True", out.stdout + out.stderr


def test_an_empty_or_undeclared_parameter_name_is_refused_by_name(env):
    """Probe round 6: rclpy let a parameter named '' through (any() over the names is false
    for it); 64 x 1 MB parked there kept +274 MB. Other undeclared names were refused as
    "undeclared parameter(s): []"."""
    h, proc, _, _ = env
    results = set_params(h, [raw_param("", ParameterType.PARAMETER_STRING, string_value="x" * 100_000),
                             raw_param("no_such_parameter", ParameterType.PARAMETER_INTEGER, integer_value=1)])
    assert [r.successful for r in results] == [False, False]
    assert "parameter '': not declared" in results[0].reason and len(results[0].reason) < 300
    assert "'no_such_parameter': not declared" in results[1].reason
    client = h.client.create_client(ListParameters, f"{NODE}/list_parameters")
    names = h.call(client, ListParameters.Request()).result.names
    h.client.destroy_client(client)
    assert "" not in names and "no_such_parameter" not in names and "labels" in names
    # names of megabytes are refused by their length, in one short line (probe round 8)
    log_before = proc.log_bytes()
    client = h.client.create_client(DescribeParameters, f"{NODE}/describe_parameters")
    reply = h.call(client, DescribeParameters.Request(names=["labels", "n" * 1_000_000]))
    h.client.destroy_client(client)
    assert list(reply.descriptors) == []
    wait_until(lambda: "a name of 1000000 characters" in proc.text_since(log_before), timeout=5,
               what="the refusal in the log")
    assert proc.log_bytes() - log_before < 2000
    assert proc.alive()


@pytest.mark.parametrize("remap", ["image:=/loop/lgseg_node/overlay",
                                   "image:=/loop/lgseg_node/class/road",
                                   "camera_info:=/loop/lgseg_node/camera_info"])
def test_an_input_remapped_onto_an_own_output_is_refused(tiny_checkpoint, remap):
    """Probe round 6: `-r image:=<node>/overlay` fed every overlay back in, 59 frames a
    second for ever from one input frame, with nothing in the log."""
    out = subprocess.run([sys.executable, "-m", "lgseg_ros.cli", "node", "--ros-args",
                          "-r", "__ns:=/loop", "-r", remap, *tiny_torch_args(tiny_checkpoint)],
                         capture_output=True, text=True, timeout=120, env=node_env())
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "one of this node's own outputs" in text and remap.split(":=")[1] in text
    assert "Traceback" not in text


def test_a_class_topic_remapped_onto_an_input_or_output_is_refused(env, tiny_checkpoint):
    """Audit round 19: `-r <node>/class/road/mask:=<the camera>` passed the configure check
    (it looked at the class prefix only), and every road mask came back in as a frame: 267
    masks from one frame in 10 s, for ever. A remap onto label_mask or another label's topic
    put wrong masks there. Now each label's topic, as remapped, is checked: at configure,
    and at every label change, since a peer's set_labels can bring the label in later."""
    h = env[0]
    reply = set_labels(h, ["road", "lamp"])          # the fixture remaps lamp's topic
    assert not reply.success
    assert ("label 'lamp': its mask topic resolves to '/hostile/camera/image_raw', which is "
            "the input image" in reply.message), reply.message
    assert [c.class_name for c in reply.class_map] == ["road", "car", "sky"]   # old set kept
    serve_one(env)
    for remap, says in (("/loop/lgseg_node/class/road/mask:=/loop/image", "the input image"),
                        ("/loop/lgseg_node/class/road/mask:=/loop/lgseg_node/label_mask",
                         "the output label_mask"),
                        # a topic of another type: rcl refused the publisher with a bare
                        # type error before the check saw it (review of audit round 19)
                        ("/loop/lgseg_node/class/road/mask:=/loop/lgseg_node/label_info",
                         "the output label_info"),
                        ("/loop/lgseg_node/class/road/mask:=/loop/lgseg_node/class/car/mask",
                         "the mask topic of label 'road'")):
        out = subprocess.run([sys.executable, "-m", "lgseg_ros.cli", "node", "--ros-args",
                              "-r", "__ns:=/loop", "-r", remap, *tiny_torch_args(tiny_checkpoint)],
                             capture_output=True, text=True, timeout=120, env=node_env())
        text = out.stdout + out.stderr
        assert out.returncode == 1, text
        assert says in text and "configure failed" in text, text[-2000:]
        assert "Traceback" not in text


def test_a_camera_name_without_room_for_class_topics_is_refused_at_configure(tiny_checkpoint):
    """Probe round 7: a 200-character camera name was accepted, and the first label of 30
    characters then failed as "label encoding failed" with a traceback (its class-mask
    topic went over ROS's 247 characters)."""
    out = subprocess.run([sys.executable, "-m", "lgseg_ros.cli", "node", "--ros-args",
                          "-r", "__ns:=/room", *tiny_torch_args(tiny_checkpoint),
                          "-p", f"cameras:=[{'c' * 200}]"],
                         capture_output=True, text=True, timeout=120, env=node_env())
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "leaves too little room for class-mask topics" in text and "over the 247" in text
    assert "Traceback" not in text


def test_bad_start_values_stop_the_node_with_the_reason():
    """Item 3 at start-up: net_height 1000000 was accepted and configure took > 10 GB."""
    out = subprocess.run([sys.executable, "-m", "lgseg_ros.cli", "node", "--ros-args", "-r", "__ns:=/bad_start",
                          "-p", "net_height:=1000000"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert "net_height=1000000" in text and "32 to 1024" in text and "Traceback" not in text


def test_a_refused_start_value_takes_the_half_built_node_down_at_once():
    """A CI run printed the net_height refusal, then died with SIGSEGV instead of exit 2: the
    half-built node (label thread, lifecycle services) was left to garbage collection around
    rclpy's shutdown. The constructor now closes both before it raises."""
    code = ("import threading, rclpy\n"
            "from rclpy.parameter import Parameter\n"
            "from lgseg_ros.ros.node import LgsegNode\n"
            "rclpy.init()\n"
            "try:\n"
            "    LgsegNode(parameter_overrides=[Parameter('net_height', value=1000000)])\n"
            "except Exception as e:\n"
            "    print('refused', 'net_height=1000000' in str(e))\n"
            "print('label threads', sum(t.name == 'lgseg-labels' and t.is_alive() for t in threading.enumerate()))\n"
            "rclpy.shutdown()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split("\n")[:2] == ["refused True", "label threads 0"], out.stdout + out.stderr


def test_huge_and_control_character_labels_are_refused_in_short_messages(env):
    """Items 5 and 10: 8 labels of 1 MB wrote 8 MB of log; tab and newline became spaces."""
    h, proc, _, _ = env
    log_before = proc.log_bytes()
    reply = set_labels(h, ["x" * 1_000_000 for _ in range(8)])
    assert not reply.success and "1000000 characters" in reply.message
    assert len(reply.message) < 400
    assert [c.class_name for c in reply.class_map] == ["road", "car", "sky"]
    wait_until(lambda: proc.log_bytes() > log_before, timeout=5, what="the refusal in the log")
    time.sleep(0.3)
    assert proc.log_bytes() - log_before < 4000, proc.text_since(log_before)[:2000]
    for bad, code in (("a\tb", "U+0009"), ("traffic\nlight", "U+000A"), ("zero\u200bwidth", "U+200B")):
        reply = set_labels(h, ["road", bad])
        assert not reply.success and code in reply.message and "label 1" in reply.message, reply.message
    # A NUL never reaches the node: the client library ends the string there before sending
    # (rosidl strings are C strings). The reply's class_map shows what the node received.
    reply = set_labels(h, ["car\x00bomb", "road"])
    assert reply.success and [c.class_name for c in reply.class_map] == ["car", "road"]
    assert set_labels(h, ["road", "car", "sky"]).success
    serve_one(env)


def _status_counts(rec, after: float) -> dict:
    """Counters of the newest ~/status received after `after` (monotonic)."""
    def newest():
        with rec.cond:
            msgs = [(t, m) for t, m in rec.msgs[f"{NODE}/status"] if t > after and m.status]
        return msgs[-1][1] if msgs else None
    msg = rec.wait_for(newest, timeout=10, what="a fresh ~/status")
    values = {kv.key: kv.value for kv in msg.status[0].values}
    return {k: int(values[k]) for k in ("frames_in", "frames_processed", "frames_dropped",
                                        "frames_rejected", "frames_failed")}


@pytest.mark.parametrize("width, height", [(640, 480), (1280, 720)])
def test_large_raw_frames_at_30_hz_all_reach_the_node(env, width, height):
    """Item 6: at the default (best-effort) input QoS, 640x480 bgr8 frames arrived 0-2 of 10
    and 1280x720 0 of 10. Published best effort at 30 Hz, as a camera driver does; the
    node's overlay (as large as the frame) comes back to a best-effort subscriber because
    the node applied the profile to its own process."""
    h, proc, rec, _ = env
    use_mode(env, compressed=False)
    overlay = f"{NODE}/overlay"
    rec.listen(overlay, Image, qos_profile_sensor_data)
    cam = h.client.create_publisher(Image, CAMERA, qos_profile_sensor_data)
    try:
        rec.wait_matched(overlay)
        wait_until(lambda: cam.get_subscription_count() > 0, timeout=15, what="the node to match")
        time.sleep(0.5)
        before = _status_counts(rec, time.monotonic())
        rng = np.random.default_rng(width)
        base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        n, sent = 30, []
        t0 = time.monotonic()
        for i in range(n):
            msg = rgb_msg(np.roll(base, i, axis=1), encoding="bgr8")
            sent.append(stamp_key(msg.header))
            cam.publish(msg)
            time.sleep(max(0.0, t0 + (i + 1) / 30.0 - time.monotonic()))
        end = time.monotonic() + 15
        while True:  # until the last frame is done (or the deadline says it never will be)
            after = _status_counts(rec, time.monotonic())
            got = {k: after[k] - before[k] for k in after}
            done = got["frames_processed"] + got["frames_dropped"] + got["frames_rejected"] + got["frames_failed"]
            if done >= got["frames_in"] >= n - LATEST_FRAME_SLACK or time.monotonic() > end:
                break
        print(f"{width}x{height} bgr8 at 30 Hz: {got}")
        # The node's input keeps one sample (depth 1): when its executor does not get the
        # CPU for a frame interval (this 2-core machine runs a training job beside the
        # tests), DDS replaces the unread sample with the newer one before the callback
        # counts it. That is the node's latest-frame dropping one step earlier, so up to 3
        # of 30 may go uncounted; the fault this test guards against loses 28-30 of 30.
        assert got["frames_in"] >= n - LATEST_FRAME_SLACK, got
        assert got["frames_rejected"] == got["frames_failed"] == 0, got
        # Latest-frame dropping aside, every frame that arrived was answered.
        assert got["frames_processed"] + got["frames_dropped"] == got["frames_in"], got
        wanted = set(sent)
        overlays = rec.wait_for(
            lambda: (lambda o: o if len(o) >= got["frames_processed"] else None)(
                [m for m in rec.get(overlay) if stamp_key(m.header) in wanted]),
            timeout=10, what=f"{got['frames_processed']} overlays")
        assert len(overlays) == got["frames_processed"], (len(overlays), got)
        assert (overlays[-1].width, overlays[-1].height) == (width, height)
    finally:
        rec.stop(overlay)
        h.client.destroy_publisher(cam)


# --- decode bombs -------------------------------------------------------------------------

def bmp_rle_bomb(w: int = 30000, h: int = 30000) -> bytes:
    """1,080 bytes: an RLE8 BMP claiming w x h (what cost 3-5 GB and 6-10 s)."""
    palette = bytes(1024)
    pixels = b"\x00\x01"  # end of bitmap
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    offset = 14 + 40 + len(palette)
    return struct.pack("<2sIHHI", b"BM", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def webp_bomb(w: int = 12000, h: int = 12000, size: int = 256 * 1024) -> bytes:
    """A lossless WebP header claiming w x h, padded with random bits (was +1.8 GB)."""
    bits = (w - 1) | ((h - 1) << 14) | (1 << 28)  # alpha hint set, version 0
    body = b"\x2f" + struct.pack("<I", bits) + np.random.default_rng(1).bytes(size)
    chunk = b"VP8L" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def png_bomb(w: int = 30000, h: int = 30000) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(bytes(1 << 20), 9)) + _png_chunk(b"IEND", b""))


def png_second_ihdr_bomb(side: int = 12000) -> bytes:
    """A 16x16 IHDR, which the pixel limit reads, then a second one of side x side, whose
    size Pillow took: 0.42 MB decoded whole before the size mismatch was noticed (probe round
    12: +1353 MB peak RSS, masks held 2.17 s, a DecompressionBombWarning on stderr)."""
    z = zlib.compressobj(9)
    row = b"\x00" + bytes(side * 3)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0))
            + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


def jpeg_with_size(w: int, h: int) -> bytes:
    ok, jpg = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    b = bytearray(jpg.tobytes())
    i = b.index(b"\xff\xc0")
    b[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(b)


def jpeg_padded_before_sof(segments: int) -> bytes:
    """A real small JPEG with ``segments`` empty COM segments between SOI and its frame header
    (probe round 10: 8.6 million of them, 34 MB, held the node 1.6 s in the header walk)."""
    ok, jpg = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    return jpg.tobytes()[:2] + b"\xff\xfe\x00\x02" * segments + jpg.tobytes()[2:]


BOMBS = {
    "bmp_rle_30000x30000": (bmp_rle_bomb(), "BMP"),
    "webp_12000x12000": (webp_bomb(), "WebP"),
    "png_30000x30000": (png_bomb(), "max_image_pixels"),
    "png_16x16_then_ihdr_12000x12000": (png_second_ihdr_bomb(), "second IHDR chunk"),
    "jpeg_sof_30000x30000": (jpeg_with_size(30000, 30000), "max_image_pixels"),
    "jpeg_sof_65535x65535": (jpeg_with_size(65535, 65535), "max_image_pixels"),
    "ppm_30000x30000": (b"P6 30000 30000 255\n" + bytes(1000), "PPM"),
    "tiff": (b"II*\x00" + bytes(1000), "TIFF"),
    "gif_65535x65535": (b"GIF89a\xff\xff\xff\xff" + bytes(1000), "GIF"),
    "jpeg2000": (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(1000), "JPEG 2000"),
    "hdr": (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 30000 +X 30000\n" + bytes(100), "Radiance HDR"),
    "jpeg_without_sof": (b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(1000), "no image size"),
    # decodes fine (a 16x16 frame) but for the walk to its frame header, refused unwalked
    "jpeg_100000_segments_before_sof": (jpeg_padded_before_sof(100_000), "before its frame header"),
}


def test_decode_bombs_are_refused_before_decoding(env):
    """Item 2: each refused by name or by size from its header; per message, the node's peak
    RSS rises < 300 MB and the next good frame is answered within 1 s."""
    h, proc, rec, _ = env
    use_mode(env, compressed=True)
    serve_one(env)
    report = {}
    log_at = proc.log_bytes()
    for name, (data, words) in BOMBS.items():
        rejected = _status_counts(rec, time.monotonic())["frames_rejected"]
        rss0 = proc.rss_mb()
        proc.reset_peak()
        env.cpub.publish(CompressedImage(header=header(), format="jpeg", data=data))
        wait_until(lambda: _status_counts(rec, time.monotonic())["frames_rejected"] > rejected
                   or not proc.alive(), timeout=10, what=f"{name} to be rejected")
        took = serve_one(env)
        rise = proc.peak_mb() - rss0
        report[name] = {"bytes": len(data), "peak_rss_rise_mb": round(rise, 1), "next_frame_s": round(took, 3)}
        assert rise < 300, (name, rise)
    print(json.dumps({"decode_bombs": report}))
    # The reasons reach the log (throttled per reason: same-reason refusals are counted).
    log = proc.text_since(log_at)
    for name, (_, words) in BOMBS.items():
        assert words in log, (name, words)


# --- fuzz --------------------------------------------------------------------------------

FUZZ_BATCHES = 6          # per input mode
FUZZ_PER_BATCH = 25       # messages per batch, each given time to reach the worker
FUZZ_SECONDS = 40.0       # hard cap for both modes together
RSS_RISE_LIMIT_MB = 300   # any batch's peak over its start, and the end over the start
ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "rgb16", "bayer_rggb8", "yuv422",
             "yuv422_yuy2", "16UC1", "32FC1", "8UC3", "", "jpeg", "rgb8\x01", "ЖЖЖ", "x" * 70000]


def _rand_text(rng, long_ok=True) -> str:
    kind = rng.integers(0, 6)
    if kind == 0:
        return ""
    if kind == 1 and long_ok:
        return "y" * int(rng.integers(1000, 300_000))
    if kind == 2:
        return "".join(chr(int(c)) for c in rng.integers(1, 0x2FFF, int(rng.integers(1, 40))))
    if kind == 3:
        return "road\tcar\n\x1b[31m"
    return "".join(rng.choice(list("abcdefg _-/~{}"), int(rng.integers(1, 20))))


def random_image(rng) -> Image:
    msg = Image(header=header(_rand_text(rng)))
    msg.header.stamp.sec = int(rng.integers(-2 ** 31, 2 ** 31))
    msg.header.stamp.nanosec = int(rng.integers(0, 2 ** 32))
    dims = [0, 1, 2, 3, 7, 90, 120, 481, 4096, 65535, 2 ** 31 - 1, 2 ** 32 - 1]
    msg.height = int(rng.choice(dims)) if rng.random() < 0.5 else int(rng.integers(1, 600))
    msg.width = int(rng.choice(dims)) if rng.random() < 0.5 else int(rng.integers(1, 600))
    msg.encoding = str(rng.choice(ENCODINGS))
    msg.is_bigendian = int(rng.integers(0, 256))
    row = msg.width * int(rng.choice([1, 2, 3, 4, 6, 8]))
    msg.step = int(rng.choice([0, row, row + int(rng.integers(0, 64)), 2 ** 32 - 1, int(rng.integers(0, 2 ** 32))])) % 2 ** 32
    size = msg.step * msg.height
    n = size if 0 < size <= 3_000_000 and rng.random() < 0.6 else int(rng.integers(0, 2_000_000))
    msg.data = rng.bytes(n)
    return msg


def random_compressed(rng) -> CompressedImage:
    good = _good_frame(True).data
    ok, png = cv2.imencode(".png", camvid_frames(1)[0])
    choices = [
        lambda: rng.bytes(int(rng.integers(0, 200_000))),
        lambda: bytes(good[: int(rng.integers(0, len(good)))]),              # truncated JPEG
        lambda: bytes(good[:200]) + rng.bytes(int(rng.integers(0, 50_000))),  # corrupt JPEG
        lambda: png.tobytes()[: int(rng.integers(0, png.size))],             # truncated PNG
        lambda: png.tobytes()[:40] + rng.bytes(5000),                        # corrupt PNG
        lambda: jpeg_with_size(int(rng.integers(0, 65536)), int(rng.integers(0, 65536))),
        lambda: png_bomb(int(rng.integers(0, 2 ** 32)), int(rng.integers(0, 2 ** 32))),
        lambda: BOMBS[str(rng.choice(list(BOMBS)))][0],
        lambda: bmp_rle_bomb(int(rng.integers(1, 60000)), int(rng.integers(-60000, 60000))),
    ]
    data = choices[int(rng.integers(0, len(choices)))]()
    return CompressedImage(header=header(_rand_text(rng)), format=_rand_text(rng), data=data)


def random_labels(rng) -> list[str]:
    n = int(rng.choice([0, 1, 3, 20, 257, 300])) if rng.random() < 0.5 else int(rng.integers(1, 12))
    return [_rand_text(rng, long_ok=rng.random() < 0.1) for _ in range(n)]


_PARAM_NAMES = ["labels", "cameras", "net_height", "qos_depth", "overlay_alpha", "colormap", "checkpoint",
                "status_period", "score_threshold", "max_image_pixels", "nope", "", "x" * 5000]


def random_parameter(rng) -> ParameterMsg:
    t = int(rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 99, 255]))
    v = ParameterValue(type=t)
    v.bool_value = bool(rng.integers(0, 2))
    v.integer_value = int(rng.choice([-1, 0, 1, 64, 1_000_000, 2 ** 63 - 1]))
    v.double_value = float(rng.choice([-1.0, 0.0, 0.5, 1e300, math.inf, math.nan]))
    v.string_value = _rand_text(rng, long_ok=rng.random() < 0.2)
    v.string_array_value = random_labels(rng)[:8]
    v.integer_array_value = [int(x) for x in rng.integers(-5, 5, int(rng.integers(0, 5)))]
    v.byte_array_value = [bytes([int(b)]) for b in rng.integers(0, 256, int(rng.integers(0, 5)))]
    return ParameterMsg(name=str(rng.choice(_PARAM_NAMES)), value=v)


def _restore(env_) -> None:
    """Undo what a fuzzed request may legitimately have changed, so 'the next good frame is
    served' stays a fair question: a valid small max_image_pixels would refuse it."""
    h = env_[0]
    value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=4194304)
    assert set_params(h, [ParameterMsg(name="max_image_pixels", value=value)])[0].successful
    assert set_labels(h, ["road", "car", "sky"]).success


def _fuzz(env_, compressed: bool, seed: int, seconds: float) -> dict:
    h, proc, rec, pub = env_
    use_mode(env_, compressed)
    rng = np.random.default_rng(seed)
    labels_client = h.client.create_client(SetLabels, f"{NODE}/set_labels")
    params_client = h.client.create_client(SetParameters, f"{NODE}/set_parameters")
    serve_one(env_)
    start_rss = proc.rss_mb()
    end = time.monotonic() + seconds
    stats = {"mode": "compressed" if compressed else "raw", "seed": seed, "batches": 0, "messages": 0,
             "label_requests": 0, "parameter_requests": 0, "start_rss_mb": round(start_rss, 1),
             "max_batch_peak_rise_mb": 0.0, "max_next_frame_s": 0.0}
    try:
        for _ in range(FUZZ_BATCHES):
            if time.monotonic() > end:
                break
            batch_rss = proc.rss_mb()
            proc.reset_peak()
            for i in range(FUZZ_PER_BATCH):
                if compressed:
                    env_.cpub.publish(random_compressed(rng))
                else:
                    pub.publish(random_image(rng))
                stats["messages"] += 1
                if i % 5 == 0:  # label sets and parameter requests between the frames
                    # Sent again when unanswered for 5 s: after a request over 1 MB (some
                    # of these are) the node renews that server, and a request caught in
                    # the switch gets no reply (service_renewal.py); repeating is harmless.
                    h.call(labels_client, SetLabels.Request(labels=random_labels(rng)), retry=True)
                    h.call(params_client, SetParameters.Request(
                        parameters=[random_parameter(rng) for _ in range(int(rng.integers(1, 4)))]),
                        retry=True)
                    stats["label_requests"] += 1
                    stats["parameter_requests"] += 1
                time.sleep(0.04)  # the node keeps the newest frame only: let each one be looked at
            _restore(env_)
            took = serve_one(env_)
            peak_rise = proc.peak_mb() - batch_rss
            stats["batches"] += 1
            stats["max_batch_peak_rise_mb"] = round(max(stats["max_batch_peak_rise_mb"], peak_rise), 1)
            stats["max_next_frame_s"] = round(max(stats["max_next_frame_s"], took), 3)
            assert peak_rise < RSS_RISE_LIMIT_MB, (stats, peak_rise)
            assert proc.rss_mb() - start_rss < RSS_RISE_LIMIT_MB, (stats, proc.rss_mb())
    finally:
        h.client.destroy_client(labels_client)
        h.client.destroy_client(params_client)
    stats["end_rss_mb"] = round(proc.rss_mb(), 1)
    status = _status_counts(rec, time.monotonic())
    stats["node_counters"] = status
    assert status["frames_rejected"] > 0
    return stats


FUZZ_SEED = int(os.environ.get("LGSEG_FUZZ_SEED", "10"))


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "compressed"])
def test_fuzz_the_node_stays_alive_serves_and_stays_bounded(env, compressed):
    """Bounded fuzz (count and time): random Image / CompressedImage messages (header, sizes,
    encodings, formats, bytes), random label sets and raw parameter requests. After each
    batch: the process lives, the next good frame is answered within 1 s, and the peak RSS
    during the batch, and the RSS since the start, rose less than 300 MB.
    LGSEG_FUZZ_SEED picks another sequence."""
    t0 = time.monotonic()
    stats = _fuzz(env, compressed, FUZZ_SEED + int(compressed), FUZZ_SECONDS / 2)
    stats["wall_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps({"fuzz": stats}))
    assert stats["batches"] >= 2, stats
    assert env[1].log_bytes() < 5_000_000, "the log grew by megabytes"


def test_no_input_warning_names_the_shared_memory_cause(env):
    """Item 6: the hint pointed only at qos_reliability. A camera with a publisher but no
    frame arriving is the signature of frames lost above the shared-memory segment."""
    h, proc, _, _ = env
    use_mode(env, compressed=False)
    serve_one(env)
    log_at = proc.log_bytes()
    wait_until(lambda: "shared-memory segment" in proc.text_since(log_at), timeout=20,
               what="the no-input warning")
    line = next(x for x in proc.text_since(log_at).splitlines() if "shared-memory segment" in x)
    assert "fastdds_large_frames.xml" in line and "publishers)" in line, line
    serve_one(env)


def test_node_help_prints_and_exits():
    """Item 8: `lgseg node --help` started a node."""
    for flag in ("--help", "-h"):
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "lgseg_ros.cli", "node", flag],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("usage: lgseg node") and "net_height" in out.stdout
        assert "32 to 1024" in out.stdout and "active" not in out.stderr
        print(f"lgseg node {flag}: {time.monotonic() - t0:.1f} s")


def test_set_labels_says_stored_while_unconfigured_and_refuses_after_shutdown(tiny_checkpoint):
    """Item 7: unconfigured replies said "in force"; a finalized node replied success."""
    h = RosHarness()
    try:
        node = h.add(LgsegNode("lgseg_unconfigured", namespace="/hostile_lc", context=h.context,
                               parameter_overrides=node_params(tiny_checkpoint, autostart=False)))
        client = h.client.create_client(SetLabels, "/hostile_lc/lgseg_unconfigured/set_labels")
        reply = h.call(client, SetLabels.Request(labels=["door", "floor"]))
        assert reply.success and "stored" in reply.message and "next configure" in reply.message
        assert "in force" not in reply.message
        node.trigger_shutdown()
        assert node.lifecycle_state == "finalized"
        reply = h.call(client, SetLabels.Request(labels=["door"]))
        assert not reply.success and "shut down" in reply.message
    finally:
        h.close()


def test_shutdown_transition_ends_the_process_with_0(env):
    """Item 7: after the shutdown transition the process kept running. Last in this module."""
    h, proc, _, _ = env
    serve_one(env)
    client = h.client.create_client(ChangeState, f"{NODE}/change_state")
    reply = h.call(client, ChangeState.Request(
        transition=Transition(id=Transition.TRANSITION_ACTIVE_SHUTDOWN)), retry=False)
    assert reply.success
    assert proc.wait(15) == 0, proc.text()[-3000:]
    assert "shut down" in proc.text()
