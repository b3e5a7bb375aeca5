"""Issue 19: the default node path runs without torch.

`lgseg node` runs as its own process (real rclpy, Fast DDS on loopback) from ONNX
artefacts the test builds first (where torch exists, as the development set-up does), then
serves frames and a label change with new words. Its /proc/PID/maps must show no libtorch
and its own sys.modules (reported by node_module_report.py) no module of torch's family,
while its masks equal the in-process ONNX Runtime Segmenter's on the same frames.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters

from lgseg_ros.srv import SetLabels
from test_node_support import (LATCHED, NET_HW, camvid_frames, mask_of, publish_until,  # noqa: F401
                               rgb_msg, serving_node, stamp_key, tiny_checkpoint, wait_until)

NS = "/torchfree"
NODE = f"{NS}/lgseg_node"
REPORTER = str(Path(__file__).with_name("node_module_report.py"))


@pytest.fixture(scope="module")
def artefacts(tiny_checkpoint, tmp_path_factory):
    from lgseg_ros.runtime.artefacts import build_all

    folder = tmp_path_factory.mktemp("artefacts")
    saved = os.environ.get("LGSEG_ARTEFACTS")
    try:
        build_all(tiny_checkpoint, [NET_HW], ["fp32"], folder)
        try:   # the node's default precision (auto) is int8 on the CPU where it can be built
            build_all(tiny_checkpoint, [NET_HW], ["int8"], folder)
        except FileNotFoundError:   # no CamVid train frames to calibrate on: fp32 it is
            pass
    finally:  # build_all points this process at the folder; the fixture's users choose
        if saved is None:
            os.environ.pop("LGSEG_ARTEFACTS", None)
        else:
            os.environ["LGSEG_ARTEFACTS"] = saved
    return folder


@pytest.fixture(scope="module")
def node(artefacts, tiny_checkpoint, tmp_path_factory):
    report = tmp_path_factory.mktemp("report") / "modules.json"
    env = {**os.environ, "LGSEG_ARTEFACTS": str(artefacts), "LGSEG_MODULE_REPORT": str(report)}
    args = ["-p", f"checkpoint:={tiny_checkpoint}", "-p", "device:=cpu", "-p", f"net_height:={NET_HW[0]}",
            "-p", f"net_width:={NET_HW[1]}", "-p", "labels:=[road, car, sky]"]
    with serving_node(NS, f"{NS}/image", args, env=env, program=[REPORTER]) as parts:
        yield (*parts, report)


def _serve(rec, pub, frame, proc, tries: int = 10):
    """The node's mask for ``frame``. Sent again (new stamp) when no mask came within 3 s:
    a frame published just as discovery completes can miss the node's reader."""
    return mask_of(publish_until(pub, lambda: rgb_msg(frame),
                                 lambda m: rec.find_stamp(f"{NODE}/label_mask", stamp_key(m.header)),
                                 tries=tries, what="a mask", proc=proc))


def test_node_serves_from_onnx_files_without_torch(node, artefacts, tiny_checkpoint):
    h, proc, rec, pub, report = node
    frames = camvid_frames(2)
    got = [_serve(rec, pub, f, proc) for f in frames]
    # A label change with words the node has not encoded yet: the text encoder runs too.
    client = h.client.create_client(SetLabels, f"{NODE}/set_labels")
    resp = h.call(client, SetLabels.Request(labels=["zebra crossing", "lamp post", "road"]))
    assert resp.success, resp.message
    got_new = _serve(rec, pub, frames[0], proc)

    assert "backend onnxruntime" in proc.text(), proc.text()[-3000:]
    with open(f"/proc/{proc.pid}/maps") as f:
        torch_maps = sorted({line.split()[-1] for line in f if "libtorch" in line or "/torch/" in line})
    assert torch_maps == [], f"the node process mapped torch's libraries: {torch_maps[:5]}"
    wait_until(report.exists, timeout=5, what="the node's module report")
    modules = json.loads(report.read_text())
    assert modules == [], f"the node process imported {modules[:10]}"

    # Same files, same runtime in this process: the node's masks are the library's.
    os.environ["LGSEG_ARTEFACTS"] = str(artefacts)
    try:
        from lgseg_ros.runtime.segmenter import Segmenter

        ref = Segmenter(checkpoint=tiny_checkpoint, backend="onnxruntime", device="cpu",
                        precision="auto", net_size=NET_HW)
    finally:
        os.environ.pop("LGSEG_ARTEFACTS", None)
    assert ref.text_encoder.encoder.runtime == "onnxruntime"
    assert f"onnxruntime on cpu ({ref.backend.precision})" in proc.text()
    for frame, mask in zip(frames, got):
        np.testing.assert_array_equal(mask, ref.segment(frame, ref.prepare_labels(["road", "car", "sky"])).ids)
    new = ref.prepare_labels(["zebra crossing", "lamp post", "road"])
    np.testing.assert_array_equal(got_new, ref.segment(frames[0], new).ids)


