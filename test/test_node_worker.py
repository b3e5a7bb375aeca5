"""Faults a peer can combine against the frame worker and the model's release (probe round
14), on an in-process node over real Fast DDS: the failure the node cannot cause on demand
(a backend error in one frame) is injected by making the segmenter raise once."""
from __future__ import annotations

import gc
import os
import json
import time
import weakref

import pytest
from lifecycle_msgs.msg import Transition
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import ListParameters, SetParametersAtomically
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image

from lgseg_ros.ros.node import LgsegNode
from lgseg_ros.ros.wire import RENEW_INPUT_ABOVE_BYTES
from lgseg_ros.srv import SetLabels
from test_node_support import (RELIABLE, Recorder, RosHarness, camvid_frames, change_state, node_params,  # noqa: F401
                               publish_until, rgb_msg, stamp_key, tiny_checkpoint, wait_until)

NS = "/worker_faults"
NODE = f"{NS}/lgseg_node"


@pytest.fixture
def env(tiny_checkpoint):
    h = RosHarness()
    try:
        node = h.add(LgsegNode("lgseg_node", namespace=NS, context=h.context,
                               parameter_overrides=node_params(tiny_checkpoint)))
        wait_until(lambda: node._active, timeout=30, what="the node to come up active")
        yield h, node
    finally:
        h.close()


def _serving(h, node):
    rec = Recorder(h)
    rec.listen(f"{NODE}/label_mask")
    pub = h.client.create_publisher(Image, f"{NS}/image", RELIABLE)
    frame = camvid_frames(1)[0]

    def serve(what: str):
        publish_until(pub, lambda: rgb_msg(frame),
                      lambda m: rec.find_stamp(f"{NODE}/label_mask", stamp_key(m.header)),
                      timeout=1.0, tries=20, what=what)
    return pub, frame, serve


def _counts(node) -> dict:
    return next(iter(node.stats().values()))


def test_a_failed_frame_after_a_warning_does_not_stop_the_masks(env):
    """The frame path logged warnings and errors through one logging call, and rclpy raises
    when a call site's severity changes: after any warning (a frame of an unknown encoding,
    a stamp of 0), the first frame that failed ended the frame worker, and no mask came
    again while ~/status still read the last rate at level OK."""
    h, node = env
    pub, frame, serve = _serving(h, node)
    serve("a first mask")
    bad = rgb_msg(frame)
    bad.encoding = "no-such-encoding"
    publish_until(pub, bad, lambda _: _counts(node)["frames_rejected"] >= 1,
                  what="the warning for a frame of an unknown encoding")
    seg = node._segmenter
    real, calls = seg.segment, []

    def fails_once(*args, **kwargs):
        if not calls:
            calls.append(1)
            raise RuntimeError("injected backend failure")
        return real(*args, **kwargs)

    seg.segment = fails_once
    try:
        publish_until(pub, lambda: rgb_msg(frame), lambda _: _counts(node)["frames_failed"] >= 1,
                      what="the injected failure")
    finally:
        seg.segment = real
    serve("a mask after the failed frame")
    assert node._worker.is_alive() and node._worker_faults == 0
    # and the other order: a warning after the error line
    publish_until(pub, bad, lambda _: _counts(node)["frames_rejected"] >= 2,
                  what="a warning after the error")
    serve("a mask after the warning that followed the error")


def _transition(h, transition_id: int) -> bool:
    return change_state(h, NODE, transition_id, timeout=15.0)


def test_a_set_encoded_but_never_swapped_in_does_not_outlive_the_model(env):
    """Two identical label changes at once (the second found its names in force), or an
    atomic parameter set whose other value was refused, left the encoded set waiting for a
    swap that never came: after cleanup ("model released") it still held the segmenter
    (108 MB of the shipped model), and after the next configure two were alive."""
    h, node = env
    labels = h.client.create_client(SetLabels, f"{NODE}/set_labels")
    atomic = h.client.create_client(SetParametersAtomically, f"{NODE}/set_parameters_atomically")
    try:
        assert labels.wait_for_service(timeout_sec=15) and atomic.wait_for_service(timeout_sec=15)
        futures = [labels.call_async(SetLabels.Request(labels=["tree", "person", "bus"]))
                   for _ in range(2)]
        wait_until(lambda: all(f.done() for f in futures), timeout=30, what="both label changes")
        assert all(f.result().success for f in futures), [f.result().message for f in futures]
        assert node._prepared is None
        req = SetParametersAtomically.Request(parameters=[
            ParameterMsg(name="labels", value=ParameterValue(
                type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=["grass", "dog"])),
            ParameterMsg(name="colormap", value=ParameterValue(
                type=ParameterType.PARAMETER_STRING, string_value="bogus"))])
        reply = h.call(atomic, req, timeout=30, retry=False)
        assert not reply.result.successful and "colormap" in reply.result.reason
        assert node._prepared is None
        assert tuple(node._label_set.names) == ("tree", "person", "bus")
    finally:
        h.client.destroy_client(labels)
        h.client.destroy_client(atomic)
    old = weakref.ref(node._segmenter)
    assert _transition(h, Transition.TRANSITION_DEACTIVATE)
    assert _transition(h, Transition.TRANSITION_CLEANUP)
    gc.collect()
    assert old() is None, gc.get_referrers(old())[:5]


