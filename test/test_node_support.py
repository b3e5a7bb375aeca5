"""Shared helpers for the node tests: a real rclpy context and executor per test module, a
test-tiny checkpoint (so the test and the node run the very same weights), frames, and a
topic recorder. No test functions here; nothing is mocked.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import weakref
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from lgseg_ros.ros.dds import apply_dds_config
from lgseg_ros.ros.executor import BackgroundSpin, RespinExecutor
from lgseg_ros.ros.image_conversion import numpy_to_image

# At import, i.e. at collection, before any test creates a participant (Fast DDS reads the
# profile once per process), and inherited by the node processes the tests start.
apply_dds_config()

CAMVID_VAL = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "camvid" / "val"
FRAME_HW = (90, 120)      # small frames: the tests share two CPU cores
NET_HW = (64, 96)         # multiples of 32
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def make_checkpoint(path: Path, seed: int = 0) -> str:
    """A test-tiny checkpoint: the node and the test's own Segmenter load identical weights
    (another ``seed``: another model of the same config)."""
    import torch

    from lgseg_ros.model import build_model, get_config, save_checkpoint

    torch.manual_seed(seed)
    cfg = get_config("test-tiny")
    return str(save_checkpoint(path, build_model(cfg), cfg))


# Cached here rather than in session fixtures: a fixture imported into several test modules
# is a separate fixture per module to pytest, and each would build its own.
@functools.lru_cache(maxsize=None)
def _shared_checkpoint() -> str:
    folder = tempfile.mkdtemp(prefix="lgseg_test_ckpt_")
    atexit.register(shutil.rmtree, folder, True)
    return make_checkpoint(Path(folder) / "test_tiny.safetensors")


@functools.lru_cache(maxsize=None)
def _shared_reference():
    from lgseg_ros.runtime.segmenter import Segmenter

    return Segmenter(checkpoint=_shared_checkpoint(), backend="torch", device="cpu", net_size=NET_HW)


@pytest.fixture(scope="session")
def tiny_checkpoint() -> str:
    return _shared_checkpoint()


@pytest.fixture(scope="session")
def reference_segmenter():
    """The library run the node's outputs are compared with (same checkpoint, same sizes)."""
    return _shared_reference()


def node_params(checkpoint: str, **extra) -> list[Parameter]:
    values = {"checkpoint": checkpoint, "backend": "torch", "device": "cpu",
              "net_height": NET_HW[0], "net_width": NET_HW[1], "status_period": 0.2, **extra}
    return [Parameter(k, value=v) for k, v in values.items()]


def camvid_frames(n: int, hw=FRAME_HW) -> list[np.ndarray]:
    """n RGB frames: CamVid val images when present, else smooth generated scenes."""
    files = sorted(CAMVID_VAL.glob("*.png"))[:n] if CAMVID_VAL.is_dir() else []
    frames = [cv2.resize(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), hw[::-1],
                         interpolation=cv2.INTER_AREA) for f in files]
    rng = np.random.default_rng(7)
    while len(frames) < n:
        base = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), hw[::-1],
                          interpolation=cv2.INTER_CUBIC)
        frames.append(base)
    return frames


_last_ns = [0]
_seq_lock = threading.Lock()


def header(frame_id: str = "camera") -> Header:
    """Wall-clock stamp, unique and increasing per call: the tests match outputs to inputs by
    stamp, and compare them with label_info stamps, which may come from the node's clock."""
    with _seq_lock:
        ns = max(time.time_ns(), _last_ns[0] + 1000)
        _last_ns[0] = ns
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = divmod(ns, 1_000_000_000)
    return h


def stamp_key(h: Header) -> tuple[int, int]:
    return (h.stamp.sec, h.stamp.nanosec)


def rgb_msg(rgb: np.ndarray, encoding: str = "rgb8", frame_id: str = "camera") -> Image:
    arr = rgb[..., ::-1] if encoding == "bgr8" else rgb
    return numpy_to_image(np.ascontiguousarray(arr), encoding, header(frame_id))


_HARNESSES: "weakref.WeakSet[RosHarness]" = weakref.WeakSet()