def _torch_mappings(pid: int) -> list[str]:
    with open(f"/proc/{pid}/maps") as f:
        return sorted({line.split()[-1] for line in f if "libtorch" in line or "/torch/" in line})


def test_a_run_time_switch_to_the_torch_backend_is_refused(node):
    """Probe round 17: `backend` applies at the next configure, so a peer could set it to
    torch and cycle the node: torch was then loaded into the process for good (RSS 313 ->
    1,148 MB, and back on onnxruntime it stayed). Refused at run time, naming the way to
    choose it (at start-up); other backends still change at run time."""
    h, proc, rec, pub, report = node
    client = h.client.create_client(SetParameters, f"{NODE}/set_parameters")

    def set_backend(value):
        msg = ParameterMsg(name="backend", value=ParameterValue(
            type=ParameterType.PARAMETER_STRING, string_value=value))
        return h.call(client, SetParameters.Request(parameters=[msg])).results[0]

    try:
        refused = set_backend("torch")
        assert not refused.successful
        assert "backend=torch is chosen at start-up only (-p backend:=torch)" in refused.reason
        assert set_backend("onnxruntime").successful   # a change the node still allows
        assert set_backend("auto").successful          # and back to the fixture's default
    finally:
        h.client.destroy_client(client)
    assert _torch_mappings(proc.pid) == []
    _serve(rec, pub, camvid_frames(1)[0], proc)


def test_a_reconfigure_at_a_size_without_files_builds_nothing_and_says_how(node, artefacts):
    """Audit round 18: a peer set net_height to a size with no artefacts and drove cleanup +
    configure: the configure waited 19 s for a child export on the executor, once per new
    size. Only the first configure builds; a later one at a size without files fails naming
    the command that builds them, and the node configures again at a size that has them."""
    from lifecycle_msgs.msg import Transition

    from test_node_support import change_state

    h, proc, rec, pub, report = node
    client = h.client.create_client(SetParameters, f"{NODE}/set_parameters")

    def set_height(value):
        msg = ParameterMsg(name="net_height", value=ParameterValue(
            type=ParameterType.PARAMETER_INTEGER, integer_value=value))
        assert h.call(client, SetParameters.Request(parameters=[msg])).results[0].successful

    files_before = sorted(p.name for p in Path(artefacts).rglob("*.onnx"))
    try:
        set_height(NET_HW[0] + 32)
        assert change_state(h, NODE, Transition.TRANSITION_DEACTIVATE)
        assert change_state(h, NODE, Transition.TRANSITION_CLEANUP)
        assert not change_state(h, NODE, Transition.TRANSITION_CONFIGURE)
        wait_until(lambda: "builds no files" in proc.text(), timeout=10, what="the refusal line")
        line = next(ln for ln in proc.text().splitlines()
                    if "builds no files" in ln and "configure failed" in ln)
        assert f"--size {NET_HW[0] + 32} {NET_HW[1]}" in line and "lgseg artefacts" in line, line
        assert "exporting" not in proc.text()
        assert sorted(p.name for p in Path(artefacts).rglob("*.onnx")) == files_before
    finally:
        set_height(NET_HW[0])
        assert change_state(h, NODE, Transition.TRANSITION_CONFIGURE)
        assert change_state(h, NODE, Transition.TRANSITION_ACTIVATE)
        h.client.destroy_client(client)
    assert _torch_mappings(proc.pid) == []
    _serve(rec, pub, camvid_frames(1)[0], proc)
