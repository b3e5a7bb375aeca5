"""`lgseg labels`, `lgseg label-info`, `lgseg status`: the node's everyday ROS tools for a
venv without the `ros2` CLI (ros2cli is not on PyPI).

    lgseg labels set road car person      # = ros2 service call .../set_labels ...
    lgseg labels get                      # = ros2 param get .../lgseg_node labels
    lgseg label-info [--follow]           # = ros2 topic echo .../label_info (latched)
    lgseg status [--follow]               # = ros2 topic echo .../status

They are plain rclpy clients: they obey ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE
like any node, and force neither. Exit status: 0 done, 1 refused by the node, 2 no answer
(or one larger than MAX_MESSAGE_BYTES, which is not read).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any, Callable

from lgseg_ros.labels import MAX_LABEL_CHARS, MAX_LABELS, printable

NODE = "/lgseg_node"
# What a reply may make us print: the node serves at most MAX_LABELS labels; a fake node
# answering with a million entries gets the first rows and a count, not a million lines.
MAX_ROWS = MAX_LABELS
MAX_STATUSES = 32
MAX_PAIRS = 64
# A message the tools read at all: the node's label_info (256 labels) and status (16
# cameras) are tens of KB. rclpy converted every entry of a peer's 32 MB label_info before
# the tool's slicing ran, 760 MB of RSS (audit round 17); read raw, measured, then converted.
MAX_MESSAGE_BYTES = 1 << 20


def _bounded(msg_type, show: Callable[[Any], None], topic: str) -> Callable[[bytes], None]:
    """A raw-subscription callback: ``show`` gets the message if it is at most
    MAX_MESSAGE_BYTES on the wire; a larger one is named on stderr and dropped unread."""
    from rclpy.serialization import deserialize_message

    def on_raw(raw: bytes) -> None:
        if len(raw) > MAX_MESSAGE_BYTES:
            print(f"lgseg: a message of {len(raw)} bytes on {printable(topic)}, more than "
                  f"{MAX_MESSAGE_BYTES}: not read", file=sys.stderr)
            return
        try:
            msg = deserialize_message(raw, msg_type)
        except Exception as exc:  # noqa: BLE001 - a peer's malformed sample must not end the tool
            print(f"lgseg: an unreadable message on {printable(topic)} ({printable(str(exc), 200)})",
                  file=sys.stderr)
            return
        show(msg)
    return on_raw


def _seconds(text: str) -> float:
    """--timeout: finite and >= 0 (NaN never compares true: the wait never ended)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be a finite number of "
                                         "seconds >= 0")
    return value


def _level_int(level) -> int:
    """A DiagnosticStatus level (bytes of length 1 in rclpy, or an int) as an int."""
    return level if isinstance(level, int) else (level[0] if len(level) == 1 else -1)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node", default=NODE, help=f"fully qualified node name (default {NODE})")
    p.add_argument("--timeout", type=_seconds, default=10.0,
                   help="seconds to wait for the node to answer (default 10)")


def _camera_prefix(args) -> str:
    node = "/" + args.node.strip("/")
    return f"{node}/{args.camera.strip('/')}" if getattr(args, "camera", "") else node


class ReplyTooLarge(RuntimeError):
    """A service reply larger than any the node sends."""


