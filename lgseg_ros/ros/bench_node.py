"""`lgseg bench-node`: the node measured end to end over real DDS, printed as JSON.

Starts `lgseg_node` and the bare relay as two processes (as on a robot), publishes camera
frames stamped with the publish time, and measures publish -> receipt of
``label_mask`` and of the relay's copy of the same frames, in the same run. The node's
per-stage split comes from its own ``~/status``. Then it changes labels while streaming
and measures service call -> the first mask under the new set (found through label_info,
whose stamp is that frame's). Optionally a soak (--soak-seconds) and lifecycle rounds with
the node's RSS after each (--lifecycle-cycles, issue 19). No thresholds: numbers only.

Isolation: unless --no-isolate, the bench and the processes it starts use
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a random ROS_DOMAIN_ID, so the benchmark
neither disturbs nor is disturbed by a robot's other traffic.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from lgseg_ros.labels import CAMVID_CLASSES
from lgseg_ros.procinfo import rss_mb

LABEL_SETS = (["road", "car", "sky", "building", "tree", "pedestrian"],
              list(CAMVID_CLASSES))


def _pct(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values) * 1e3
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "mean": round(float(a.mean()), 3), "n": int(a.size)}


def _frames(height: int, width: int, n: int = 16) -> list[np.ndarray]:
    import cv2

    root = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "camvid" / "val"
    files = sorted(root.glob("*.png"))[:n] if root.is_dir() else []
    frames = [cv2.resize(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), (width, height))
              for f in files]
    rng = np.random.default_rng(0)
    while len(frames) < n:
        frames.append(cv2.resize(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8), (width, height),
                                 interpolation=cv2.INTER_CUBIC))
    return frames


# Words the soak draws label sets from: CamVid's classes, things a robot is asked about,
# and a few that are in no scene.
SOAK_VOCABULARY = (*CAMVID_CLASSES, "person", "bicycle", "truck", "bus", "dog", "cat", "door",
                   "chair", "table", "stairs", "grass", "water", "wall", "floor", "ceiling",
                   "window", "traffic light", "traffic cone", "pallet", "forklift", "box",
                   "shelf", "bench", "trash can", "fire hydrant", "parking meter", "zebra",
                   "umbrella", "kite")


class _BackgroundStream:
    """Publishes frames every `period` seconds on a thread until stop(); counts them."""

    def __init__(self, publish, period: float, first: int = 0) -> None:
        self._publish, self._period, self._next = publish, period, first
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "_BackgroundStream":
        self._thread.start()
        return self

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            self._publish(self._next + self.sent)
            self.sent += 1
            due += self._period
            time.sleep(max(0.0, due - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _soak(args, node_pid: int, call, publish, period: float, lock, arrivals) -> dict:
    """Stream at the bench rate and change labels every soak_change_period seconds for
    soak_seconds: every call must be answered, masks must keep coming, memory must level."""
    rng = random.Random(0)
    with lock:
        n_masks0 = len(arrivals["node"])
    rss0 = rss_mb(node_pid)
    replies, missed, rejected = [], 0, 0
    sizes = []
    t_start = time.time()
    streamer = _BackgroundStream(publish, period).start()
    rss_samples = []   # (seconds into the soak, MB): growth that levels off is warm-up
    next_sample = 0.0
    try:
        while time.time() - t_start < args.soak_seconds:
            if time.time() - t_start >= next_sample:
                rss_samples.append([round(time.time() - t_start), rss_mb(node_pid)])
                next_sample += max(args.soak_seconds / 10, 1.0)
            labels = rng.sample(SOAK_VOCABULARY, rng.randint(1, 24))
            sizes.append(len(labels))
            t0 = time.time()
            reply = call(labels, 10.0)
            if reply is None:
                missed += 1
            else:
                replies.append(time.time() - t0)
                rejected += not reply.success
            time.sleep(max(0.0, args.soak_change_period - (time.time() - t0)))
    finally:
        streamer.stop()
    t_end = time.time()
    time.sleep(1.0)
    rss1 = rss_mb(node_pid)
    with lock:
        mask_times = sorted(t for t in arrivals["node"].values() if t >= t_start)
        n_masks = len(arrivals["node"]) - n_masks0
    gaps = np.diff([t_start, *mask_times, t_end]) if mask_times else np.array([t_end - t_start])
    return {"seconds": round(t_end - t_start, 1), "label_changes": len(sizes),
            "labels_per_set": {"min": min(sizes), "max": max(sizes)} if sizes else None,
            "replies": len(replies), "missed_replies": missed, "rejected": rejected,
            "service_ms": _pct(replies), "masks_received": n_masks,
            "frames_sent": streamer.sent,
            "longest_gap_between_masks_ms": round(float(gaps.max()) * 1e3, 1),
            "node_rss_mb": {"start": rss0, "end": rss1,
                            "growth": round(rss1 - rss0, 1) if rss0 and rss1 else None,
                            "samples": rss_samples}}


def _lifecycle_cycles(args, node_pid: int, change_state, call, publish, period: float) -> dict:
    """Stream at the bench rate while the node goes through ``lifecycle_cycles`` rounds of
    deactivate, cleanup, configure, activate, each followed by a label change to new words
    (``lifecycle_labels`` of them): a lifecycle manager restarting the node and a robot
    asking for new classes. RSS before the first and after every round; the comparison
    that counts is against a node that has served a set of the same size since its start
    (``rss_mb.start``, taken after one such change), because a larger set alone costs
    memory (ONNX Runtime's arena grows with K). Issue 19: 20 rounds left the default node
    at 654-701 MB."""
    from lifecycle_msgs.msg import Transition

    def words(c: int) -> list[str]:   # words no cache has seen: a full encoding each time
        return [f"zq{c}w{i}" for i in range(args.lifecycle_labels)]

    streamer = _BackgroundStream(publish, period).start()
    failures = []
    try:
        reply = call(words(-1), 30.0)
        if reply is None or not reply.success:
            raise RuntimeError(f"set_labels failed: {reply.message if reply else 'no reply'}")
        time.sleep(2.0)
        rss0 = rss_mb(node_pid)
        samples, seconds = [], []
        for c in range(args.lifecycle_cycles):
            t0 = time.time()
            for tid in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP,
                        Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
                if not change_state(tid):
                    raise RuntimeError(f"cycle {c}: transition {tid} failed")
            reply = call(words(c), 30.0)
            if reply is None or not reply.success:
                failures.append(c)
            seconds.append(time.time() - t0)
            time.sleep(0.5)
            samples.append(rss_mb(node_pid))
    finally:
        streamer.stop()
    time.sleep(2.0)
    rss1 = rss_mb(node_pid)
    return {"cycles": args.lifecycle_cycles, "labels_per_set": args.lifecycle_labels,
            "failed_label_changes": failures, "cycle_ms": _pct(seconds),
            "rss_mb": {"start": rss0, "end": rss1,
                       "growth": round(rss1 - rss0, 1) if rss0 and rss1 else None,
                       "max": max(samples, default=None), "after_each_cycle": samples}}


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lgseg bench-node", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="", help="model_config (e.g. lite-minilm, test-tiny)")
    p.add_argument("--checkpoint", default="", help="checkpoint (default: the node's default)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--net-height", type=int, default=384)
    p.add_argument("--net-width", type=int, default=480)
    p.add_argument("--height", type=int, default=360, help="frame height")
    p.add_argument("--width", type=int, default=480, help="frame width")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second published")
    p.add_argument("--frames", type=int, default=100, help="frames measured (after warm-up)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--label-changes", type=int, default=6)
    p.add_argument("--all-outputs", action="store_true",
                   help="also subscribe color_mask, overlay and confidence (the node skips "
                        "outputs nobody subscribes to)")
    p.add_argument("--soak-seconds", type=float, default=0.0,
                   help="after the measurements, stream and change labels this long (random "
                        "sets from a 40-word vocabulary) and report missed replies, mask-rate "
                        "gaps and the node's memory growth")
    p.add_argument("--soak-change-period", type=float, default=0.5,
                   help="seconds between label changes during the soak")
    p.add_argument("--lifecycle-cycles", type=int, default=0,
                   help="then this many deactivate/cleanup/configure/activate rounds, each "
                        "followed by a label change, while streaming; the node's RSS after each")
    p.add_argument("--lifecycle-labels", type=int, default=32,
                   help="labels per set in the lifecycle rounds (new words each round)")
    p.add_argument("--startup-timeout", type=float, default=600.0,
                   help="seconds to wait for the node (a TensorRT engine build can take minutes)")
    p.add_argument("--no-isolate", action="store_true",
                   help="keep this environment's ROS_DOMAIN_ID / discovery range")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(list(sys.argv[1:] if argv is None else argv))
    if not args.no_isolate:
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
    # Before the children start and before rclpy.init here: frames above 512 KB are lost
    # between processes without the larger Fast DDS shared-memory segment.
    from lgseg_ros.ros.dds import apply_dds_config
    apply_dds_config()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from lgseg_ros.ros.executor import BackgroundSpin
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from lgseg_ros.ros.image_conversion import numpy_to_image
    from lgseg_ros.ros.node import LabelInfo
    from lgseg_ros.srv import SetLabels

    ns = "/lgseg_bench"
    node_out = f"{ns}/lgseg_node"
    params = {"backend": args.backend, "device": args.device, "precision": args.precision,
              "net_height": args.net_height, "net_width": args.net_width,
              "labels": "[" + ", ".join(LABEL_SETS[1]) + "]", "status_period": 0.5}
    # As YAML strings: rcl reads `-p` values as YAML ("model #2.safetensors" lost its tail)
    if args.config:
        params["model_config"] = json.dumps(args.config, ensure_ascii=False)
    if args.checkpoint:
        params["checkpoint"] = json.dumps(args.checkpoint, ensure_ascii=False)
    ros_params = [x for k, v in params.items() for x in ("-p", f"{k}:={v}")]
    rclpy.init()
    bench = Node("lgseg_bench_client", namespace=ns)
    # Single-threaded: rclpy's MultiThreadedExecutor adds callback delays of its own
    # (lgseg_ros/ros/executor.py), which would land in the measured split.
    executor = SingleThreadedExecutor()
    executor.add_node(bench)
    spin = BackgroundSpin(executor).start()
    lock = threading.Condition()
    arrivals: dict[str, dict[tuple[int, int], float]] = {"node": {}, "relay": {}}
    infos: list = []
    status: list = []

    def key(h) -> tuple[int, int]:
        return (h.stamp.sec, h.stamp.nanosec)

    def on(name):
        def cb(msg):
            t = time.time()
            with lock:
                arrivals[name][key(msg.header)] = t
                lock.notify_all()
        return cb

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    bench.create_subscription(Image, f"{node_out}/label_mask", on("node"), reliable)
    bench.create_subscription(Image, f"{ns}/lgseg_relay/image", on("relay"), reliable)
    if args.all_outputs:
        for extra in ("color_mask", "overlay", "confidence"):
            bench.create_subscription(Image, f"{node_out}/{extra}", lambda m: None, reliable)

    def on_info(msg):
        with lock:
            infos.append(msg)
            lock.notify_all()
    bench.create_subscription(LabelInfo, f"{node_out}/label_info", on_info, latched)
    bench.create_subscription(DiagnosticArray, f"{node_out}/status", status.append, reliable)
    pub = bench.create_publisher(Image, "image", reliable)
    frames = _frames(args.height, args.width)
    # Spawned only now, with this client's rclpy, subscriptions and frames ready: the start-up
    # measurement (node process spawned -> first mask) then times the node, not this client.
    t_spawn = time.time()
    procs = {
        "node": subprocess.Popen([sys.executable, "-m", "lgseg_ros.cli", "node", "--ros-args",
                                  "-r", f"__ns:={ns}", *ros_params],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
        "relay": subprocess.Popen([sys.executable, "-m", "lgseg_ros.ros.relay", "--ros-args",
                                   "-r", f"__ns:={ns}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
    }
    # Drain the children's output all the time: a full pipe would block their logging, and
    # with it the node's worker, in the middle of the measurement.
    logs = {name: collections.deque(maxlen=200) for name in procs}
    for name, p in procs.items():
        threading.Thread(target=lambda p=p, q=logs[name]: [q.append(line.rstrip()) for line in p.stdout],
                         daemon=True).start()
    result: dict = {"ok": False}

    def publish(i: int):
        msg = numpy_to_image(frames[i % len(frames)], "rgb8")
        msg.header.frame_id = "bench_camera"
        ns_now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns_now, 1_000_000_000)
        pub.publish(msg)
        return key(msg.header), ns_now / 1e9

    try:
        end = time.monotonic() + args.startup_timeout
        # Frames flow from the start (a camera does not wait for the node), so the first
        # mask marks when the node first answered, whatever the relay is doing.
        next_frame, i = time.monotonic(), 0
        while pub.get_subscription_count() < 2:
            if time.monotonic() >= next_frame:
                publish(i)
                i += 1
                next_frame += 1.0 / args.rate
            for name, p in procs.items():
                if p.poll() is not None:
                    time.sleep(0.5)  # let the drain thread collect the last lines
                    raise RuntimeError(f"{name} exited with {p.returncode}:\n" + "\n".join(list(logs[name])[-40:]))
            if time.monotonic() > end:
                raise RuntimeError("node or relay did not subscribe in time")
            time.sleep(0.02)
        t_subscribed = time.time()
        # The node only learns about our subscriptions through discovery: publish until
        # both outputs flow, then measure.
        while True:
            k, _ = publish(i)
            i += 1
            time.sleep(1.0 / args.rate)
            with lock:
                if arrivals["node"] and arrivals["relay"] and i >= args.warmup:
                    break
            if time.monotonic() > end:
                raise RuntimeError("no output from the node")
        with lock:
            first_mask = min(arrivals["node"].values())
        # Frames go out at --rate from the spawn on, so the first mask includes up to one
        # frame period of waiting for a frame.
        result["startup"] = {"node_subscribed_s": round(t_subscribed - t_spawn, 3),
                             "first_mask_s": round(first_mask - t_spawn, 3)}
        sent: dict[tuple[int, int], float] = {}
        period = 1.0 / args.rate
        next_t = time.monotonic()
        for _ in range(args.frames):
            k, t = publish(i)
            sent[k] = t
            i += 1
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
        time.sleep(1.0)
        with lock:
            lat = {name: [arrivals[name][k] - t for k, t in sent.items() if k in arrivals[name]]
                   for name in arrivals}
        stages = {}
        resolved_backend = None
        if status and status[-1].status:
            values = {kv.key: kv.value for kv in status[-1].status[0].values}
            stages = {k[:-7]: float(v) for k, v in values.items() if k.endswith("_ms_p50")}
            resolved_backend = values.get("backend")
            counters = {k: int(values[k]) for k in ("frames_in", "frames_processed", "frames_dropped",
                                                    "frames_rejected") if k in values}
        else:
            counters = {}
        node_p, relay_p = _pct(lat["node"]), _pct(lat["relay"])
        # Paired per frame: the same frame through the node and through the relay.
        with lock:
            paired = [arrivals["node"][k] - arrivals["relay"][k] for k in sent
                      if k in arrivals["node"] and k in arrivals["relay"]]
        inference = sum(stages.get(s, 0.0) for s in ("decode", "preprocess", "model", "postprocess"))
        result.update({
            "frame": [args.height, args.width], "net": [args.net_height, args.net_width],
            "model": args.checkpoint or (f"config {args.config} (untrained)" if args.config
                                         else "default checkpoint"),
            "backend": resolved_backend or args.backend, "device": args.device,
            "rate_hz": args.rate, "frames_sent": len(sent),
            "node": {"received": len(lat["node"]), "latency_ms": node_p, "stages_ms_p50": stages,
                     "counters": counters},
            "relay": {"received": len(lat["relay"]), "latency_ms": relay_p},
            "node_minus_relay_ms": _pct(paired),
            # What the node adds beyond one DDS hop and the model work itself (decode,
            # preprocess, model, postprocess): queueing, publishing, executor, Python.
            "node_overhead_ms_p50": (round(float(np.median(paired)) * 1e3 - inference, 3)
                                     if paired and stages else None),
        })

        # Label changes while streaming.
        client = bench.create_client(SetLabels, f"{node_out}/set_labels")
        if not client.wait_for_service(timeout_sec=10):
            raise RuntimeError("set_labels service not available")

        def call(labels, timeout: float):
            future = client.call_async(SetLabels.Request(labels=labels))
            end = time.monotonic() + timeout
            while not future.done() and time.monotonic() < end:
                time.sleep(0.0005)
            if not future.done():
                client.remove_pending_request(future)
                return None
            return future.result()
        # Not measured: re-send the set in force until a reply comes. The first reply to a
        # brand-new client can be lost while discovery is still matching its reply reader.
        for _ in range(10):
            if call(LABEL_SETS[1], 3.0) is not None:
                break
        else:
            raise RuntimeError("set_labels never replied")
        service_s, first_mask_s = [], []
        streamer = _BackgroundStream(publish, period, first=i).start()
        try:
            for c in range(args.label_changes):
                labels = LABEL_SETS[c % 2]
                with lock:
                    n_infos = len(infos)
                t0 = time.time()
                reply = call(labels, 30.0)
                service_s.append(time.time() - t0)
                if reply is None or not reply.success:
                    raise RuntimeError(f"set_labels failed: {reply.message if reply else 'no reply'}")

                def first_frame_info():
                    for m in infos[n_infos:]:
                        if m.header.frame_id and [x.class_name for x in m.class_map] == labels:
                            return key(m.header)
                    return None
                # Every mask stamped at or after that frame's stamp used the new set (until
                # the next change). The first such mask received counts: the node's outputs
                # keep only the newest mask, so a slow subscriber may miss that very frame's.
                with lock:
                    stamp = None
                    deadline = time.monotonic() + 30
                    while True:
                        stamp = stamp or first_frame_info()
                        after = [t for k, t in arrivals["node"].items() if stamp and k >= stamp]
                        if after:
                            break
                        if time.monotonic() > deadline:
                            got = [(key(m.header), m.header.frame_id, len(m.class_map)) for m in infos[n_infos:]]
                            raise RuntimeError(f"no mask under the new label set {labels}: label_info "
                                               f"since the call: {got}; first-frame stamp {stamp}")
                        lock.wait(0.05)
                    first_mask_s.append(min(after) - t0)
                time.sleep(0.3)
        finally:
            streamer.stop()
        # first_mask includes waiting for the next camera frame (up to one frame period):
        # a change applies to the first frame that starts after the swap.
        result["label_change"] = {"changes": args.label_changes, "frame_period_ms": round(1e3 * period, 3),
                                  "service_ms": _pct(service_s), "first_mask_ms": _pct(first_mask_s)}
        if args.soak_seconds > 0:
            result["soak"] = _soak(args, procs["node"].pid, call, publish, period, lock, arrivals)
        if args.lifecycle_cycles > 0:
            from lifecycle_msgs.msg import Transition
            from lifecycle_msgs.srv import ChangeState

            lifecycle = bench.create_client(ChangeState, f"{node_out}/change_state")
            if not lifecycle.wait_for_service(timeout_sec=10):
                raise RuntimeError("change_state service not available")

            def change_state(transition_id: int) -> bool:
                future = lifecycle.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
                end = time.monotonic() + 120
                while not future.done() and time.monotonic() < end:
                    time.sleep(0.002)
                return bool(future.done() and future.result().success)
            result["lifecycle"] = _lifecycle_cycles(args, procs["node"].pid, change_state, call,
                                                    publish, period)
        result["ok"] = True
    except Exception as e:  # reported in the JSON: a benchmark that fails says why
        result["error"] = str(e)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for name, p in procs.items():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if "error" in result:
            result["node_log_tail"] = list(logs["node"])[-30:]
        spin.stop()
        executor.shutdown(timeout_sec=2)
        bench.destroy_node()
        rclpy.try_shutdown()
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
