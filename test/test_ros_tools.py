"""`lgseg labels set|get`, `lgseg label-info`, `lgseg status` against a real node over DDS on
loopback, each run as its own process the way a user runs it (what `ros2 service call`,
`ros2 param get` and `ros2 topic echo` would do, which cannot run here: no ros2cli on PyPI).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sensor_msgs.msg import Image

from lgseg_ros.ros.node import LgsegNode
from test_node_support import (RELIABLE, RosHarness, camvid_frames, node_params, rgb_msg,  # noqa: F401
                               tiny_checkpoint, wait_until)

REPO = Path(__file__).resolve().parents[1]
NAME = "lgseg_tools_node"
NS = f"/{NAME}"


@pytest.fixture(scope="module")
def node(tiny_checkpoint):
    h = RosHarness()
    try:
        n = h.add(LgsegNode(NAME, context=h.context, parameter_overrides=node_params(
            tiny_checkpoint, labels=["road", "car"])))
        assert n.lifecycle_state == "active"
        yield h, n
    finally:
        h.close()


def lgseg(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    # conftest.py put this session on loopback in its own ROS_DOMAIN_ID; the tool inherits it.
    return subprocess.run([sys.executable, "-m", "lgseg_ros.cli", *args], cwd=REPO, env=dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


def test_labels_set_changes_the_set_and_prints_the_mapping(node):
    _, n = node
    proc = lgseg("labels", "set", "--node", NS, "sky", "traffic light", "🚗")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(n.get_parameter("labels").value) == ["sky", "traffic light", "🚗"]
    lines = proc.stdout.splitlines()
    assert "3 labels in force" in lines[0]
    assert lines[1].split()[:2] == ["0", "sky"]
    assert "traffic light" in lines[2] and "🚗" in lines[3]
    # The node reports each label's mask topic in the reply (SetLabels.labels); the tool
    # prints it, and it is the topic the token rule gives.
    from lgseg_ros.labels import topic_tokens
    for line, token in zip(lines[1:4], topic_tokens(["sky", "traffic light", "🚗"])):
        assert line.rstrip().endswith(f"{NS}/class/{token}/mask"), line

    got = lgseg("labels", "get", "--node", NS)
    assert got.returncode == 0, got.stderr
    assert [ln.split(None, 1)[1].strip() for ln in got.stdout.splitlines()[1:]] == \
        ["sky", "traffic light", "🚗"]


def test_labels_set_reports_a_refusal_and_exits_1(node):
    _, n = node
    before = list(n.get_parameter("labels").value)
    proc = lgseg("labels", "set", "--node", NS, "car", "Car")
    assert proc.returncode == 1
    assert "refused" in proc.stderr and "duplicate" in proc.stderr
    assert list(n.get_parameter("labels").value) == before


def test_label_info_prints_the_latched_mapping(node):
    _, n = node
    assert lgseg("labels", "set", "--node", NS, "road", "sky").returncode == 0
    proc = lgseg("label-info", "--node", NS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{NS}/label_info" in proc.stdout
    rows = [ln.split(None, 1) for ln in proc.stdout.splitlines()[1:]]
    assert rows == [["0", "road"], ["1", "sky"]]


def test_status_prints_counters_of_a_streaming_node(node):
    h, _ = node
    pub = h.client.create_publisher(Image, "/image", RELIABLE)
    wait_until(lambda: pub.get_subscription_count() > 0, what="the node's image subscription")
    for frame in camvid_frames(3):
        pub.publish(rgb_msg(frame))
    proc = lgseg("status", "--node", NS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "frames_in=" in proc.stdout and "frames_processed=" in proc.stdout
    assert f"{NS}: image" in proc.stdout
    assert "[OK]" in proc.stdout or "[WARN]" in proc.stdout, proc.stdout   # the level by name


def test_a_missing_node_is_reported_not_hung():
    proc = lgseg("labels", "set", "--node", "/no_such_lgseg_node", "--timeout", "1", "road")
    assert proc.returncode == 2 and "no answer" in proc.stderr
    proc = lgseg("status", "--node", "/no_such_lgseg_node", "--timeout", "1")
    assert proc.returncode == 2 and "nothing on" in proc.stderr


def test_bad_timeouts_are_refused_with_the_option_named():
    """Probe round 6: --timeout nan never compared true, so the tool waited forever."""
    for value in ("nan", "-5", "inf"):
        proc = lgseg("status", "--node", "/no_such_lgseg_node", "--timeout", value, timeout=30)
        assert proc.returncode == 2 and "--timeout" in proc.stderr and repr(value) in proc.stderr


EVIL = "\x1b[2J\x1b[H\x1b]0;title\x07\x1b]52;c;cm0gLXJmIH4=\x07\u202eFAKE OK\r"


@pytest.fixture
def hostile_node():
    """A fake /<name> answering the tools with terminal escape sequences in every string,
    and 2,000 class entries (the real node serves at most 256)."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from lgseg_ros.msg import LabelInfo, VisionClass
    from lgseg_ros.srv import SetLabels

    h = RosHarness()
    try:
        n = h.add(Node("fake_lgseg_node", context=h.context))

        def set_labels(req, resp):
            resp.success, resp.message = True, EVIL + "labels set"
            resp.class_map = [VisionClass(class_id=i, class_name=EVIL + f"c{i}") for i in range(2000)]
            resp.warnings = [EVIL + "warn"]
            return resp

        n.create_service(SetLabels, "/fake_lgseg_node/set_labels", set_labels)
        status = n.create_publisher(DiagnosticArray, "/fake_lgseg_node/status", 10)
        info = n.create_publisher(LabelInfo, "/fake_lgseg_node/label_info", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        msg = LabelInfo(class_map=[VisionClass(class_id=0, class_name=EVIL)])
        msg.header.frame_id = EVIL
        info.publish(msg)
        # 100 statuses of 80 values: under the tools' MAX_MESSAGE_BYTES, over what they print
        many = DiagnosticArray(status=[DiagnosticStatus(
            name=EVIL, message=EVIL, values=[KeyValue(key="frames_in" + EVIL, value=EVIL)] * 80)] * 100)
        from rclpy.serialization import serialize_message

        from lgseg_ros.ros.tools import MAX_MESSAGE_BYTES
        assert len(serialize_message(many)) < MAX_MESSAGE_BYTES
        n.create_timer(0.2, lambda: status.publish(many))
        yield "/fake_lgseg_node"
    finally:
        h.close()


def test_what_a_peer_sends_reaches_the_terminal_escaped_and_bounded(hostile_node):
    """Probe round 6: the tools printed a fake node's strings raw: clear screen, window
    title, clipboard write (OSC 52), a line overwritten by a carriage return."""
    runs = [lgseg("labels", "set", "--node", hostile_node, "road"),
            lgseg("label-info", "--node", hostile_node),
            lgseg("status", "--node", hostile_node, "--all")]
    for proc in runs:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = proc.stdout + proc.stderr
        assert "\x1b" not in out and "\r" not in out and "\u202e" not in out and "\x07" not in out
        assert "\\x1b" in out   # shown, escaped
    lines = runs[0].stdout.splitlines()
    assert len(lines) < 400 and "1744 more entries not shown" in runs[0].stdout
    # 100 statuses x 80 values: a few statuses, a few values, cut
    assert len(runs[2].stdout) < 200_000 and "68 more statuses not shown" in runs[2].stdout
    assert "16 more values" in runs[2].stdout


def test_a_message_larger_than_the_tools_read_is_named_not_converted():
    """Audit round 17: rclpy converted every entry of a peer's label_info before the tool cut
    what it prints: 4 million entries (32 MB) took the tool to 760 MB. The tools subscribe
    raw now and convert a message only if it is at most MAX_MESSAGE_BYTES."""
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from lgseg_ros.msg import LabelInfo, VisionClass
    from lgseg_ros.ros.tools import MAX_MESSAGE_BYTES

    h = RosHarness()
    try:
        n = h.add(Node("huge_lgseg_node", context=h.context))
        info = n.create_publisher(LabelInfo, "/huge_lgseg_node/label_info", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        entries = MAX_MESSAGE_BYTES // 8 + 1000    # each entry is at least 8 bytes on the wire
        info.publish(LabelInfo(class_map=[VisionClass(class_id=i % 60000, class_name="")
                                          for i in range(entries)]))
        proc = lgseg("label-info", "--node", "/huge_lgseg_node", "--timeout", "5")
    finally:
        h.close()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"more than {MAX_MESSAGE_BYTES}: not read" in proc.stderr, proc.stderr


@pytest.fixture
def oversized_node():
    """A fake node whose ~/set_labels and ~/get_parameters reply with more than any node
    sends: ``reply["labels"]`` is what get_parameters answers."""
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import GetParameters
    from rclpy.node import Node

    from lgseg_ros.msg import VisionClass
    from lgseg_ros.srv import SetLabels

    h = RosHarness()
    reply = {"labels": []}
    try:
        n = h.add(Node("big_lgseg_node", context=h.context, start_parameter_services=False))

        def set_labels(req, resp):
            resp.success, resp.message = True, "labels set"
            # 40,000 entries of 40 characters: ~2 MB on the wire
            resp.class_map = [VisionClass(class_id=i % 60000, class_name="c" * 40) for i in range(40_000)]
            return resp

        def get_parameters(req, resp):
            resp.values = [ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY,
                                          string_array_value=reply["labels"])]
            return resp

        n.create_service(SetLabels, "/big_lgseg_node/set_labels", set_labels)
        n.create_service(GetParameters, "/big_lgseg_node/get_parameters", get_parameters)
        yield "/big_lgseg_node", reply
    finally:
        h.close()


def test_labels_replies_are_read_only_as_far_as_a_node_sends(oversized_node):
    """`lgseg labels set/get` walked and converted every entry of a node's reply (rclpy has
    no raw service client, so it hands over the reply whole): a fake node's megabytes were
    all turned into rows before the tool cut what it printed. A reply over the tools'
    MAX_MESSAGE_BYTES is now named and not read (exit 2), and of a smaller one only the
    MAX_LABELS entries a node serves are read, the rest counted."""
    from lgseg_ros.labels import MAX_LABEL_CHARS, MAX_LABELS
    from lgseg_ros.ros.tools import MAX_MESSAGE_BYTES

    node, reply = oversized_node
    too_large = f"a reply of more than {MAX_MESSAGE_BYTES} bytes from {node}/"
    proc = lgseg("labels", "set", "--node", node, "road")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"{too_large}set_labels: not read" in proc.stderr and proc.stdout == ""
    reply["labels"] = ["x" * MAX_LABEL_CHARS] * 20_000          # ~1.4 MB
    proc = lgseg("labels", "get", "--node", node)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"{too_large}get_parameters: not read" in proc.stderr and proc.stdout == ""
    reply["labels"] = [f"l{i}" for i in range(1000)]
    proc = lgseg("labels", "get", "--node", node)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "1000 labels:" and len(lines) == 1 + MAX_LABELS + 1
    assert lines[-1].strip() == f"... {1000 - MAX_LABELS} more entries not shown (a node serves at most {MAX_LABELS})"
    assert "Traceback" not in proc.stderr


def test_a_long_reply_message_is_cut_once():
    """`lgseg labels set` cut a node's reply message to 400 characters, then cut the title
    holding it again: a 5,000-character message was shown as "... (431 characters)" (the
    length of the first cut), the real length and the reply time lost. Cut once now."""
    from rclpy.node import Node

    from lgseg_ros.msg import VisionClass
    from lgseg_ros.srv import SetLabels

    h = RosHarness()
    try:
        n = h.add(Node("long_msg_lgseg_node", context=h.context))

        def set_labels(req, resp):
            resp.success, resp.message = True, "m" * 5000
            resp.class_map = [VisionClass(class_id=0, class_name="road")]
            return resp

        n.create_service(SetLabels, "/long_msg_lgseg_node/set_labels", set_labels)
        proc = lgseg("labels", "set", "--node", "/long_msg_lgseg_node", "road")
    finally:
        h.close()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    title = proc.stdout.splitlines()[0]
    assert title.count("characters)") == 1, title
    assert title.startswith("m" * 400 + "... (5000 characters) (") and title.endswith(" ms):"), title