class _Client:
    """One short-lived rclpy context and node, spun on this thread."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f"lgseg_cli_{int(time.time() * 1000) % 10**9}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def call(self, srv_type, name: str, request, timeout: float):
        """The reply, None without one; ReplyTooLarge for one over MAX_MESSAGE_BYTES."""
        from lgseg_ros.ros.service_renewal import request_bytes

        client = self.node.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            return None
        future = client.call_async(request)
        self.executor.spin_until_future_complete(future, timeout_sec=timeout)
        resp = future.result() if future.done() else None
        # rclpy has no raw service client (the topics are read raw, _bounded): it converts a
        # reply whole before we see it. Measured here, in work bounded by the limit, so that
        # a fake node's 30 MB reply is named and dropped, not walked entry by entry.
        if resp is not None and request_bytes(resp, MAX_MESSAGE_BYTES) > MAX_MESSAGE_BYTES:
            raise ReplyTooLarge(f"a reply of more than {MAX_MESSAGE_BYTES} bytes from "
                                f"{printable(name)}: not read")
        return resp

    def spin_until(self, done: Callable[[], bool], timeout: float | None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not done():
            if end is not None and time.monotonic() > end:
                return False
            self.executor.spin_once(timeout_sec=0.05)
        return True

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


def _print_mapping(title: str, entries: list[tuple], total: int | None = None) -> None:
    """entries: (id, name, mask topic or "", and optionally what the model reads it as);
    ``total``: how many the reply had, where only the first were read. Every string came
    from the network: printed through printable(), never raw. ``title`` is printed as
    given: each part a peer sent is passed through printable() by the caller, once (cut
    again here, a 5,000-character reply message was shown as "(431 characters)", the
    length of the first cut, and the reply time was lost)."""
    print(title)
    for class_id, name, topic, *reads in entries[:MAX_ROWS]:
        note = f"  (reads as {printable(reads[0])})" if reads and reads[0] else ""
        print(f"  {class_id:>4}  {printable(name)}{note}" + (f"    {printable(topic)}" if topic else ""))
    total = len(entries) if total is None else total
    if total > MAX_ROWS:
        print(f"  ... {total - MAX_ROWS} more entries not shown (a node serves at most {MAX_LABELS})")


def _reads_as(entry) -> str:
    """For a well-grounded word the checkpoint never trained on: its nearest trained name,
    which the node anchors it towards (label_anchor)."""
    near = getattr(entry, "nearest_trained_name", "")
    if not near or near == entry.label or not getattr(entry, "well_grounded", False):
        return ""
    return (f"'{printable(near, MAX_LABEL_CHARS)}' = "
            f"{printable(entry.nearest_trained_class, MAX_LABEL_CHARS)}, {entry.grounding_score:.2f}")


# -- labels --------------------------------------------------------------------------------
def labels_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lgseg labels", description="Set or get the node's label set.")
    sub = p.add_subparsers(dest="action", required=True)
    ps = sub.add_parser("set", help="replace the label set (ids follow the order given)")
    ps.add_argument("labels", nargs="+", help="labels, one argument each: quote multi-word ones "
                                              "('traffic light')")
    _common(ps)
    pg = sub.add_parser("get", help="print the label set in force")
    _common(pg)
    args = p.parse_args(argv)
    client = _Client()
    try:
        return _labels_set(client, args) if args.action == "set" else _labels_get(client, args)
    except ReplyTooLarge as exc:
        print(f"lgseg labels: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()


def _labels_set(client: _Client, args) -> int:
    from lgseg_ros.srv import SetLabels

    name = f"/{args.node.strip('/')}/set_labels"
    t0 = time.perf_counter()
    resp = client.call(SetLabels, name, SetLabels.Request(labels=list(args.labels)), args.timeout)
    if resp is None:
        print(f"lgseg labels: no answer from {name} within {args.timeout:g} s "
              "(is the node running, in this ROS_DOMAIN_ID?)", file=sys.stderr)
        return 2
    ms = (time.perf_counter() - t0) * 1e3
    # Only as many entries as the node serves are read: a fake node's 2,000 were all walked.
    reported = {e.class_id: e for e in getattr(resp, "labels", [])[:MAX_LABELS]}
    entries = []
    for c in resp.class_map[:MAX_LABELS]:
        e = reported.get(c.class_id)
        entries.append((c.class_id, c.class_name, e.mask_topic if e else "", _reads_as(e) if e else ""))
    total = len(resp.class_map)
    if not resp.success:
        print(f"lgseg labels: refused: {printable(resp.message, 400)}", file=sys.stderr)
        _print_mapping("still in force:", entries, total)
        return 1
    _print_mapping(f"{printable(resp.message, 400)} ({ms:.0f} ms):", entries, total)
    for warning in getattr(resp, "warnings", [])[:MAX_ROWS]:
        print(f"warning: {printable(warning, 400)}")
    return 0


def _labels_get(client: _Client, args) -> int:
    from rcl_interfaces.srv import GetParameters

    name = f"/{args.node.strip('/')}/get_parameters"
    resp = client.call(GetParameters, name, GetParameters.Request(names=["labels"]), args.timeout)
    if resp is None or not resp.values:
        print(f"lgseg labels: no answer from {name} within {args.timeout:g} s", file=sys.stderr)
        return 2
    labels = resp.values[0].string_array_value
    _print_mapping(f"{len(labels)} labels:", [(i, n, "") for i, n in enumerate(labels[:MAX_LABELS])],
                   len(labels))
    return 0


# -- label-info ----------------------------------------------------------------------------
def _label_info_types() -> list[Any]:
    """Both LabelInfo types: the node publishes vision_msgs' where it is installed."""
    types = []
    try:
        from vision_msgs.msg import LabelInfo as VisionLabelInfo
        types.append(VisionLabelInfo)
    except ImportError:
        pass
    from lgseg_ros.msg import LabelInfo
    return types + [LabelInfo]