def test_an_oversized_sample_while_disabled_still_frees_its_receive_buffer(env):
    """While ~/enable is false the node returned before the size check that renews the
    image subscription, so a 200 MB sample kept Fast DDS's receive pool at that size until
    another one came while enabled. A sample the node would refuse now renews it even while
    disabled; one it would serve does not (a large camera is not resubscribed every 5 s)."""
    h, node = env
    cam = node._cameras[0]
    node._enabled = False
    try:
        sub = cam.subs[0]
        big = rgb_msg(camvid_frames(1)[0][:2, :2].copy())
        big.data = bytes(RENEW_INPUT_ABOVE_BYTES + 1)    # claims 2x2: refused from its header
        raw = serialize_message(big)
        wait_until(lambda: time.monotonic() - cam.renewed_at.get(0, -1e9) > 5.0, timeout=10,
                   what="past the renewal throttle")
        done: list = []

        def on_the_executor():   # where the node's own callbacks run
            timer.cancel()
            node._on_image(cam, False, raw)
            done.append(cam.subs[0] is not sub)

        timer = node.create_timer(0.01, on_the_executor)
        wait_until(lambda: done, timeout=10, what="the sample handed to the node")
        node.destroy_timer(timer)
        assert done == [True]
    finally:
        node._enabled = True


def test_a_wrongly_typed_or_overlong_array_is_refused_before_rclpy_converts_it(env, monkeypatch):
    """rclpy's conversion of a request's value walks every element in Python before any
    check of the node's: a 32 MB byte[] for overlay_alpha held the executor 1.3 s with the
    GIL held, and +288 MB, to be refused in the end. The node now refuses a value of another
    type than the parameter's, or an array longer than any parameter takes, from the type
    and the length alone, and converts only what it may accept."""
    import rclpy.parameter

    h, node = env
    converted = []
    real = rclpy.parameter.Parameter.from_parameter_msg
    monkeypatch.setattr(rclpy.parameter.Parameter, "from_parameter_msg",
                        staticmethod(lambda msg: converted.append(msg.name) or real(msg)))
    n = 4 << 20
    big = ParameterMsg(name="overlay_alpha", value=ParameterValue(
        type=ParameterType.PARAMETER_BYTE_ARRAY, byte_array_value=[b"\x07"] * n))
    t0 = time.perf_counter()
    param, refused = node._parameter_from_msg(big)
    t1 = time.perf_counter()
    assert param is None and not refused.successful
    assert refused.reason.startswith("Wrong parameter type: overlay_alpha takes double, got byte_array")
    assert f"({n} items)" in refused.reason and len(refused.reason) < 300
    t2 = time.perf_counter()
    real(big)                                   # what the node no longer does first
    t3 = time.perf_counter()
    print(json.dumps({"byte_array_4mb": {"refusal_s": round(t1 - t0, 4),
                                         "rclpy_conversion_s": round(t3 - t2, 4)}}))
    many = ParameterMsg(name="labels", value=ParameterValue(
        type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=["tree"] * 5000))
    param, refused = node._parameter_from_msg(many)
    assert param is None and "labels: 5000 entries, at most 4096" in refused.reason
    assert converted == []
    good = ParameterMsg(name="overlay_alpha", value=ParameterValue(
        type=ParameterType.PARAMETER_DOUBLE, double_value=0.3))
    param, refused = node._parameter_from_msg(good)
    assert refused is None and param.value == 0.3 and converted == ["overlay_alpha"]