class RosHarness:
    """One rclpy context with the node's own executor (RespinExecutor, single-threaded)
    spinning on a background thread; the test's client node shares it."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = RespinExecutor(context=self.context)
        self.nodes: list[Node] = []
        self.client = self.add(Node("lgseg_test_client", context=self.context))
        self._closing = False
        # BackgroundSpin keeps what ended a spin: a dead executor looks like a node that
        # stopped answering, and the failing test must say which it was.
        self.spin = BackgroundSpin(self.executor, name="lgseg-test-spin").start()
        _HARNESSES.add(self)

    def health(self) -> str:
        """'' while the executor spins; else why it stopped (for failure messages)."""
        if self.spin.error:
            return f"the test executor died:\n{self.spin.error}"
        if self.executor.callback_errors:  # spun past, but a test must still see it
            return (f"{self.executor.callback_errors} callbacks raised; the last:\n"
                    f"{self.executor.last_callback_error}")
        if not self.spin.alive and not self._closing:
            return "the test executor thread has ended"
        return ""

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def remove(self, node: Node) -> None:
        self.executor.remove_node(node)
        self.nodes.remove(node)
        node.destroy_node()

    def call(self, client, request, timeout: float = 20.0, retry: bool = True):
        """Call a service and return the reply.

        With ``retry`` the request is sent again when no reply came within 5 s: Fast DDS
        drops a reply when the server has not yet matched a brand-new client's reply reader
        (seen here under load), so only idempotent calls may retry.
        """
        assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} not available"
        end = time.monotonic() + timeout
        while True:
            future = client.call_async(request)
            attempt_end = min(end, time.monotonic() + 5.0) if retry else end
            while not future.done() and time.monotonic() < attempt_end:
                time.sleep(0.005)
            if future.done():
                return future.result()
            client.remove_pending_request(future)
            assert not self.health(), self.health()
            assert time.monotonic() < end, f"no reply from {client.srv_name}\n{thread_stacks()}"

    def close(self) -> None:
        # Stop spinning first: destroying entities under a running executor makes it trip
        # over them ("cannot use Destroyable because destruction was requested").
        self._closing = True
        try:
            self.spin.stop()
            self.executor.shutdown(timeout_sec=5.0)
            for node in list(reversed(self.nodes)):
                node.destroy_node()
            self.nodes.clear()
        finally:
            rclpy.try_shutdown(context=self.context)


class Recorder:
    """Subscribes to topics on the client node and keeps every message with its receipt time."""

    def __init__(self, harness: RosHarness) -> None:
        self.h = harness
        self.msgs: dict[str, list] = {}
        self.cond = threading.Condition()
        self.subs = {}

    def listen(self, topic: str, msg_type=Image, qos: QoSProfile = RELIABLE) -> None:
        self.msgs.setdefault(topic, [])

        def cb(msg, t=topic):
            with self.cond:
                self.msgs[t].append((time.monotonic(), msg))
                self.cond.notify_all()

        self.subs[topic] = self.h.client.create_subscription(msg_type, topic, cb, qos)

    def stop(self, topic: str) -> None:
        self.h.client.destroy_subscription(self.subs.pop(topic))

    def get(self, topic: str) -> list:
        with self.cond:
            return [m for _, m in self.msgs.get(topic, [])]

    def wait_for(self, predicate, timeout: float = 15.0, what: str = "condition"):
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                result = predicate()
                if result:
                    return result
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}\n{thread_stacks()}")
                self.cond.wait(min(left, 0.05))

    def find_stamp(self, topic: str, stamp: tuple[int, int]):
        """The message on `topic` whose header stamp is `stamp`, or None (no waiting)."""
        with self.cond:
            for _, m in self.msgs.get(topic, []):
                if stamp_key(m.header) == stamp:
                    return m
        return None

    def wait_stamp(self, topic: str, stamp: tuple[int, int], timeout: float = 15.0):
        """The message on `topic` whose header stamp is `stamp`."""
        return self.wait_for(lambda: self.find_stamp(topic, stamp), timeout, f"{topic} with stamp {stamp}")

    def wait_matched(self, topic: str, publishers: int = 1, timeout: float = 15.0) -> None:
        sub = self.subs[topic]
        end = time.monotonic() + timeout
        while sub.get_publisher_count() < publishers:
            assert time.monotonic() < end, f"no publisher matched {topic}"
            time.sleep(0.01)


def change_state(h, node: str, transition_id: int, timeout: float = 30.0) -> bool:
    """One lifecycle transition of ``node`` (its full name) through its ~/change_state, as a
    lifecycle manager asks it; not resent (a transition is not idempotent)."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    client = h.client.create_client(ChangeState, f"{node}/change_state")
    try:
        return h.call(client, ChangeState.Request(transition=Transition(id=transition_id)),
                      timeout=timeout, retry=False).success
    finally:
        h.client.destroy_client(client)


def wait_until(predicate, timeout: float = 15.0, what: str = "condition", period: float = 0.02):
    end = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        assert time.monotonic() < end, f"timed out waiting for {what}\n{thread_stacks()}"
        time.sleep(period)


