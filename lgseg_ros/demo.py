"""`lgseg demo`: the node on real frames, with the label set changed mid-stream.

The node runs as its own process, started the way a user starts it, and this program
talks to it only through ROS topics and services: it publishes frames on `image`,
calls `~/set_labels` at scheduled frames, and records `~/label_mask` and `~/status`
(overlay and colour mask are rebuilt from the mask with the node's colours). It prints a
short summary and writes a contact sheet PNG, an overlay GIF and summary.json (all numbers).

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
# The indoor sequence: TUM RGB-D freiburg3_cabinet frames, held out of training whole, through a
# second node on the default model, which runs these room words on the rooms model
# (runtime/routing.py; --indoor-checkpoint names one model instead).
DEFAULT_INDOOR_FRAMES = package_path("demo/frames_indoor")
ROOMS_CHECKPOINT = package_path("models/lgseg_lite_minilm_rooms.safetensors")
DEFAULT_INDOOR_SCHEDULE = [["floor", "wall", "door", "chair", "table", "person", "cabinet"],
                           ["cabinet"], ["floor"]]
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
NODE_NAME = "lgseg_node"
# The colour mask and overlay are rebuilt here from ~/label_mask with the node's own
# colour code (lgseg_ros.viz) rather than received, and frames go out as JPEG: with two or
# three ~0.5 MB reliable images per frame on loopback, 1-4 of 32 frames took ~3 s end to end
# (Fast DDS retransmission suspected, not proven); lighter traffic made that rarer, not gone.
OUTPUTS = ("label_mask",)
OVERLAY_ALPHA = 0.5  # the node's overlay_alpha default
GIF_FONT, GIF_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.42


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
    p.add_argument("--indoor-source", default=str(DEFAULT_INDOOR_FRAMES or "demo/frames_indoor"),
                   help="a second sequence streamed to the same node after the first (default: "
                        "the shipped indoor frames); '' for none")
    p.add_argument("--indoor-checkpoint", default="",
                   help="checkpoint for the indoor sequence, run by a second node (default: the "
                        "street sequence's model; with no --checkpoint, the shipped pair, which "
                        f"runs room words on {ROOMS_CHECKPOINT.name if ROOMS_CHECKPOINT else 'the rooms model'})")
    p.add_argument("--indoor-label-sets", default=None,
                   help="label sets of the indoor sequence, as --label-sets (default: floor, "
                        "wall, door, chair, table, person, cabinet; then cabinet; then floor)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all)")
    p.add_argument("--checkpoint", default="", help="model checkpoint (default: the shipped model)")
    p.add_argument("--config", default="", help="model config name when no checkpoint is used")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime", "tensorrt"),
                   help="the node's inference backend (default auto: TensorRT, else torch on CUDA, "
                        "else ONNX Runtime on the CPU)")
    p.add_argument("--net-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="network input size, multiples of 32 (default: the node's, 384 480)")
    p.add_argument("--out", default="outputs/demo", help="output folder")
    p.add_argument("--transport", choices=("compressed", "raw"), default="compressed",
                   help="send frames as JPEG sensor_msgs/CompressedImage (default) or raw Image")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="seconds to wait for the node to come up")
    p.add_argument("--frame-timeout", type=float, default=30.0,
                   help="seconds to wait for one frame's outputs")
    return p.parse_args(argv)


def label_schedule(args: argparse.Namespace, indoor: bool = False) -> list[list[str]]:
    if indoor:
        sets = ([s.split(",") for s in args.indoor_label_sets.split(";") if s.strip()]
                if args.indoor_label_sets else DEFAULT_INDOOR_SCHEDULE)
    elif args.labels:
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
            try:
                bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
            except cv2.error as exc:   # OpenCV 5 raises where 4 returned None (the 8K cap)
                bgr, why = None, f": {str(exc).strip().splitlines()[-1][:200]}"
            else:
                why = ""
            if bgr is None:
                print(f"lgseg demo: skipping unreadable image {f}{why}", file=sys.stderr)
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


def start_node(args: argparse.Namespace, first_labels: list[str], log_path: Path,
               checkpoint: str | None = None) -> subprocess.Popen:
    params = [f"labels:={json.dumps(first_labels)}", f"backend:={args.backend}"]
    checkpoint = args.checkpoint if checkpoint is None else checkpoint
    # Paths as YAML strings (json.dumps): rcl reads `-p` values as YAML, and a path with
    # " #" in it lost its tail as a comment (audit round 19).
    if checkpoint:
        params.append(f"checkpoint:={json.dumps(checkpoint, ensure_ascii=False)}")
    if args.config:
        params.append(f"model_config:={json.dumps(args.config, ensure_ascii=False)}")
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


def run_stream(args, frames, schedule, out: Path, stamp_base: int = 1_000_000,
               change_at_start: bool = False) -> tuple[list[FrameRecord], list[dict], float]:
    """Streams ``frames`` lock-step, changing labels at evenly spaced frames (and at the
    first frame too with ``change_at_start``: a second sequence to a node already
    running); ``stamp_base`` keeps the stamps of two sequences apart."""
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
            if i in starts[1:] or (change_at_start and i == 0):
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
            msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_base + i, 0
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
    return ", ".join(labels)


def _wrap(text: str, width: int) -> list[str]:
    """Greedy word wrap at ``width`` characters (labels are never split)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def contact_sheet(records: list[FrameRecord], frames: list[np.ndarray], path: Path, cols: int = 4) -> None:
    """Frames spread over the run: the overlay above the colour mask (black: none of the
    labels, which the overlay cannot show where a label's colour matches the scene, like
    sky), titled with the frame and the label set in force; frames where a new set took
    over are marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lgseg_ros.viz import UNLABELED_COLOR, color_for_label

    picks = list(np.linspace(0, len(records) - 1, num=min(len(records), 2 * cols)).round().astype(int))
    # Every label change shows on the sheet: the first frame under each new set replaces
    # the nearest evenly spaced pick.
    firsts = [i for i in range(1, len(records)) if records[i].labels != records[i - 1].labels]
    for first in firsts:
        free = [j for j in range(len(picks)) if picks[j] not in firsts]
        if first not in picks and free:
            picks[min(free, key=lambda j: abs(picks[j] - first))] = first
    picks = sorted(set(picks))
    rows = int(np.ceil(len(picks) / cols))
    h, w = records[0].overlay.shape[:2]
    panel_w = 4.0
    panel_h = panel_w * 2 * h / w + 0.25  # two images stacked, and the title lines
    fig, axes = plt.subplots(rows, cols, figsize=(panel_w * cols, panel_h * rows + 0.9),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, idx in zip(axes.flat, picks):
        rec = records[idx]
        ax.imshow(np.concatenate([rec.overlay, rec.color_mask], axis=0))
        changed = " (new set)" if idx in firsts else ""
        title = "\n".join(_wrap(f"frame {rec.index}{changed}: {_set_name(rec.labels)}", 44)[:3])
        ax.set_title(title, fontsize=9, loc="left",
                     fontweight="bold" if changed else "normal")
    used: list[str] = []
    for rec in records:
        used += [n for n in rec.labels if n not in used]
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.array(color_for_label(n)) / 255) for n in used]
    handles.append(plt.Rectangle((0, 0), 1, 1, color=np.array(UNLABELED_COLOR) / 255))
    names = used + ["none of the labels (black below, camera image above)"]
    fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 6), fontsize=9)
    fig.suptitle(sheet_title(records), fontsize=11)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def sheet_title(records: list[FrameRecord]) -> str:
    """Says a label change happened only when one did (not for --labels or a single set)."""
    changes = sum(1 for a, b in zip(records, records[1:]) if a.labels != b.labels)
    how = (f"label set changed {changes} time{'s' if changes > 1 else ''} mid-stream through ~/set_labels"
           if changes else "one label set for the whole run")
    return (f"lgseg_ros demo, {len(records)} frames: the node's ~/label_mask as an overlay (top) and a "
            f"colour mask (bottom); {how}")


def gif_banner_lines(records: list[FrameRecord], width: int) -> list[list[str]]:
    """Per frame, the banner text wrapped to lines that fit ``width`` pixels."""
    char_w = cv2.getTextSize("m", GIF_FONT, GIF_SCALE, 1)[0][0]  # the widest lower-case glyph
    per_line = max(10, (width - 8) // char_w)
    return [_wrap(f"frame {rec.index}: {', '.join(rec.labels)}", per_line) for rec in records]


def write_gif(records: list[FrameRecord], path: Path, width: int = 400) -> None:
    """The overlay of every frame under a banner with the frame number and the label set
    in force, wrapped to the frame's width (one banner height for all frames)."""
    import imageio.v2 as imageio

    line_h = 16
    texts = gif_banner_lines(records, width)
    banner_h = 6 + line_h * max(len(t) for t in texts)
    small = []
    for rec, lines in zip(records, texts):
        h, w = rec.overlay.shape[:2]
        img = cv2.resize(rec.overlay, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
        banner = np.full((banner_h, width, 3), 24, np.uint8)
        for k, line in enumerate(lines):
            cv2.putText(banner, line, (4, 14 + k * line_h), GIF_FONT, GIF_SCALE, (255, 255, 255), 1,
                        cv2.LINE_AA)
        small.append(np.concatenate([banner, img], axis=0))
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
    print(f"lgseg demo: {len(frames)} frames from {args.source}; label sets: "
          + "; then ".join(_set_name(labels) for labels in schedule))
    # Both processes publish frame-sized images (this one the frames, the node its overlay):
    # without the larger shared-memory segment raw frames above 512 KB get lost between them.
    from lgseg_ros.ros.dds import apply_dds_config
    apply_dds_config()
    indoor = None
    if args.indoor_source:
        indoor_schedule = label_schedule(args, indoor=True)
        indoor_frames = read_frames(args.indoor_source, args.max_frames)
        indoor = (indoor_frames, indoor_schedule[: len(indoor_frames)])
        print(f"lgseg demo: then {len(indoor_frames)} indoor frames from {args.indoor_source}; "
              "label sets: " + "; then ".join(_set_name(lb) for lb in indoor[1]))
    print(f"lgseg demo: starting the node (log: {out / 'node.log'})")
    node = start_node(args, schedule[0], out / "node.log")
    try:
        records, changes, wall = run_stream(args, frames, schedule, out)
    finally:
        stop_node(node)
    if indoor is not None:
        print(f"lgseg demo: starting the node for the indoor sequence "
              f"({args.indoor_checkpoint or 'same model'}; log: {out / 'node_indoor.log'})")
        node = start_node(args, indoor[1][0], out / "node_indoor.log",
                          checkpoint=args.indoor_checkpoint or None)
        try:
            in_records, in_changes, in_wall = run_stream(args, indoor[0], indoor[1], out,
                                                         stamp_base=2_000_000)
        finally:
            stop_node(node)
    summary = summarize(records, changes, wall, schedule)
    contact_sheet(records, frames, out / "contact_sheet.png")
    write_gif(records, out / "overlay.gif")
    for rec in records[:: max(1, len(records) // 8)]:
        cv2.imwrite(str(out / f"label_mask_{rec.index:04d}.png"), rec.label_mask)
    written = [out / "contact_sheet.png", out / "overlay.gif"]
    if indoor is not None:
        summary["indoor"] = summarize(in_records, in_changes, in_wall, indoor[1])
        contact_sheet(in_records, indoor[0], out / "contact_sheet_indoor.png")
        write_gif(in_records, out / "overlay_indoor.gif")
        written += [out / "contact_sheet_indoor.png", out / "overlay_indoor.gif"]
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(human_summary(summary, args.transport))
    if indoor is not None:
        print("lgseg demo, indoor sequence:\n" + human_summary(summary["indoor"], args.transport))
    print(f"lgseg demo: wrote {', '.join(map(str, written))}, {out / 'summary.json'} (every "
          "number, per frame) and label_mask_*.png")
    return 0


def human_summary(summary: dict, transport: str) -> str:
    """The few lines a person reads after a run; summary.json keeps the rest."""
    e2e, stages, counters = summary["end_to_end_ms"], summary["node_stage_ms_p50"], summary["node_counters"]
    kind = "JPEG CompressedImage" if transport == "compressed" else "raw Image"
    lines = [f"lgseg demo: {summary['frames']} frames in {summary['wall_s']:.1f} s = "
             f"{summary['fps']:.1f} FPS (lock-step, {kind}, the node as its own process)",
             f"  publish -> label_mask received: p50 {e2e['p50']:.1f} ms, p95 {e2e['p95']:.1f} ms, "
             f"worst {max(e2e['per_frame']):.1f} ms"]
    if stages:
        lines.append("  node stages, p50 ms: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    for change in summary["label_changes"]:
        first = change.get("first_mask_ms")
        lines.append(f"  frame {change['frame']}: labels -> {_set_name(change['labels'])}: acknowledged in "
                     f"{change['service_ms']:.1f} ms, first mask "
                     f"{'?' if first is None else f'{first:.1f}'} ms after the call")
    if not summary["label_changes"]:
        lines.append(f"  one label set for the whole run: {_set_name(summary['label_sets'][0])}")
    if counters:
        lines.append("  node counters: " + ", ".join(
            f"{k[len('frames_'):]} {int(v)}" for k, v in counters.items() if isinstance(v, float)))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