def label_info_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="lgseg label-info",
        description="Print the node's latched ~/label_info (id -> label, and which frame it "
                    "starts at). It changes with every label change: --follow keeps printing.")
    _common(p)
    p.add_argument("--camera", default="", help="camera namespace of a multi-camera node")
    p.add_argument("--follow", action="store_true", help="keep printing every new label_info")
    args = p.parse_args(argv)
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    topic = f"{_camera_prefix(args)}/label_info"
    client = _Client()
    got = [0]   # a count, not the messages: --follow runs for hours (it kept each one)
    try:
        # The type on the wire decides: ask the graph, else try ours.
        end = time.monotonic() + args.timeout
        wire = []
        while not wire and time.monotonic() < end:
            wire = [t for n, ts in client.node.get_topic_names_and_types() if n == topic for t in ts]
            if not wire:
                client.spin_until(lambda: False, 0.1)
        msg_type = next((t for t in _label_info_types()
                         if wire and f"{t.__module__.split('.')[0]}/msg/LabelInfo" == wire[0]),
                        _label_info_types()[-1])
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

        def show(msg) -> None:
            got[0] += 1
            stamp = f"{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}"
            where = (f"frame_id {printable(repr(msg.header.frame_id))}" if msg.header.frame_id
                     else "node clock, before any frame")
            _print_mapping(f"{printable(topic)} ({msg_type.__module__.split('.')[0]}), stamp {stamp} ({where}), "
                           f"threshold {msg.threshold:g}:",
                           [(c.class_id, c.class_name, "") for c in msg.class_map])
            sys.stdout.flush()

        client.node.create_subscription(msg_type, topic, _bounded(msg_type, show, topic), qos, raw=True)
        if not client.spin_until(lambda: got[0] > 0, max(0.0, end - time.monotonic()) + 1.0):
            print(f"lgseg label-info: nothing on {topic} within {args.timeout:g} s", file=sys.stderr)
            return 2
        if args.follow:
            client.spin_until(lambda: False, None)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()


# -- status --------------------------------------------------------------------------------
STATUS_KEYS = ("frames_in", "frames_processed", "frames_dropped", "frames_rejected", "frames_failed",
               "rate_hz", "total_ms_p50", "total_ms_p95", "model_ms_p50")


def status_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lgseg status",
                                description="Print the node's ~/status: per camera, frame counters, "
                                            "rate and latency.")
    _common(p)
    p.add_argument("--follow", action="store_true", help="keep printing every status message")
    p.add_argument("--all", action="store_true", help="print every key, not only the main ones")
    args = p.parse_args(argv)
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    topic = f"/{args.node.strip('/')}/status"
    # Keyed by int: the constants are bytes (b'\x00') and a message's level is bytes too,
    # so a bytes-keyed table looked up by ord() never matched, and "[b'\x00']" was printed
    # instead of "[OK]" (audit round 17).
    levels = {_level_int(v): name for v, name in ((DiagnosticStatus.OK, "OK"), (DiagnosticStatus.WARN, "WARN"),
                                                  (DiagnosticStatus.ERROR, "ERROR"),
                                                  (DiagnosticStatus.STALE, "STALE"))}
    client = _Client()
    got = [0]   # a count, not the messages: --follow runs for hours (it kept each one)
    try:
        def show(msg) -> None:
            got[0] += 1
            # The node's own status has one entry per camera (at most 16) of ~30 keys; a
            # peer's can be any size (300 x 300 pairs printed 112 MB; probe round 8).
            for st in msg.status[:MAX_STATUSES]:
                values = {kv.key: kv.value for kv in st.values[:MAX_PAIRS]}
                keys = list(values) if args.all else [k for k in STATUS_KEYS if k in values]
                level = levels.get(_level_int(st.level), st.level)
                print(f"{printable(st.name)} [{printable(level)}] {printable(st.message, 400)}")
                more = len(st.values) - MAX_PAIRS
                print("  " + "  ".join(f"{printable(k, 60)}={printable(values[k], 60)}" for k in keys)
                      + (f"  ... {more} more values" if more > 0 else ""))
            if len(msg.status) > MAX_STATUSES:
                print(f"... {len(msg.status) - MAX_STATUSES} more statuses not shown")
            sys.stdout.flush()

        client.node.create_subscription(DiagnosticArray, topic, _bounded(DiagnosticArray, show, topic), 1,
                                        raw=True)
        if not client.spin_until(lambda: got[0] > 0, args.timeout):
            print(f"lgseg status: nothing on {topic} within {args.timeout:g} s "
                  "(is the node active, in this ROS_DOMAIN_ID?)", file=sys.stderr)
            return 2
        if args.follow:
            client.spin_until(lambda: False, None)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()