def publish_until(pub, msg, taken, *, timeout: float = 3.0, tries: int = 10,
                  what: str = "the node to take the frame", proc: NodeProcess | None = None):
    """Publish ``msg`` until ``taken(msg)`` is true within ``timeout`` s of a send, at most
    ``tries`` sends; returns what ``taken`` returned. ``msg`` may be a function that makes a
    fresh message (a new stamp) for each send. With ``proc``, a node that exited fails at
    once, with its log.

    For frames the node may never see: one sent just as its reader is matched (after
    discovery, or after the node renewed its subscription, wire.RENEW_INPUT_ABOVE_BYTES) is
    lost without a trace. Such a miss is expected, so it is polled here, not caught from
    wait_until or Recorder.wait_for: their timeout message gathers every thread's stack and,
    the first time in a run, attaches gdb to this process, which freezes it meanwhile and
    leaves nothing for a real hang later."""
    for _ in range(tries):
        sent = msg() if callable(msg) else msg
        pub.publish(sent)
        end = time.monotonic() + timeout
        while True:
            got = taken(sent)
            if got:
                return got
            if time.monotonic() >= end:
                break
            time.sleep(0.02)
        if proc is not None:
            assert proc.alive(), f"node exited with {proc.proc.returncode}:\n{proc.text()[-4000:]}"
    log = f"\nnode log:\n{proc.text()[-4000:]}" if proc is not None else ""
    raise AssertionError(f"timed out waiting for {what} after {tries} sends{log}\n{thread_stacks()}")


def thread_stacks() -> str:
    """Every thread's Python stack: when a node stops answering, the failure message shows
    where its threads are (a lock, a publish, a DDS call) instead of only that it timed out."""
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        if ident == threading.get_ident():
            continue
        stack = "".join(traceback.format_stack(frame)[-8:])
        parts.append(f"--- thread {names.get(ident, ident)}\n{stack}")
    dead = [h.health() for h in list(_HARNESSES) if h.health()]
    return "\n".join(dead + ["thread stacks at the timeout:", *parts]) + _native_stacks()


_native_dumped = [False]


def _native_stacks() -> str:
    """Once per run, where gdb exists: the native stacks too. A hang inside the DDS library
    (a lock in a publish or an entity creation) shows only as a C call in the Python stack."""
    gdb, timeout = shutil.which("gdb"), shutil.which("timeout")
    if gdb is None or timeout is None or _native_dumped[0]:
        return ""
    _native_dumped[0] = True
    # gdb stops every thread of this process, this one included, while it reads them: its
    # output goes to a file (a pipe nobody reads would fill and hang both), and `timeout`,
    # a separate process, bounds it.
    with tempfile.TemporaryFile("w+") as out:
        try:
            subprocess.run([timeout, "90", gdb, "-p", str(os.getpid()), "-batch", "-nx",
                            "-ex", "thread apply all bt 14"], stdout=out, stderr=subprocess.DEVNULL)
        except OSError as e:
            return f"\n(native stacks unavailable: {e})"
        out.seek(0)
        keep = [ln for ln in out.read().splitlines() if ln.startswith(("Thread ", "#"))]
    return "\nnative stacks (gdb):\n" + "\n".join(keep)


def topic_names(node: Node) -> set[str]:
    return {name for name, _ in node.get_topic_names_and_types()}


def mask_of(msg: Image) -> np.ndarray:
    dtype = np.uint8 if msg.encoding == "mono8" else (">u2" if msg.is_bigendian else "<u2")
    return np.frombuffer(msg.data, dtype).reshape(msg.height, msg.width)