def test_a_list_parameters_prefix_longer_than_any_name_is_refused(env, capfd):
    """rclpy copies each ListParameters prefix once per parameter (25 times): 64 prefixes of
    2 MB held the executor 0.37 s. Prefixes are now capped like the other services' names."""
    h, node = env
    client = h.client.create_client(ListParameters, f"{NODE}/list_parameters")
    try:
        long = h.call(client, ListParameters.Request(prefixes=["x" * 300]))
        assert list(long.result.names) == []
        wait_until(lambda: "a prefix of 300 characters" in capfd.readouterr().err, timeout=5,
                   what="the refusal in the log")
        every = h.call(client, ListParameters.Request(prefixes=["y" * 256]))   # the longest allowed
        assert list(every.result.names) == []
        every = h.call(client, ListParameters.Request())
        assert "overlay_alpha" in every.result.names
    finally:
        h.client.destroy_client(client)


def test_the_type_numbers_written_out_match_rcl_interfaces():
    """params.py and param_guard.py name ParameterType values by number (params.py stays
    free of ROS imports): they must be the message's own."""
    from lgseg_ros.ros import param_guard
    from lgseg_ros.ros import params as P

    kinds = {"bool": "BOOL", "int": "INTEGER", "double": "DOUBLE", "string": "STRING",
             "string_array": "STRING_ARRAY"}
    assert {k: getattr(ParameterType, f"PARAMETER_{v}") for k, v in kinds.items()} == P.PARAM_TYPE_IDS
    for number, field in param_guard._VALUE_FIELDS.items():
        name = field[:-len("_value")].upper()
        assert getattr(ParameterType, f"PARAMETER_{name}") == number, field


def test_lifecycle_cycles_leave_nothing_behind_and_log_one_line_per_kind(env, capfd):
    """rclpy's callback groups keep an entry for every entity ever added: each deactivate /
    activate left the input subscriptions' and the status timer's (and each cleanup /
    configure the output publishers' event handlers), so a peer cycling ~/change_state grew
    the node without bound (13.6 KB a cycle with 16 cameras), and wrote an "active" and an
    "inactive" line per cycle (480 KB in 61 s). Both are bounded now."""
    h, node = env
    groups = {"input": node._input_group, "timer": node._timer_group,
              "default": node.default_callback_group}

    def sizes():
        return {k: len(g.entities) for k, g in groups.items()}

    def cycle(down: int, up: int):
        assert _transition(h, down) and _transition(h, up)

    cycle(Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_ACTIVATE)
    cycle(Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP)
    assert _transition(h, Transition.TRANSITION_CONFIGURE) and _transition(h, Transition.TRANSITION_ACTIVATE)
    capfd.readouterr()
    start = sizes()
    for _ in range(10):
        cycle(Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_ACTIVATE)
    for _ in range(3):
        cycle(Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP)
        assert _transition(h, Transition.TRANSITION_CONFIGURE) and _transition(h, Transition.TRANSITION_ACTIVATE)
    assert sizes() == start
    err = capfd.readouterr().err
    assert err.count("]: inactive") <= 2 and err.count("]: active") <= 2, err[-3000:]
    assert err.count("configured in") <= 2 and err.count("cleaned up") <= 2, err[-3000:]
    _pub, _frame, serve = _serving(h, node)
    serve("a mask after the cycles")


def test_a_node_started_with_its_output_closed_gets_dev_null_there(tmp_path):
    """`lgseg node >&- 2>&-`: the next files the process opened took fds 1 and 2, so the
    console log went into the ROS log file and a Fast DDS socket (probe round 14)."""
    import subprocess
    import sys

    out = tmp_path / "fds.txt"
    code = ("import os; from lgseg_ros.ros.node_main import _fill_closed_std_fds; "
            "_fill_closed_std_fds(); f = open(%r, 'w'); "
            "f.write(' '.join(os.readlink(f'/proc/self/fd/{n}') for n in (0, 1, 2)))" % str(out))
    subprocess.run(f"{sys.executable} -c \"{code}\" <&- >&- 2>&-", shell=True, check=True)
    assert out.read_text().split() == [os.devnull] * 3


def test_a_stopped_frame_worker_is_an_error_in_status(env):
    """The worker is built not to end (above); should it end all the same, ~/status must not
    go on reading the last rate at level OK while no mask comes."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    h, node = env
    rec = Recorder(h)
    rec.listen(f"{NODE}/status", DiagnosticArray)
    node._stop.set()                 # ends the worker as a fault would, the node still active
    node._worker.join(timeout=5)
    try:
        def stopped():
            with rec.cond:
                return any(st.level == DiagnosticStatus.ERROR and
                           st.message == "frame worker stopped: no masks"
                           for _, arr in rec.msgs[f"{NODE}/status"] for st in arr.status)
        wait_until(stopped, timeout=15, what="an ERROR status naming the stopped worker")
    finally:
        node._stop.clear()
