"""`lgseg demo`: the node on real frames, with the label set changed mid-stream.

The node runs as its own process, started the way a user starts it, and this program
talks to it only through ROS topics and services: it publishes frames on `image`,
calls `~/set_labels` at scheduled frames, and records `~/overlay`, `~/label_mask` and
`~/status`. It then writes an overlay GIF, a contact sheet PNG and a summary JSON.

Frames are sent lock-step (the next one after the previous mask came back) so every
frame is recorded even on a slow CPU; FPS is therefore the node's sustained throughput
including transport, not a camera rate.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lgseg_ros.labels import CAMVID_CLASSES, LabelSetError, validate_labels
from lgseg_ros.resources import package_path
from lgseg_ros.viz import colorize, overlay

DEFAULT_FRAMES = package_path("demo/frames")
CAMVID_LABELS = list(CAMVID_CLASSES)
DEFAULT_SCHEDULE = [CAMVID_LABELS, ["road", "car", "pedestrian"], ["sky"]]
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
NODE_NAME = "lgseg_node"
# The colour mask and overlay are rebuilt here from ~/label_mask with the node's own
# colour code (lgseg_ros.viz) rather than received, and frames go out as JPEG: with two or
# three ~0.5 MB reliable images per frame on loopback, 1-4 of 32 frames took ~3 s end to end
# (Fast DDS retransmission suspected, not proven); lighter traffic made that rarer, not gone.
OUTPUTS = ("label_mask",)
OVERLAY_ALPHA = 0.5  # the node's overlay_alpha default


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lgseg demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(DEFAULT_FRAMES or "demo/frames"),
                   help="folder of images or a video file (default: the shipped CamVid frames)")
    p.add_argument("--label-sets", default=None,
                   help="label sets applied at evenly spaced frames, ';' between sets and ',' "
                        "between labels, e.g. 'road,car,person;sky' (default: the 11 CamVid "
                        "classes, then road,car,pedestrian, then sky)")
    p.add_argument("--labels", default=None,
                   help="one label set for the whole run, ',' between labels (overrides --label-sets)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all)")
    p.add_argument("--checkpoint", default="", help="model checkpoint (default: the shipped model)")
    p.add_argument("--config", default="", help="model config name when no checkpoint is used")
    p.add_argument("--backend", default="auto")
    p.add_argument("--net-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument("--out", default="outputs/demo", help="output folder")
    p.add_argument("--transport", choices=("compressed", "raw"), default="compressed",
                   help="send frames as JPEG sensor_msgs/CompressedImage (default) or raw Image")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="seconds to wait for the node to come up")
    p.add_argument("--frame-timeout", type=float, default=30.0,
                   help="seconds to wait for one frame's outputs")
    return p.parse_args(argv)


def label_schedule(args: argparse.Namespace) -> list[list[str]]:
    if args.labels:
        sets = [args.labels.split(",")]
    elif args.label_sets:
        sets = [s.split(",") for s in args.label_sets.split(";") if s.strip()]
    else:
        sets = DEFAULT_SCHEDULE
    try:
        return [list(validate_labels(s)) for s in sets]
    except LabelSetError as exc:
        raise SystemExit(f"lgseg demo: bad label set: {exc}") from None


def read_frames(source: str, max_frames: int) -> list[np.ndarray]:
    """RGB uint8 frames from a folder of images or a video file."""
    path = Path(source)
    frames: list[np.ndarray] = []
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        for f in files:
            bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if bgr is None:
                print(f"lgseg demo: skipping unreadable image {f}", file=sys.stderr)
                continue
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            if max_frames and len(frames) >= max_frames:
                break
    elif path.is_file():
        cap = cv2.VideoCapture(str(path))
        while cap.isOpened():
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            if max_frames and len(frames) >= max_frames:
                break
        cap.release()
    else:
        raise SystemExit(f"lgseg demo: source {source!r} is neither a folder nor a file")
    if not frames:
        raise SystemExit(f"lgseg demo: no readable frames in {source!r}")
    return frames


def change_points(num_frames: int, num_sets: int) -> list[int]:
    """Frame indices at which each label set takes over (the first at frame 0)."""
    return [round(i * num_frames / num_sets) for i in range(num_sets)]


@dataclass
class FrameRecord:
    index: int
    labels: list[str]
    overlay: np.ndarray
    color_mask: np.ndarray
    label_mask: np.ndarray
    sent: float
    received: float
    status: dict = field(default_factory=dict)


def start_node(args: argparse.Namespace, first_labels: list[str], log_path: Path) -> subprocess.Popen:
    params = [f"labels:={json.dumps(first_labels)}", f"backend:={args.backend}"]
    if args.checkpoint:
        params.append(f"checkpoint:={args.checkpoint}")
    if args.config:
        params.append(f"model_config:={args.config}")
    if args.net_size:
        params += [f"net_height:={args.net_size[0]}", f"net_width:={args.net_size[1]}"]
    # Demo frames are sent lock-step and must all arrive: reliable input QoS.
    params += ["qos_reliability:=reliable", "status_period:=0.5",
               f"use_compressed:={'true' if args.transport == 'compressed' else 'false'}"]
    cmd = [sys.executable, "-m", "lgseg_ros.cli", "node", "--ros-args"]
    for p in params:
        cmd += ["-p", p]
    log = open(log_path, "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_node(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_stream(args, frames, schedule, out: Path) -> tuple[list[FrameRecord], list[dict], float]:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from lgseg_ros.ros.executor import BackgroundSpin
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CompressedImage, Image

    from lgseg_ros.ros.image_conversion import image_to_numpy, numpy_to_image
    from lgseg_ros.srv import SetLabels

    rclpy.init()
    client = rclpy.create_node("lgseg_demo_client")
    # Single-threaded: rclpy's MultiThreadedExecutor delayed mask callbacks here by up to
    # seconds, which the summary would have reported as the node's latency.
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    spin = BackgroundSpin(executor).start()

    reliable = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE,
                          durability=QoSDurabilityPolicy.VOLATILE)
    compressed = args.transport == "compressed"
    pub = (client.create_publisher(CompressedImage, "image/compressed", reliable) if compressed
           else client.create_publisher(Image, "image", reliable))
    lock = threading.Condition()
    got: dict[tuple[int, int], dict] = {}
    statuses: list[dict] = []

    def keep(kind):
        def cb(msg):
            key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            with lock:
                got.setdefault(key, {})[kind] = (image_to_numpy(msg), time.perf_counter())
                lock.notify_all()
        return cb

    client.create_subscription(Image, f"/{NODE_NAME}/label_mask", keep("label_mask"), reliable)

    def on_status(msg):
        for st in msg.status[:1]:
            statuses.append({kv.key: _number(kv.value) for kv in st.values})

    client.create_subscription(DiagnosticArray, f"/{NODE_NAME}/status", on_status, reliable)
    set_labels = client.create_client(SetLabels, f"/{NODE_NAME}/set_labels")

    def wait_until(pred, timeout):
        # 1 ms polling: the service round trip it times is itself a few milliseconds.
        end = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > end:
                return False
            time.sleep(0.001)
        return True

    records: list[FrameRecord] = []
    label_changes: list[dict] = []
    try:
        if not set_labels.wait_for_service(timeout_sec=args.timeout):
            raise SystemExit("lgseg demo: the node did not come up (no set_labels service); "
                             f"see {out / 'node.log'}")
        if not wait_until(lambda: pub.get_subscription_count() > 0, args.timeout):
            raise SystemExit("lgseg demo: the node never subscribed to `image`")
        starts = change_points(len(frames), len(schedule))
        current = schedule[0]
        pending_change: dict | None = None
        t_stream = time.perf_counter()
        for i, rgb in enumerate(frames):
            if i in starts[1:]:
                current = schedule[starts.index(i)]
                t0 = time.perf_counter()
                future = set_labels.call_async(SetLabels.Request(labels=current))
                if not wait_until(future.done, args.frame_timeout):
                    raise SystemExit("lgseg demo: set_labels did not answer")
                resp = future.result()
                if not resp.success:
                    raise SystemExit(f"lgseg demo: set_labels refused {current}: {resp.message}")
                pending_change = {"frame": i, "labels": current, "call_start": t0,
                                  "service_ms": (time.perf_counter() - t0) * 1e3,
                                  "mapping": {c.class_id: c.class_name for c in resp.class_map}}
            if compressed:
                msg = CompressedImage(format="jpeg")
                msg.data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                        [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
            else:
                msg = numpy_to_image(rgb, "rgb8")
            msg.header.frame_id = "camera"
            msg.header.stamp.sec, msg.header.stamp.nanosec = 1_000_000 + i, 0
            key = (msg.header.stamp.sec, 0)
            sent = time.perf_counter()
            pub.publish(msg)
            with lock:
                ok = lock.wait_for(lambda: len(got.get(key, {})) == len(OUTPUTS), timeout=args.frame_timeout)
                outputs = got.pop(key, {})
            if not ok:
                raise SystemExit(f"lgseg demo: no outputs for frame {i} within {args.frame_timeout} s")
            received = max(t for _, t in outputs.values())
            label_mask = outputs["label_mask"][0]
            color = colorize(label_mask, current)
            records.append(FrameRecord(i, current, overlay(rgb, color, OVERLAY_ALPHA, label_mask, len(current)),
                                       color, label_mask, sent, received,
                                       statuses[-1] if statuses else {}))
            if pending_change is not None:
                pending_change["first_mask_ms"] = (received - pending_change.pop("call_start")) * 1e3
                label_changes.append(pending_change)
                pending_change = None
        wall = time.perf_counter() - t_stream
        # One more ~/status period so the node's counters include the last frame.
        n_status = len(statuses)
        wait_until(lambda: len(statuses) > n_status, 5.0)
        if statuses and records:
            records[-1].status = statuses[-1]
    finally:
        spin.stop()
        executor.shutdown()
        client.destroy_node()
        rclpy.shutdown()
    return records, label_changes, wall


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _set_name(labels: list[str]) -> str:
    if labels == CAMVID_LABELS:
        return "the 11 CamVid classes"
    text = ", ".join(labels)
    return text if len(text) <= 48 else text[:45] + "..."


def contact_sheet(records: list[FrameRecord], frames: list[np.ndarray], path: Path, cols: int = 4) -> None:
    """Frames spread over the run: the overlay above the colour mask (black: none of the
    labels, which the overlay cannot show where a label's colour matches the scene, like
    sky), titled with the label set in force."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lgseg_ros.viz import color_for_label

    picks = np.linspace(0, len(records) - 1, num=min(len(records), 2 * cols)).round().astype(int)
    rows = int(np.ceil(len(picks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 6.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, idx in zip(axes.flat, picks):
        rec = records[idx]
        ax.imshow(np.concatenate([rec.overlay, rec.color_mask], axis=0))
        ax.set_title(f"frame {rec.index}: {_set_name(rec.labels)}", fontsize=8)
    used = []
    for rec in records:
        used += [n for n in rec.labels if n not in used]
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.array(color_for_label(n)) / 255) for n in used]
    fig.legend(handles, used, loc="lower center", ncol=min(len(used), 6), fontsize=8)
    fig.suptitle("lgseg_ros demo: the node's ~/label_mask per frame as an overlay (top) and a colour mask (bottom); "
                 "label set changed mid-stream via ~/set_labels")
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_gif(records: list[FrameRecord], path: Path, width: int = 320) -> None:
    import imageio.v2 as imageio

    small = []
    for rec in records:
        h, w = rec.overlay.shape[:2]
        img = cv2.resize(rec.overlay, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
        cv2.putText(img, ",".join(rec.labels)[:48], (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
        small.append(img)
    imageio.mimsave(path, small, duration=0.25, loop=0)


def summarize(records, label_changes, wall, schedule) -> dict:
    # The node's own per-stage percentiles, from its last ~/status before the run ended.
    last = records[-1].status if records else {}
    stages = {k[: -len("_ms_p50")]: v for k, v in last.items()
              if k.endswith("_ms_p50") and isinstance(v, float)}
    e2e = [1e3 * (r.received - r.sent) for r in records]
    return {
        "frames": len(records),
        "wall_s": round(wall, 3),
        "fps": round(len(records) / wall, 2) if wall > 0 else None,
        "end_to_end_ms": {"p50": round(float(np.percentile(e2e, 50)), 2),
                          "p95": round(float(np.percentile(e2e, 95)), 2),
                          "per_frame": [round(v, 1) for v in e2e]},
        "node_stage_ms_p50": {k: round(v, 2) for k, v in stages.items()},
        "label_changes": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in c.items()}
                          for c in label_changes],
        "label_sets": schedule,
        "node_counters": {k: v for k, v in last.items() if k.startswith("frames_")},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    schedule = label_schedule(args)
    frames = read_frames(args.source, args.max_frames)
    if len(frames) < len(schedule):
        schedule = schedule[: len(frames)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"lgseg demo: {len(frames)} frames from {args.source}; label sets: {schedule}")
    # Both processes publish frame-sized images (this one the frames, the node its overlay):
    # without the larger shared-memory segment raw frames above 512 KB get lost between them.
    from lgseg_ros.ros.dds import apply_large_frame_profile
    apply_large_frame_profile()
    print(f"lgseg demo: starting the node (log: {out / 'node.log'})")
    node = start_node(args, schedule[0], out / "node.log")
    try:
        records, changes, wall = run_stream(args, frames, schedule, out)
    finally:
        stop_node(node)
    summary = summarize(records, changes, wall, schedule)
    contact_sheet(records, frames, out / "contact_sheet.png")
    write_gif(records, out / "overlay.gif")
    for rec in records[:: max(1, len(records) // 8)]:
        cv2.imwrite(str(out / f"label_mask_{rec.index:04d}.png"), rec.label_mask)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"lgseg demo: wrote {out / 'contact_sheet.png'}, {out / 'overlay.gif'}, "
          f"{out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
