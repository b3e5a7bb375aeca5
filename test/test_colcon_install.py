"""The robot install path, for real: `colcon build` of a clone of this repository in a
fresh workspace, the install space checked file by file, then the *installed* node started
from a sourced `install/setup.bash` and answering one camera frame with a mask.

colcon is Debian's (`colcon`, python3-colcon-ros, python3-colcon-cmake and the extensions
in COLCON_APT); it is installed here with apt-get when missing and this runs as root.
ament, rosidl and rclpy are the project venv's PyPI wheels (the venv is the ament prefix),
standing in for /opt/ros.
What cannot run here: `ros2 run` / `ros2 launch` (ros2cli is not on PyPI), so the
installed executable is started by its path in the install space, as `ros2 run` would.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import Image

from apt_support import ensure_debian_packages

from lgseg_ros.ros.image_conversion import numpy_to_image
from test_node_support import Recorder, RosHarness, header, stamp_key

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
# Debian's `colcon` only recommends its extensions, and apt-get here skips recommends: the
# verbs and options this test (and a robot's workflow) uses come from these packages.
COLCON_APT = ["colcon", "python3-colcon-ros", "python3-colcon-cmake",
              "python3-colcon-package-information",   # `colcon list`
              "python3-colcon-package-selection",     # `--packages-select`
              "python3-colcon-parallel-executor", "python3-colcon-output",
              "python3-colcon-bash",                  # install/setup.bash
              "python3-colcon-library-path", "python3-colcon-defaults",
              "python3-colcon-metadata"]
PY = f"python{sys.version_info.major}.{sys.version_info.minor}"


def _colcon_complete() -> bool:
    """colcon with the verbs and options used below (a bare colcon-core has neither)."""
    colcon = shutil.which("colcon")
    if colcon is None:
        return False

    def helps(verb):
        return subprocess.run([colcon, verb, "--help"], capture_output=True, text=True,
                              timeout=60)

    return helps("list").returncode == 0 and "--packages-select" in helps("build").stdout


def _ensure_colcon() -> str:
    ensure_debian_packages(COLCON_APT, _colcon_complete, "colcon with its build extensions")
    return shutil.which("colcon")


def _clone(dest: Path) -> str:
    """A clone of the repository; a copy of the clone's file set when the tree has edits
    (a clone would silently test the last commit instead of the code under test)."""
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.strip()
    if not dirty:
        subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(dest)], check=True)
        return "git clone"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for rel in filter(None, (f.decode() for f in files)):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return "copy of the working tree (uncommitted edits)"


def _env() -> dict:
    # What a robot has after `source /opt/ros/kilted/setup.bash`, with the venv as the ROS
    # prefix. ROS_* discovery settings come from conftest.py (loopback, own domain).
    env = dict(os.environ)
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '')}"
    env["AMENT_PREFIX_PATH"] = env["CMAKE_PREFIX_PATH"] = str(VENV)
    env["VIRTUAL_ENV"] = str(VENV)
    env.pop("PYTHONPATH", None)  # the source tree must not stand in for the install space
    return env


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    if not (VENV / "share" / "ament_cmake" / "cmake").is_dir():
        pytest.skip(f"{VENV} is not an ament prefix (run tools/setup_env.sh)")
    colcon = _ensure_colcon()
    ws = tmp_path_factory.mktemp("ros2_ws")
    (ws / "src").mkdir()
    how = _clone(ws / "src" / "lgseg_ros")
    env = _env()
    listed = subprocess.run([colcon, "list"], cwd=ws, env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    t0 = time.monotonic()
    build = subprocess.run(
        [colcon, "build", "--packages-select", "lgseg_ros", "--cmake-args", "-DBUILD_TESTING=OFF"],
        cwd=ws, env=env, capture_output=True, text=True, timeout=1200)
    print(f"colcon build ({how}): {time.monotonic() - t0:.0f} s")
    if build.returncode != 0:
        log = ws / "log" / "latest_build" / "lgseg_ros" / "stdout_stderr.log"
        detail = log.read_text()[-6000:] if log.is_file() else build.stdout[-6000:]
        pytest.fail(f"colcon build failed:\n{detail}\n{build.stderr[-3000:]}")
    return ws, listed.stdout


def test_the_repository_is_exactly_one_ros_package(workspace):
    _, listed = workspace
    rows = [line.split("\t") for line in listed.splitlines() if line.strip()]
    assert rows == [["lgseg_ros", "src/lgseg_ros", "(ros.ament_cmake)"]], listed


def test_install_space_is_whole(workspace):
    ws, _ = workspace
    prefix = ws / "install" / "lgseg_ros"
    for exe in ("lgseg_node", "lgseg"):
        path = prefix / "lib" / "lgseg_ros" / exe
        assert path.is_file() and os.access(path, os.X_OK), path
    share = prefix / "share" / "lgseg_ros"
    # Every file of launch/, config/ (parameter files, RViz config, DDS profiles), models/
    # and demo/ is installed unchanged.
    for folder in ("launch", "config", "models", "demo"):
        # models/artefacts/ (`make artefacts`: ONNX files, git-ignored) is not in the clone.
        sources = [p for p in (REPO / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and "artefacts" not in p.relative_to(REPO).parts]
        assert sources, folder
        for src in sources:
            dst = share / src.relative_to(REPO)
            assert dst.is_file(), f"{dst} missing from the install space"
            assert dst.stat().st_size == src.stat().st_size, dst
    assert list((share / "models").glob("*.safetensors"))
    assert len(list((share / "demo" / "frames").glob("*.jpg"))) >= 8
    site = prefix / "lib" / PY / "site-packages" / "lgseg_ros"
    # The library and the generated interfaces share one package directory, and its
    # __init__ is the library's (the generator writes an empty one).
    for rel in ("ros/node.py", "runtime/segmenter.py", "labels.py", "msg/_label_info.py",
                "msg/_label_set.py", "srv/_set_labels.py"):
        assert (site / rel).is_file(), rel
    assert "extend_path" in (site / "__init__.py").read_text()
    assert list(site.glob("_lgseg_ros_s.ep.*.c")) or list(site.glob("*rosidl_typesupport_c*.so"))


def _sourced(ws: Path, command: str) -> list[str]:
    return ["bash", "-c", f"source {ws / 'install' / 'setup.bash'} && {command}"]


def test_sourced_install_imports_the_installed_library(workspace, tmp_path):
    ws, _ = workspace
    code = ("import lgseg_ros.ros.node as n, lgseg_ros.msg as m, lgseg_ros.srv as s;"
            "from lgseg_ros.resources import package_path;"
            "print(n.__file__); print(m.__file__); print(s.__file__);"
            "print(package_path('models/lgseg_lite_minilm.safetensors'))")
    proc = subprocess.run(_sourced(ws, f"python -c \"{code}\""), cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    install = str(ws / "install" / "lgseg_ros")
    assert all(line.startswith(install) for line in lines), lines
    assert "/share/lgseg_ros/models/" in lines[-1]


def test_installed_node_answers_a_frame(workspace, tmp_path):
    ws, _ = workspace
    node_exe = ws / "install" / "lgseg_ros" / "lib" / "lgseg_ros" / "lgseg_node"
    # The shipped model from the install space (no checkpoint parameter); torch on the CPU
    # so nothing is exported or cached outside the test's folders.
    topic = f"/colcon_cam_{os.getpid()}/image"
    cmd = (f"exec {node_exe} --ros-args -r __node:=colcon_lgseg -p backend:=torch -p device:=cpu "
           f"-p net_height:=192 -p net_width:=256 -p 'labels:=[road, sky, car]' -r image:={topic}")
    log_path = tmp_path / "node.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(_sourced(ws, cmd), cwd=tmp_path, env=_env(), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    harness = RosHarness()
    try:
        rec = Recorder(harness)
        rec.listen("/colcon_lgseg/label_mask")
        pub = harness.client.create_publisher(Image, topic, 1)
        frame = cv2.cvtColor(cv2.imread(str(sorted((REPO / "demo" / "frames").glob("*.jpg"))[0])),
                             cv2.COLOR_BGR2RGB)
        end = time.monotonic() + 240
        while pub.get_subscription_count() == 0:
            assert proc.poll() is None, f"the installed node exited:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < end, \
                f"the installed node never subscribed:\n{log_path.read_text()[-4000:]}"
            time.sleep(0.1)
        rec.wait_matched("/colcon_lgseg/label_mask")
        msg = numpy_to_image(frame, "rgb8", header())
        got = None
        for _ in range(10):  # best-effort input: resend until a mask comes back
            pub.publish(msg)
            try:
                got = rec.wait_stamp("/colcon_lgseg/label_mask", stamp_key(msg.header), timeout=10)
                break
            except AssertionError:
                assert proc.poll() is None, log_path.read_text()[-4000:]
        assert got is not None, log_path.read_text()[-4000:]
        assert (got.height, got.width, got.encoding) == (frame.shape[0], frame.shape[1], "mono8")
        mask = np.frombuffer(got.data, np.uint8).reshape(got.height, got.width)
        assert set(np.unique(mask).tolist()) <= {0, 1, 2, 255}
        # The shipped, trained model: a street frame has road and sky in it.
        assert (mask == 0).mean() > 0.05 and (mask == 1).mean() > 0.02
        text = log_path.read_text()
        assert f"{ws / 'install' / 'lgseg_ros' / 'share' / 'lgseg_ros' / 'models'}" in text, text[-3000:]
    finally:
        harness.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
