"""Measure which input reliability lets a camera's frames reach the node (issue 20, item 16).

A camera driver started without config/fastdds_large_frames.xml sends frames above Fast
DDS's 512 KB shared-memory segment as fragmented UDP; a best-effort reader drops a frame
whenever one fragment is lost. This starts `lgseg node` (test-tiny weights, shipped
profile) with each qos_reliability, and a "camera" process with or without the profile
publishing 640x480 bgr8 frames RELIABLY at 30 Hz, and reports per combination: frames the
node received (its ~/status frames_in) and end-to-end latency (frame stamp -> label_mask
in the camera process; includes the model, so compare between rows, not with zero).

    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=77 python tools/measure_input_qos.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CAMERA = r"""
import json, sys, time, threading
import numpy as np, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from diagnostic_msgs.msg import DiagnosticArray
from lgseg_ros.ros.image_conversion import numpy_to_image
from std_msgs.msg import Header
n, hz, ns = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
rclpy.init()
node = rclpy.create_node("qos_camera")
pub = node.create_publisher(Image, ns + "/camera/image_raw", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
lat, status = [], {}
def on_mask(m):
    lat.append(time.time() - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9))
def on_status(m):
    if m.status:
        status.update({kv.key: kv.value for kv in m.status[0].values})
node.create_subscription(Image, ns + "/lgseg_node/label_mask", on_mask, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
node.create_subscription(DiagnosticArray, ns + "/lgseg_node/status", on_status, 10)
spin = threading.Thread(target=rclpy.spin, args=(node,), daemon=True); spin.start()
end = time.monotonic() + 60
while pub.get_subscription_count() == 0 and time.monotonic() < end: time.sleep(0.05)
time.sleep(2.0)
while "frames_in" not in status and time.monotonic() < end: time.sleep(0.05)
before = int(status.get("frames_in", 0))
rng = np.random.default_rng(0)
base = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
t0 = time.monotonic()
for i in range(n):
    now = time.time_ns()
    h = Header(frame_id="camera"); h.stamp.sec, h.stamp.nanosec = divmod(now, 10**9)
    pub.publish(numpy_to_image(np.roll(base, i, axis=1), "bgr8", h))
    time.sleep(max(0.0, t0 + (i + 1) / hz - time.monotonic()))
time.sleep(2.0)
lat.sort()
pct = lambda q: round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else None
print(json.dumps({"sent": n, "frames_in": int(status.get("frames_in", 0)) - before,
                  "masks": len(lat), "latency_ms_p50": pct(0.5), "latency_ms_p95": pct(0.95)}))
"""


def run(reliability: str, camera_profile: bool, n: int = 90, hz: float = 30.0) -> dict:
    from lgseg_ros.ros.dds import PROFILE_VARS, profile_path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
    from test_node_support import _shared_checkpoint  # noqa: E402

    ns = f"/qos_{reliability}_{int(camera_profile)}"
    base_env = {k: v for k, v in os.environ.items() if k not in PROFILE_VARS}
    node = subprocess.Popen([sys.executable, "-m", "lgseg_ros.cli", "node", "--ros-args", "-r", f"__ns:={ns}",
                             "-r", f"image:={ns}/camera/image_raw", "-p", f"checkpoint:={_shared_checkpoint()}",
                             "-p", "backend:=onnxruntime", "-p", "device:=cpu", "-p", "net_height:=64",
                             "-p", "net_width:=96", "-p", "status_period:=0.2",
                             "-p", f"qos_reliability:={reliability}"],
                            env=base_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        cam_env = dict(base_env)
        if camera_profile:
            cam_env["FASTDDS_DEFAULT_PROFILES_FILE"] = profile_path()
        out = subprocess.run([sys.executable, "-c", CAMERA, str(n), str(hz), ns], env=cam_env,
                             capture_output=True, text=True, timeout=300)
        line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-500:]
        return {"qos_reliability": reliability, "camera_has_profile": camera_profile, **json.loads(line)}
    finally:
        node.terminate()
        node.wait(30)


def main() -> int:
    rows = []
    for camera_profile in (False, True):
        for reliability in ("best_effort", "best_available", "reliable"):
            rows.append(run(reliability, camera_profile))
            print(json.dumps(rows[-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