class NodeProcess:
    """`lgseg node` as its own process (real DDS between it and the test), with its output
    drained into memory all the time (a full pipe would block its logging) and its memory
    readable from /proc."""

    def __init__(self, ros_args: list[str], env: dict | None = None,
                 program: list[str] | None = None) -> None:
        # program: what runs `lgseg node` (default: the CLI module); the rest is appended.
        program = program or ["-m", "lgseg_ros.cli", "node"]
        cmd = [sys.executable, *program, "--ros-args", *ros_args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env)
        self.output = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):
            with self._lock:
                self.output += chunk

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        with self._lock:
            return self.output.decode("utf-8", "replace")

    def text_since(self, offset: int) -> str:
        """Output after byte ``offset`` (from log_bytes()); offsets count bytes, not characters."""
        with self._lock:
            return self.output[offset:].decode("utf-8", "replace")

    def log_bytes(self) -> int:
        with self._lock:
            return len(self.output)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _status_kb(self, key: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
        raise KeyError(key)

    def rss_mb(self) -> float:
        return self._status_kb("VmRSS:") / 1024

    def peak_mb(self) -> float:
        """Peak RSS since start or since the last reset_peak()."""
        return self._status_kb("VmHWM:") / 1024

    def reset_peak(self) -> None:
        # Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            if self.wait(20) is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


# A peer in a process of its own: publishing a huge sample holds the publishing process's
# GIL for the whole send, so a peer inside the test process would also stop the test's own
# camera stream and mask recorder, and the gap measured would be the test's, not the node's.
_BIG_SAMPLE_PEER = r"""
import sys, time
import rclpy
from rclpy.duration import Duration
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
topic, size, ack_wait, kind = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
rclpy.init()
node = rclpy.create_node("big_sample_peer")
pub = node.create_publisher(Image if kind == "image" else CameraInfo, topic,
                            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
end = time.monotonic() + 30
while pub.get_subscription_count() == 0 and time.monotonic() < end:
    time.sleep(0.05)
if kind == "image":
    msg = Image(height=2, width=2, encoding="rgb8", step=6)
    msg.data = bytes(size)
else:  # CameraInfo whose distortion coefficients take the size
    msg = CameraInfo(width=2, height=2, distortion_model="plumb_bob")
    msg.d = [0.0] * (size // 8)
print("publishing", flush=True)
pub.publish(msg)
del msg
print("sent", flush=True)
print("acked" if pub.wait_for_all_acked(Duration(seconds=ack_wait)) else "not acked", flush=True)
"""


def publish_big_sample_from_another_process(topic: str, size: int, ack_wait: float = 10.0,
                                            kind: str = "image") -> str:
    """A 2x2 rgb8 Image whose ``data`` has ``size`` bytes (``kind="camera_info"``: a
    CameraInfo with ``size`` bytes of D coefficients), sent once on a reliable link by a peer
    process of its own (waits for the node's reader, then up to ``ack_wait`` s for its
    acknowledgement); returns what the peer printed."""
    done = subprocess.run([sys.executable, "-c", _BIG_SAMPLE_PEER, topic, str(size), str(ack_wait), kind],
                          env=dict(os.environ), capture_output=True, text=True, timeout=60 + ack_wait)
    assert done.returncode == 0 and "sent" in done.stdout, (done.returncode, done.stdout, done.stderr[-2000:])
    return done.stdout


def node_env() -> dict:
    """This process's environment without the Fast DDS profile variables: a node process
    started with it runs as a user's node would, without the test's profile."""
    from lgseg_ros.ros.dds import PROFILE_VARS

    env = dict(os.environ)
    for var in PROFILE_VARS:
        env.pop(var, None)
    return env


def tiny_torch_args(checkpoint: str, *extra: str) -> list[str]:
    """ROS arguments of a node on the test-tiny checkpoint, torch on the CPU, at NET_HW,
    labels road, car, sky and a ~/status every 0.2 s; ``extra`` adds or overrides."""
    return ["-p", f"checkpoint:={checkpoint}", "-p", "backend:=torch", "-p", "device:=cpu",
            "-p", f"net_height:={NET_HW[0]}", "-p", f"net_width:={NET_HW[1]}",
            "-p", "status_period:=0.2", "-p", "labels:=[road, car, sky]", *extra]


@contextlib.contextmanager
def serving_node(ns: str, camera: str, ros_args: list[str], env: dict | None = None,
                 program: list[str] | None = None, timeout: float = 120.0):
    """`lgseg node` as a process in ``ns`` reading ``camera``, and this process's side:
    yields (harness, node process, recorder of its label_mask and status, reliable publisher
    on ``camera``) once the node has subscribed and its label_mask has matched; stops both
    after. ``timeout``: how long its start may take (loading, exporting)."""
    proc = NodeProcess(["-r", f"__ns:={ns}", "-r", f"image:={camera}", *ros_args], env=env,
                       program=program)
    h = RosHarness()
    try:
        rec = Recorder(h)
        rec.listen(f"{ns}/lgseg_node/label_mask")
        rec.listen(f"{ns}/lgseg_node/status", DiagnosticArray)
        pub = h.client.create_publisher(Image, camera, RELIABLE)
        wait_until(lambda: pub.get_subscription_count() > 0 or not proc.alive(), timeout=timeout,
                   what="the node process to subscribe")
        assert proc.alive(), "node exited:\n" + proc.text()[-4000:]
        rec.wait_matched(f"{ns}/lgseg_node/label_mask", timeout=30)
        yield h, proc, rec, pub
    finally:
        h.close()
        proc.stop()
