"""Issue 20: hostile peers, round 3. One request must not freeze the node, no input may
multiply itself, what the node loads is chosen at start-up.

Same set-up as test_node_hostile.py: `lgseg node` as its own process (a crash is an exit
code, not a test error), real Fast DDS over loopback, test-tiny weights with the real MiniLM
text encoder. Each test names the item of the issue it covers. Stalls are shown by order
and by counting (which reply came first, how many masks came out while a request was being
worked on), not by timing, except where a comment says why a generous bound is used.
"""
from __future__ import annotations

import json
import os
import random
import signal
import string
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterEvent, ParameterType, ParameterValue
from rcl_interfaces.srv import (DescribeParameters, GetParameters, GetParameterTypes, ListParameters,
                                SetParameters, SetParametersAtomically)
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import SetBool

from lgseg_ros.labels import topic_tokens
from lgseg_ros.ros.outputs import CLASS_MASK_BUDGET_PIXELS, LabelInfo
from lgseg_ros.ros.params import DEFAULT_MAX_IMAGE_PIXELS
from lgseg_ros.ros.wire import MAX_CAMERA_INFO_BYTES
from lgseg_ros.srv import SetLabels
from test_node_support import (FRAME_HW, LATCHED, NET_HW, RELIABLE, NodeProcess, camvid_frames,
                               node_env, publish_big_sample_from_another_process, publish_until,
                               rgb_msg, serving_node, tiny_torch_args)
from test_node_support import reference_segmenter, stamp_key, tiny_checkpoint, wait_until  # noqa: F401 (fixtures)

NS = "/hostile3"
NODE = f"{NS}/lgseg_node"
CAMERA = f"{NS}/camera/image_raw"
RSS_RISE_LIMIT_MB = 300   # the target per request or message


@pytest.fixture(scope="module")
def env(tiny_checkpoint):
    with serving_node(NS, CAMERA, tiny_torch_args(tiny_checkpoint), env=node_env()) as parts:
        yield parts


def call(h, srv_type, name: str, request, timeout: float = 60.0, retry: bool = False):
    client = h.client.create_client(srv_type, f"{NODE}/{name}")
    try:
        return h.call(client, request, timeout=timeout, retry=retry)
    finally:
        h.client.destroy_client(client)


def wait_renewed(proc, log_at: int, name: str, timeout: float = 30.0) -> None:
    """Until the node has renewed ~/<name> after a request over 1 MB (service_renewal): a
    request sent while it does so may get no reply."""
    wait_until(lambda: f"{NODE}/{name}: server renewed" in proc.text_since(log_at), timeout=timeout,
               what=f"~/{name} to be renewed", period=0.1)


def string_param(name: str, value: str) -> ParameterMsg:
    return ParameterMsg(name=name, value=ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                        string_value=value))


def labels_param(labels: list[str]) -> ParameterMsg:
    return ParameterMsg(name="labels", value=ParameterValue(
        type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=labels))


def serve_one(env_, deadline: float = 1.0) -> float:
    """Publish one good frame; seconds until its mask came back. The 1 s is the issue's
    'keeps serving' target; frames here take ~50 ms, so it is a generous bound."""
    h, proc, rec, pub = env_
    assert proc.alive(), f"node exited with {proc.proc.returncode}:\n{proc.text()[-4000:]}"
    msg = rgb_msg(camvid_frames(1)[0])
    t0 = time.monotonic()
    pub.publish(msg)
    rec.wait_stamp(f"{NODE}/label_mask", stamp_key(msg.header), timeout=deadline + 10)
    took = time.monotonic() - t0
    assert took < deadline, f"next good frame answered after {took:.2f} s"
    return took


def status_counts(rec) -> dict:
    after = time.monotonic()

    def newest():
        with rec.cond:
            msgs = [m for t, m in rec.msgs[f"{NODE}/status"] if t > after and m.status]
        return msgs[-1] if msgs else None
    msg = rec.wait_for(newest, timeout=10, what="a fresh ~/status")
    values = {kv.key: kv.value for kv in msg.status[0].values}
    return {k: int(values[k]) for k in ("frames_in", "frames_processed", "frames_rejected",
                                        "frames_failed")}


def new_words(n: int, seed: int) -> list[str]:
    """Words no encoder cache has seen (so each costs real text encoding)."""
    rng = random.Random(seed)
    return ["".join(rng.choice(string.ascii_lowercase) for _ in range(9)) for _ in range(n)]


class Stream:
    """Good frames at 10 Hz from a thread, as a camera would send them."""

    def __init__(self, pub, hz: float = 10.0) -> None:
        self.pub, self.period = pub, 1.0 / hz
        self.frame = camvid_frames(1)[0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.pub.publish(rgb_msg(self.frame))
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def masks_between(rec, t0: float, t1: float) -> int:
    with rec.cond:
        return sum(1 for t, _ in rec.msgs[f"{NODE}/label_mask"] if t0 < t <= t1)


def test_label_encoding_does_not_hold_the_executor(env):
    """Items 2 and 7: a set of 256 new words held the only executor thread for ~1.2 s (no
    masks, ~/enable unanswered); four such calls in parallel cut output to 2.4 Hz. Now
    the encoding runs on the label worker: ~/enable, sent after the label change, is
    answered before it, and masks keep coming while the words are encoded."""
    h, proc, rec, pub = env
    serve_one(env)
    labels_client = h.client.create_client(SetLabels, f"{NODE}/set_labels")
    enable_client = h.client.create_client(SetBool, f"{NODE}/enable")
    assert labels_client.wait_for_service(10) and enable_client.wait_for_service(10)
    done: dict[str, float] = {}
    report = {}
    try:
        with Stream(pub):
            time.sleep(1.0)
            t0 = time.monotonic()
            futures = [labels_client.call_async(SetLabels.Request(labels=new_words(256, seed)))
                       for seed in range(4)]
            for i, f in enumerate(futures):
                f.add_done_callback(lambda _f, i=i: done.setdefault(f"labels{i}", time.monotonic()))
            time.sleep(0.05)
            enable = enable_client.call_async(SetBool.Request(data=True))
            enable.add_done_callback(lambda _f: done.setdefault("enable", time.monotonic()))
            wait_until(lambda: len(done) == 5, timeout=120, what="all replies")
        replies = [f.result() for f in futures]
        assert enable.result().success
        first_labels = min(done[f"labels{i}"] for i in range(4))
        last_labels = max(done[f"labels{i}"] for i in range(4))
        report = {"enable_reply_s": round(done["enable"] - t0, 3),
                  "first_label_reply_s": round(first_labels - t0, 3),
                  "last_label_reply_s": round(last_labels - t0, 3),
                  "masks_while_encoding": masks_between(rec, t0, last_labels),
                  "replies": [r.message[:60] for r in replies]}
        print(json.dumps({"label_encoding": report}))
        # Every request was answered: encoded and in force, or refused as busy (at most 4
        # wait; none was refused here, but a slower machine may see the 4th arrive late),
        # or superseded (one prepared after a later one was swapped in).
        assert all(r.success or "already being encoded" in r.message or "superseded" in r.message
                   for r in replies), report
        assert done["enable"] < first_labels, report
        # ~1.2 s per set at least on this machine, at 10 Hz: the old node published none.
        assert report["masks_while_encoding"] >= 3, report
    finally:
        h.client.destroy_client(labels_client)
        h.client.destroy_client(enable_client)
    assert call(h, SetLabels, "set_labels", SetLabels.Request(labels=["road", "car", "sky"])).success
    serve_one(env)


def test_set_parameters_requests_are_bounded(env):
    """Item 2: 40 `labels` entries of 256 new words in one SetParameters took 47.7 s;
    200,000 cheap entries 14.8 s. Now `labels` is given once per request and a request has
    at most 64 entries: both are refused whole, naming the reason, with one result."""
    h, proc, rec, pub = env
    many_labels = [labels_param(new_words(256, 100 + i)) for i in range(40)]
    reply = call(h, SetParameters, "set_parameters", SetParameters.Request(parameters=many_labels))
    assert len(reply.results) == 1 and not reply.results[0].successful
    assert "labels given 40 times in one request" in reply.results[0].reason
    cheap = ParameterMsg(name="overlay_alpha", value=ParameterValue(
        type=ParameterType.PARAMETER_DOUBLE, double_value=0.5))
    log_at = proc.log_bytes()
    reply = call(h, SetParameters, "set_parameters", SetParameters.Request(parameters=[cheap] * 100_000))
    assert [r.successful for r in reply.results] == [False]
    assert "100000 parameters in one request, at most 64" in reply.results[0].reason
    wait_renewed(proc, log_at, "set_parameters")   # the request was ~5 MB
    reply = call(h, SetParametersAtomically, "set_parameters_atomically",
                 SetParametersAtomically.Request(parameters=[cheap] * 65))
    assert not reply.result.successful and "65 parameters" in reply.result.reason
    # A labels entry inside a request still works, encoded off the executor.
    reply = call(h, SetParameters, "set_parameters",
                 SetParameters.Request(parameters=[labels_param(["road", "car", "sky", "tree"]), cheap]))
    assert [r.successful for r in reply.results] == [True, True], reply.results
    got = call(h, GetParameters, "get_parameters", GetParameters.Request(names=["labels"]))
    assert list(got.values[0].string_array_value) == ["road", "car", "sky", "tree"]
    assert call(h, SetLabels, "set_labels", SetLabels.Request(labels=["road", "car", "sky"])).success
    serve_one(env)


def test_get_parameters_cannot_amplify(env):
    """Item 4: one 0.22 MB request asking for `labels` 20,000 times got a 323 MB reply and
    raised peak RSS by 796 MB. Now at most 128 names per request, each name once, and 1 MB
    per reply; a refused request gets an empty reply (as rclpy answers an unknown name) and a log line."""
    h, proc, rec, pub = env
    assert call(h, SetLabels, "set_labels", SetLabels.Request(labels=new_words(256, 7))).success
    rss0 = proc.rss_mb()
    proc.reset_peak()
    log_at = proc.log_bytes()
    reply = call(h, GetParameters, "get_parameters", GetParameters.Request(names=["labels"] * 20_000))
    assert list(reply.values) == []
    # Probe round 16: under both caps, 50 x 'labels' (607 bytes) still drew 873 KB. A name
    # given twice is now refused; every parameter once is served.
    reply = call(h, GetParameters, "get_parameters", GetParameters.Request(names=["labels"] * 50))
    assert list(reply.values) == []
    every = list(call(h, ListParameters, "list_parameters", ListParameters.Request()).result.names)
    assert "labels" in every and len(every) > 10
    reply = call(h, GetParameters, "get_parameters", GetParameters.Request(names=every))
    assert len(reply.values) == len(every)
    for srv, name in ((DescribeParameters, "describe_parameters"), (GetParameterTypes, "get_parameter_types")):
        for names in (["labels"] * 200_000, ["labels"] * 100, ["labels", "cameras", "labels"]):
            reply = call(h, srv, name, srv.Request(names=names))
            assert not (reply.descriptors if srv is DescribeParameters else reply.types), len(names)
        reply = call(h, srv, name, srv.Request(names=every))
        assert len(reply.descriptors if srv is DescribeParameters else reply.types) == len(every)
    reply = call(h, ListParameters, "list_parameters", ListParameters.Request(prefixes=["x"] * 100_000))
    assert list(reply.result.names) == []
    rise = proc.peak_mb() - rss0
    print(json.dumps({"get_parameters_amplification": {"peak_rss_rise_mb": round(rise, 1)}}))
    assert rise < RSS_RISE_LIMIT_MB, rise
    wait_until(lambda: "20000 names, at most 128" in proc.text_since(log_at), timeout=10,
               what="the refusal in the log")
    assert call(h, SetLabels, "set_labels", SetLabels.Request(labels=["road", "car", "sky"])).success
    serve_one(env)


SERVICE_KEPT_LIMIT_MB = 100   # 16 MB stays after the renewals; 616 MB without them


def test_a_large_request_leaves_no_buffer_behind(env):
    """Issue 20, hostile peers: one describe_parameters request of 100 names x 2 MB, refused
    by its name lengths, kept +215 MB in the node for good, and get_parameter_types then
    +415 MB: Fast DDS's request reader keeps the largest sample it received until it is
    destroyed (README, Troubleshooting, "Oversized samples"). Now a server that got a request
    over 1 MB is destroyed and made again once it has replied (service_renewal), for rclpy's
    parameter services and the node's own. The renewed servers answer as before."""
    h, proc, rec, pub = env
    serve_one(env)
    time.sleep(1.0)
    rss0 = proc.rss_mb()
    log_at = proc.log_bytes()
    big = [f"{j}" + "a" * (2 << 20) for j in range(100)]
    for srv, name in ((DescribeParameters, "describe_parameters"), (GetParameterTypes, "get_parameter_types")):
        reply = call(h, srv, name, srv.Request(names=big))
        assert not (reply.descriptors if srv is DescribeParameters else reply.types)
    reply = call(h, SetParameters, "set_parameters",
                 SetParameters.Request(parameters=[string_param(f"no_such_{j}", big[j]) for j in range(50)]))
    assert [r.successful for r in reply.results] == [False] * 50
    reply = call(h, SetLabels, "set_labels", SetLabels.Request(labels=big[:50]))
    assert not reply.success and "rejected, old set kept" in reply.message
    del big, reply
    renewed = ("describe_parameters", "get_parameter_types", "set_parameters", "set_labels")
    # RSS falls once the last server is renewed (each waits for 0.5 s without requests):
    # polled, not timed; the bound is for the count, not for how fast.
    end, kept = time.monotonic() + 30.0, proc.rss_mb() - rss0
    while kept >= SERVICE_KEPT_LIMIT_MB and time.monotonic() < end:
        time.sleep(0.5)
        kept = proc.rss_mb() - rss0
    log = proc.text_since(log_at)
    print(json.dumps({"large_service_requests": {
        "request_mb": 200, "rss_kept_mb": round(kept, 1),
        "renewed": [n for n in renewed if f"{NODE}/{n}: server renewed" in log]}}))
    assert kept < SERVICE_KEPT_LIMIT_MB, (kept, log[-3000:])
    for name in renewed:
        wait_renewed(proc, log_at, name)
        assert proc.text_since(log_at).count(f"{NODE}/{name}: server renewed") == 1, name
    # The renewed servers serve as before.
    reply = call(h, SetParameters, "set_parameters", SetParameters.Request(parameters=[ParameterMsg(
        name="overlay_alpha", value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=0.25))]))
    assert [r.successful for r in reply.results] == [True], reply.results
    reply = call(h, GetParameters, "get_parameters", GetParameters.Request(names=["overlay_alpha", "labels"]))
    assert reply.values[0].double_value == 0.25
    assert list(reply.values[1].string_array_value) == ["road", "car", "sky"]
    assert [d.name for d in call(h, DescribeParameters, "describe_parameters",
                                 DescribeParameters.Request(names=["labels"])).descriptors] == ["labels"]
    assert list(call(h, GetParameterTypes, "get_parameter_types",
                     GetParameterTypes.Request(names=["labels"])).types) == [ParameterType.PARAMETER_STRING_ARRAY]
    reply = call(h, SetLabels, "set_labels", SetLabels.Request(labels=["road", "car", "sky", "tree"]))
    assert reply.success and [c.class_name for c in reply.class_map] == ["road", "car", "sky", "tree"]
    assert call(h, SetLabels, "set_labels", SetLabels.Request(labels=["road", "car", "sky"])).success
    reply = call(h, SetParameters, "set_parameters", SetParameters.Request(parameters=[ParameterMsg(
        name="overlay_alpha", value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=0.5))]))
    assert reply.results[0].successful
    serve_one(env)


def test_many_requests_just_under_the_renewal_size_leave_no_buffers_behind(env):
    """Probe round 16: the renewal above came only after one request over 1 MB, and rclpy's
    parameter services keep 1,000 unread requests, each with its own buffer: 1,000 requests
    of 1,000,000 bytes to one service kept +570 MB for good. Now those services keep 32, and
    requests over 64 KB that add up to 8 MB renew the server too (service_renewal)."""
    from rclpy.qos import HistoryPolicy
    h, proc, rec, pub = env
    serve_one(env)
    time.sleep(1.0)
    rss0 = proc.rss_mb()
    log_at = proc.log_bytes()
    deep = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
    client = h.client.create_client(GetParameterTypes, f"{NODE}/get_parameter_types", qos_profile=deep)
    try:
        assert client.wait_for_service(timeout_sec=20)
        futures = [client.call_async(GetParameterTypes.Request(names=[f"{j}" + "b" * 900_000]))
                   for j in range(200)]    # 180 MB, none over 1 MB
        wait_renewed(proc, log_at, "get_parameter_types", timeout=60)
        end, kept = time.monotonic() + 30.0, proc.rss_mb() - rss0
        while kept >= 60 and time.monotonic() < end:
            time.sleep(0.5)
            kept = proc.rss_mb() - rss0
        answered = sum(f.done() for f in futures)
        print(json.dumps({"many_requests_under_1mb": {"sent_mb": 180, "rss_kept_mb": round(kept, 1),
                                                       "answered": answered}}))
        assert kept < 60, (kept, proc.text_since(log_at)[-3000:])
    finally:
        h.client.destroy_client(client)
    reply = call(h, GetParameterTypes, "get_parameter_types", GetParameterTypes.Request(names=["labels"]),
                 retry=True)
    assert list(reply.types) == [ParameterType.PARAMETER_STRING_ARRAY]
    serve_one(env)


def test_a_huge_frame_id_is_refused_not_multiplied(env):
    """Item 3: five 2x2 frames with a 16 MB frame_id made the node publish 5 GB (64x) and
    keep 1.5 GB. The frame_id is copied into every output, so one over 256 characters is
    refused before the frame is even kept; no output carries it."""
    h, proc, rec, pub = env
    serve_one(env)
    before = status_counts(rec)
    rss0 = proc.rss_mb()
    proc.reset_peak()
    log_at = proc.log_bytes()
    sent = []
    for i in range(5):
        msg = rgb_msg(np.full((2, 2, 3), 80 + i, np.uint8), frame_id="f" * (16 << 20))
        sent.append(stamp_key(msg.header))
        want = before["frames_rejected"] + i + 1
        # A refused sample over 16 MB renews the subscription (wire.py, to free Fast DDS's
        # buffer); a frame sent while the new one matches is lost on the best-effort link.
        publish_until(pub, msg, lambda _: status_counts(rec)["frames_rejected"] >= want,
                      what=f"frame {i} counted as rejected", proc=proc)
    wait_until(lambda: status_counts(rec)["frames_rejected"] >= before["frames_rejected"] + 5,
               timeout=30, what="five frames rejected")
    # The last refused sample may have renewed the subscription too: a good frame sent while
    # the new one matches is lost the same way, so the node must be serving again within 2 s
    # of a send (a few sends at most) before the next frame is timed against the 1 s target.
    publish_until(pub, lambda: rgb_msg(camvid_frames(1)[0]),
                  lambda m: rec.find_stamp(f"{NODE}/label_mask", stamp_key(m.header)),
                  timeout=2.0, tries=3, what="a good frame served after the refusals", proc=proc)
    serve_one(env)
    rise = proc.peak_mb() - rss0
    print(json.dumps({"frame_id_bomb": {"peak_rss_rise_mb": round(rise, 1),
                                        "end_rss_rise_mb": round(proc.rss_mb() - rss0, 1)}}))
    assert not [m for m in rec.get(f"{NODE}/label_mask") if stamp_key(m.header) in sent]
    assert status_counts(rec)["frames_failed"] == before["frames_failed"]
    assert "longer than 256 characters" in proc.text_since(log_at)
    assert proc.log_bytes() - log_at < 20_000  # the value is cut short in the log
    # The receiving DDS and rclpy buffers hold some of the 16 MB samples; the node itself
    # keeps none of them.
    assert rise < RSS_RISE_LIMIT_MB, rise


def test_what_the_node_loads_is_chosen_at_start_up_only(env):
    """Security: any peer could set checkpoint, engine_cache_dir or model_config and then
    cycle the lifecycle to load a planted file. Those are read-only once the node runs."""
    h, proc, rec, pub = env
    for name in ("checkpoint", "engine_cache_dir", "model_config"):
        before = call(h, GetParameters, "get_parameters", GetParameters.Request(names=[name])).values[0]
        reply = call(h, SetParameters, "set_parameters",
                     SetParameters.Request(parameters=[string_param(name, "/tmp/planted")]))
        assert not reply.results[0].successful
        assert f"{name} is read-only once the node runs" in reply.results[0].reason, reply.results[0].reason
        after = call(h, GetParameters, "get_parameters", GetParameters.Request(names=[name])).values[0]
        assert after == before
    serve_one(env)


def test_use_sim_time_is_chosen_at_start_up_only(env):
    """Probe round 9: any peer could set use_sim_time=true at run time; with no /clock on
    the domain the node's ROS clock stopped, and ~/status and /diagnostics with it, for
    good, while masks kept coming. Refused by name; status keeps coming."""
    h, proc, rec, pub = env
    flip = ParameterMsg(name="use_sim_time", value=ParameterValue(
        type=ParameterType.PARAMETER_BOOL, bool_value=True))
    reply = call(h, SetParameters, "set_parameters", SetParameters.Request(parameters=[flip]))
    assert not reply.results[0].successful
    assert "use_sim_time is set at start-up only" in reply.results[0].reason, reply.results[0].reason
    got = call(h, GetParameters, "get_parameters", GetParameters.Request(names=["use_sim_time"]))
    assert got.values[0].bool_value is False
    status_counts(rec)          # a fresh ~/status after the attempt
    serve_one(env)


def test_requests_cannot_fill_the_log(env):
    """Probe round 9: each accepted entry logged "<name> changed; takes effect at the next
    activate": 100 requests of 64 qos_depth entries wrote 6,400 lines (640 KB in 7 s); each
    refused set_labels, each ~/enable and each label change logged its own lines. Now one
    line per request, and each kind at most once per 5 s with the count held back."""
    h, proc, rec, pub = env
    log_at = proc.log_bytes()
    depth = [ParameterMsg(name="qos_depth", value=ParameterValue(
        type=ParameterType.PARAMETER_INTEGER, integer_value=1 + k % 2)) for k in range(64)]
    for _ in range(20):
        reply = call(h, SetParameters, "set_parameters", SetParameters.Request(parameters=depth),
                     retry=True)
        assert all(r.successful for r in reply.results)
    for k in range(20):
        reply = call(h, SetLabels, "set_labels", SetLabels.Request(labels=["", f"bad {k}"]), retry=True)
        assert not reply.success
    for k in range(20):
        assert call(h, SetBool, "enable", SetBool.Request(data=k % 2 == 1), retry=True).success
    assert call(h, SetBool, "enable", SetBool.Request(data=True), retry=True).success
    text = proc.text_since(log_at)
    assert text.count("taking effect at the next") <= 2, text[-3000:]
    assert text.count("set_labels [") <= 2 and text.count("processing ") <= 2, text[-3000:]
    assert len(text.splitlines()) < 30, text[-3000:]
    serve_one(env)


def test_a_type_hash_rcl_cannot_parse_is_refused_before_rcl_logs_it(env):
    """Probe round 16: ~/get_type_description handed any request to rcl, which logged an
    unparsable type hash whole on every request: 20 requests with a 200 KB hash wrote 4 MB
    to stdout and 4 MB to the log file in 0.11 s. Such a request is now refused first."""
    from type_description_interfaces.srv import GetTypeDescription
    h, proc, rec, pub = env
    info = wait_until(lambda: h.client.get_publishers_info_by_topic(f"{NODE}/label_mask"),
                      timeout=10, what="the label_mask publisher")
    good = GetTypeDescription.Request(type_name="sensor_msgs/msg/Image",
                                      type_hash=str(info[0].topic_type_hash))
    assert good.type_hash.startswith("RIHS01_"), good.type_hash
    log_at = proc.log_bytes()
    for k in range(20):
        reply = call(h, GetTypeDescription, "get_type_description", GetTypeDescription.Request(
            type_name="sensor_msgs/msg/Image", type_hash="RIHS01_" + "ab" * 100_000), retry=True)
        assert not reply.successful and "type_hash" in reply.failure_reason, reply.failure_reason
        assert len(reply.failure_reason) < 200, len(reply.failure_reason)
    reply = call(h, GetTypeDescription, "get_type_description",
                 GetTypeDescription.Request(type_name="x" * 10_000, type_hash=good.type_hash), retry=True)
    assert not reply.successful and "type_name of 10000 characters" in reply.failure_reason
    reply = call(h, GetTypeDescription, "get_type_description", good, retry=True)
    assert reply.successful, reply.failure_reason
    assert reply.type_description.type_description.type_name == "sensor_msgs/msg/Image"
    upper = GetTypeDescription.Request(type_name=good.type_name, type_hash="RIHS01_" + good.type_hash[7:].upper())
    assert call(h, GetTypeDescription, "get_type_description", upper, retry=True).successful
    # Not renewed after a large request: rclpy's C object keeps its server alive, and a
    # renewal left two servers on the name, the old one still taking requests.
    reply = call(h, GetTypeDescription, "get_type_description", GetTypeDescription.Request(
        type_name="sensor_msgs/msg/Image", type_hash="RIHS01_" + "cd" * (1 << 20)), retry=True)
    assert not reply.successful
    time.sleep(2.0)   # past the renewal's quiet time, had there been one
    assert h.client.count_services(f"{NODE}/get_type_description") == 1
    assert call(h, GetTypeDescription, "get_type_description", good, retry=True).successful
    text = proc.text_since(log_at)
    assert len(text) < 5_000 and "abab" * 20 not in text, (len(text), text[-2000:])
    serve_one(env)


def test_one_pixel_frames_get_every_output(env):
    """Item 11: OpenCV took a 1x1 mask for a scalar, so a 1x1 frame lost its overlay and
    class masks half way, counted as failed with a traceback in the log."""
    h, proc, rec, pub = env
    topics = [f"{NODE}/overlay", f"{NODE}/color_mask", f"{NODE}/class/road/mask"]
    for t in topics:
        rec.listen(t)
    try:
        for t in topics:
            rec.wait_matched(t)
        before = status_counts(rec)
        log_at = proc.log_bytes()
        msg = rgb_msg(np.full((1, 1, 3), 128, np.uint8))
        pub.publish(msg)
        for t in topics:
            out = rec.wait_stamp(t, stamp_key(msg.header), timeout=15)
            assert (out.width, out.height) == (1, 1)
        assert status_counts(rec)["frames_failed"] == before["frames_failed"]
        assert "Traceback" not in proc.text_since(log_at)
    finally:
        for t in topics:
            rec.stop(t)


def test_zero_and_backwards_stamps_are_logged(env):
    """Item 13: frames stamped 0, or earlier than the frame before, were served silently,
    although masks of two label sets then look alike to a consumer matching by stamp."""
    h, proc, rec, pub = env
    serve_one(env)
    log_at = proc.log_bytes()
    zero = rgb_msg(camvid_frames(1)[0])
    zero.header.stamp.sec, zero.header.stamp.nanosec = 0, 0
    pub.publish(zero)
    wait_until(lambda: "header.stamp is 0" in proc.text_since(log_at), timeout=10, what="zero stamp warning")
    late = rgb_msg(camvid_frames(1)[0])
    serve_one(env)
    pub.publish(late)  # its stamp is older than serve_one's frame
    wait_until(lambda: "header.stamp went back" in proc.text_since(log_at), timeout=10,
               what="backwards stamp warning")
    serve_one(env)


def test_a_stamp_with_a_second_or_more_of_nanoseconds_is_refused(env):
    """Probe round 17: nanosec takes any uint32, and (s, 4,294,967,295 ns) is s + 4.29 s;
    the node copied it to every output, and the next label_info, stamped by field order
    after it, lay seconds before it in time. Refused now, naming the field; the node goes on."""
    h, proc, rec, pub = env
    serve_one(env)
    before = status_counts(rec)
    log_at = proc.log_bytes()
    bad = rgb_msg(camvid_frames(1)[0])
    bad.header.stamp.nanosec = 2**32 - 1
    pub.publish(bad)
    wait_until(lambda: "header.stamp.nanosec=4294967295 is not below" in proc.text_since(log_at),
               timeout=10, what="nanosec refusal")
    serve_one(env)
    assert status_counts(rec)["frames_rejected"] > before["frames_rejected"]


def test_a_label_change_after_the_last_stamp_a_time_holds_is_not_stamped_negative(env):
    """Probe round 10: a label change is announced 1 ns after the newest mask when that is
    ahead of the node's clock; after a frame stamped 2**31 - 1 s + 999999999 ns that
    successor overflowed, and label_info went out stamped -2**31 s, before every mask. It
    is stamped with the newest mask's own stamp now (nothing later exists)."""
    h, proc, rec, pub = env
    topic = f"{NODE}/label_info"
    rec.listen(topic, LabelInfo, LATCHED)
    try:
        last = rgb_msg(camvid_frames(1)[0])
        last.header.stamp.sec, last.header.stamp.nanosec = 2**31 - 1, 999_999_999
        publish_until(pub, last, lambda m: rec.find_stamp(f"{NODE}/label_mask", stamp_key(m.header)),
                      proc=proc)
        at = time.monotonic()
        assert call(h, SetLabels, "set_labels", SetLabels.Request(labels=["road", "car", "tree"])).success

        def announced():
            with rec.cond:
                return [m for t, m in rec.msgs[topic] if t > at and not m.header.frame_id]
        info = rec.wait_for(announced, timeout=10, what="the change's label_info")[-1]
        assert stamp_key(info.header) == (2**31 - 1, 999_999_999), info.header
    finally:
        rec.stop(topic)
        assert call(h, SetLabels, "set_labels", SetLabels.Request(labels=["road", "car", "sky"])).success
    serve_one(env)


def test_a_long_transition_label_is_refused_and_not_logged_whole(env):
    """Probe round 4: ~/change_state with a 1,000,000-character transition label was logged
    whole by rcl_lifecycle, once per request (5 requests: 5 MB of log). Now a label over 64
    characters is refused before rcl sees it, shown at most 40 characters, throttled."""
    h, proc, rec, pub = env
    serve_one(env)
    log_at = proc.log_bytes()
    for _ in range(5):
        resp = call(h, ChangeState, "change_state",
                    ChangeState.Request(transition=Transition(id=0, label="x" * 1_000_000)))
        assert not resp.success
    # A short unknown label is refused too (since probe round 10 before rcl_lifecycle).
    assert not call(h, ChangeState, "change_state",
                    ChangeState.Request(transition=Transition(id=0, label="no_such_transition"))).success
    time.sleep(0.5)
    text = proc.text_since(log_at)
    assert "transition label 'xxxx" in text and "(1000000 characters) refused" in text, text[-2000:]
    assert len(text) < 4000, len(text)
    serve_one(env)
    # And the lifecycle still works by label.
    for label in ("deactivate", "activate"):
        assert call(h, ChangeState, "change_state",
                    ChangeState.Request(transition=Transition(id=0, label=label))).success
    serve_one(env, deadline=5.0)


def test_transitions_the_state_does_not_have_are_refused_in_one_line(env):
    """Probe round 10: a ~/change_state request for a transition the current state does not
    have (an unknown id, `activate` while active, a short unknown label) cost two log lines,
    rcl_lifecycle's "No transition matching ..." and rclpy's "Unable to start transition
    ...": 3,870 such requests (128 KB) in 5 s wrote 767 KB of log. Now they are refused
    before rcl_lifecycle, one line per 5 s naming the transitions that are available."""
    h, proc, rec, pub = env
    serve_one(env)
    client = h.client.create_client(ChangeState, f"{NODE}/change_state")
    try:
        assert client.wait_for_service(10)
        log_at = proc.log_bytes()
        requests = [Transition(id=250), Transition(id=Transition.TRANSITION_ACTIVATE),
                    Transition(id=Transition.TRANSITION_CONFIGURE), Transition(id=0, label="nope")]
        for i in range(200):
            assert not h.call(client, ChangeState.Request(transition=requests[i % 4]), retry=False).success
        time.sleep(0.5)
        text = proc.text_since(log_at)
        lines = text.splitlines()
        assert not [ln for ln in lines if "No transition matching" in ln or "Unable to start" in ln], text[-2000:]
        refusals = [ln for ln in lines if "~/change_state: transition" in ln]
        assert len(refusals) <= 2, refusals
        assert len(text) < 4000, len(text)
        # (the line may have come within the 5 s before, from the test above)
        assert "not available from state 'active' (available: deactivate (4), shutdown (7))" in proc.text()
    finally:
        h.client.destroy_client(client)
    _reactivate(h)                     # the transitions the state has still work, by id
    serve_one(env, deadline=5.0)


def test_an_oversized_camera_info_is_refused_not_republished(env):
    """Probe round 4: CameraInfo was neither size-checked nor released; one with an 80 MB D
    array raised peak RSS by 336 MB, kept 160 MB, and was republished whole. Now it is taken
    serialized and passed through as received only up to MAX_CAMERA_INFO_BYTES."""
    h, proc, rec, pub = env
    info_topic, out = f"{NS}/camera/camera_info", f"{NODE}/camera_info"
    rec.listen(out, CameraInfo)
    rec.wait_matched(out)
    info_pub = h.client.create_publisher(CameraInfo, info_topic, RELIABLE)
    try:
        wait_until(lambda: info_pub.get_subscription_count() > 0, timeout=15, what="camera_info subscription")

        def info(d_len: int) -> CameraInfo:
            msg = CameraInfo(width=120, height=90, distortion_model="plumb_bob", d=[0.5] * d_len)
            msg.header.frame_id, msg.header.stamp.sec = "camera", int(time.time())
            msg.header.stamp.nanosec = random.randrange(10**9)
            return msg

        log_at = proc.log_bytes()
        publish_until(info_pub, lambda: info(1 << 17),      # 1 MB of coefficients
                      lambda m: f"skipped camera_info: {len(serialize_message(m))} bytes, more than "
                                f"{MAX_CAMERA_INFO_BYTES}" in proc.text_since(log_at),
                      what="the oversized camera_info to be refused", proc=proc)
        good = publish_until(info_pub, lambda: info(5),
                             lambda m: rec.find_stamp(out, stamp_key(m.header)), proc=proc)
        assert list(good.d) == [0.5] * 5 and good.distortion_model == "plumb_bob"
        with rec.cond:
            assert max(len(m.d) for _, m in rec.msgs[out]) == 5     # the big one never went out
        serve_one(env)
    finally:
        h.client.destroy_publisher(info_pub)


def test_a_malformed_camera_info_is_refused_not_relayed(env):
    """Probe round 10: CameraInfo is passed on as the bytes received, and nothing checked
    that they were a CameraInfo: 64 bytes of garbage, and a real one cut to 40 bytes, went
    out on ~/camera_info to every consumer. Now each field is read from the serialized
    sample before it is passed on; a bad one is refused naming the field, a good one still
    goes out byte for byte."""
    h, proc, rec, pub = env
    info_topic, out = f"{NS}/camera/camera_info", f"{NODE}/camera_info"
    relayed: list[bytes] = []
    sub = h.client.create_subscription(CameraInfo, out, relayed.append, RELIABLE, raw=True)
    info_pub = h.client.create_publisher(CameraInfo, info_topic, RELIABLE)
    try:
        wait_until(lambda: info_pub.get_subscription_count() > 0 and sub.get_publisher_count() > 0,
                   timeout=15, what="camera_info links")
        good = CameraInfo(width=120, height=90, distortion_model="plumb_bob", d=[0.5] * 5)
        good.header.frame_id = "camera"
        bad = {"header.frame_id": b"\x00\x01\x00\x00" + bytes(8) + b"\xff" * 52,
               "header.stamp.nanosec=4294967295": b"\x00\x01\x00\x00" + b"\xff" * 60,
               "truncated or corrupt": serialize_message(good)[:40]}
        for why, raw in bad.items():
            log_at = proc.log_bytes()
            publish_until(info_pub, raw, lambda _: "skipped camera_info" in proc.text_since(log_at),
                          what=f"the camera_info ({why}) to be refused", proc=proc)
            assert why in proc.text_since(log_at), proc.text_since(log_at)[-2000:]

        def fresh() -> bytes:
            good.header.stamp.nanosec = random.randrange(10**9)
            return serialize_message(good)
        def went_out(raw: bytes) -> bool:   # the writer may pad the sample to 4 bytes
            return any(got[:len(raw)] == raw for got in list(relayed))
        publish_until(info_pub, fresh, went_out, what="a good camera_info relayed", proc=proc)
        assert not any(went_out(raw) for raw in bad.values())
        serve_one(env)
    finally:
        h.client.destroy_publisher(info_pub)
        h.client.destroy_subscription(sub)


def test_max_image_pixels_cannot_be_raised_above_its_start_up_value(env):
    """Audit round 19: max_image_pixels applied at once, and every size bound scales with it
    (pixels, compressed bytes, the class-mask budget): a peer's raise to 8K let one 525 KB
    JPEG of 8192x4096 make 643 MB of output and hold 937 MB. A peer may lower it or restore
    it; only the operator's start-up value can raise it."""
    h = env[0]
    int_value = lambda v: ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)  # noqa: E731

    def set_max_pixels(v: int):
        return call(h, SetParameters, "set_parameters", SetParameters.Request(
            parameters=[ParameterMsg(name="max_image_pixels", value=int_value(v))])).results[0]

    refused = set_max_pixels(DEFAULT_MAX_IMAGE_PIXELS + 1)
    assert not refused.successful
    assert (f"max_image_pixels={DEFAULT_MAX_IMAGE_PIXELS + 1}: above the "
            f"{DEFAULT_MAX_IMAGE_PIXELS} this node was started with") in refused.reason
    assert not set_max_pixels(33554432).successful
    try:
        assert set_max_pixels(640 * 480).successful            # lowered
    finally:
        assert set_max_pixels(DEFAULT_MAX_IMAGE_PIXELS).successful   # and restored
    serve_one(env)


def test_class_masks_per_frame_are_bounded(env):
    """Probe round 4: every subscribed class topic gets a full-resolution mask, so 256 labels
    with a subscriber each made one 2048x2048 frame (from a 66 KB JPEG) publish a gigabyte.
    Now class masks stop at CLASS_MASK_BUDGET_PIXELS x max_image_pixels pixels per frame,
    in id order, with a logged reason and a ~/status counter."""
    h, proc, rec, pub = env
    labels = [f"thing {i}" for i in range(20)]
    pixels = FRAME_HW[0] * FRAME_HW[1]
    topics = [f"{NODE}/class/{t}/mask" for t in topic_tokens(labels)]
    int_value = lambda v: ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)  # noqa: E731

    def set_max_pixels(v: int) -> None:
        assert call(h, SetParameters, "set_parameters", SetParameters.Request(
            parameters=[ParameterMsg(name="max_image_pixels", value=int_value(v))])).results[0].successful

    assert call(h, SetLabels, "set_labels", SetLabels.Request(labels=labels)).success
    try:
        set_max_pixels(pixels)                  # budget: CLASS_MASK_BUDGET_PIXELS full masks
        for topic in topics:
            rec.listen(topic)
        for topic in topics:
            rec.wait_matched(topic)
        log_at = proc.log_bytes()
        frame = publish_until(pub, lambda: rgb_msg(camvid_frames(1)[0]),
                              lambda m: rec.find_stamp(topics[0], stamp_key(m.header)), proc=proc)
        time.sleep(1.0)
        got = [t for t in topics if rec.find_stamp(t, stamp_key(frame.header))]
        assert got == topics[:CLASS_MASK_BUDGET_PIXELS], got
        assert (f"{len(topics) - CLASS_MASK_BUDGET_PIXELS} subscribed class masks not published"
                in proc.text_since(log_at)), proc.text_since(log_at)[-2000:]
    finally:
        set_max_pixels(DEFAULT_MAX_IMAGE_PIXELS)
        assert call(h, SetLabels, "set_labels", SetLabels.Request(labels=["road", "car", "sky"])).success
    serve_one(env)


def _reactivate(h) -> None:
    for tid in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_ACTIVATE):
        assert call(h, ChangeState, "change_state", ChangeState.Request(transition=Transition(id=tid))).success


def test_incompatible_qos_warnings_are_throttled(env):
    """Item 15: with qos_reliability=reliable, 200 best-effort publishers coming and going
    wrote 200 warning lines (57 KB). Now one line per topic per 5 s, with a count."""
    h, proc, rec, pub = env
    value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="reliable")
    assert call(h, SetParameters, "set_parameters", SetParameters.Request(
        parameters=[ParameterMsg(name="qos_reliability", value=value)])).results[0].successful
    _reactivate(h)
    try:
        wait_until(lambda: pub.get_subscription_count() > 0, timeout=15, what="reliable subscription")
        log_at = proc.log_bytes()
        info_topic = CAMERA.rsplit("/", 1)[0] + "/camera_info"
        for _ in range(60):
            p = h.client.create_publisher(Image, CAMERA, qos_profile_sensor_data)
            # probe round 10: camera_info's subscription kept rclpy's default handler, a
            # line per publisher ("New publisher discovered ... offering incompatible QoS")
            q = h.client.create_publisher(CameraInfo, info_topic, qos_profile_sensor_data)
            time.sleep(0.02)
            h.client.destroy_publisher(p)
            h.client.destroy_publisher(q)
        time.sleep(1.0)
        text = proc.text_since(log_at)
        lines = [ln for ln in text.splitlines() if "QoS incompatible" in ln and CAMERA + " " in ln]
        info_lines = [ln for ln in text.splitlines() if "incompatible" in ln and "camera_info" in ln]
        print(json.dumps({"incompatible_qos_lines": len(lines), "camera_info_lines": len(info_lines)}))
        assert 1 <= len(lines) <= 3, lines
        assert 1 <= len(info_lines) <= 3, info_lines
    finally:
        value.string_value = "best_effort"  # the default
        assert call(h, SetParameters, "set_parameters", SetParameters.Request(
            parameters=[ParameterMsg(name="qos_reliability", value=value)])).results[0].successful
        _reactivate(h)
        wait_until(lambda: pub.get_subscription_count() > 0, timeout=15, what="subscription")
    serve_one(env)


def test_incompatible_subscribers_to_outputs_are_reported_once(env):
    """Probe round 10: rclpy's default handler logged a line for every subscriber asking an
    output for a QoS it does not offer: 200 transient_local subscribers to ~/label_mask, made
    and dropped in 4 s, wrote 200 lines (40 KB) to the node's log; /parameter_events did the
    same. Now one line per topic per 5 s, naming the topic and the policy."""
    h, proc, rec, pub = env
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    quiet = SubscriptionEventCallbacks(use_default_callbacks=False)  # this side's own warning
    topics = ((Image, f"{NODE}/label_mask"), (ParameterEvent, "/parameter_events"))
    log_at = proc.log_bytes()
    for _ in range(40):
        for msg_type, topic in topics:
            sub = h.client.create_subscription(msg_type, topic, lambda m: None, latched,
                                               event_callbacks=quiet)
            time.sleep(0.02)
            h.client.destroy_subscription(sub)
    time.sleep(1.0)
    text = proc.text_since(log_at)
    lines = [ln for ln in text.splitlines() if "incompatible QoS" in ln or "asks for QoS" in ln]
    per_topic = {t: [ln for ln in lines if t.rsplit("/", 1)[1] in ln] for _, t in topics}
    print(json.dumps({"output_incompatible_qos_lines": {t: len(v) for t, v in per_topic.items()}}))
    for topic, found in per_topic.items():
        assert 1 <= len(found) <= 2, (topic, len(found), found[:3])
    assert all("DURABILITY" in ln for ln in lines), lines
    serve_one(env)


def test_a_sim_time_clock_cannot_drive_the_status_rate(tiny_checkpoint):
    """Probe round 10: with use_sim_time the status timer ran on ROS time, so every /clock
    message a period ahead of the last fired it: 1,921 /clock messages (12 bytes each) in 3 s
    made 1,431 ~/status and 1,431 /diagnostics (1.3 KB each), and with no /clock at all there
    was no status. The node's timers run on the steady clock now."""
    ns = "/hostile3_sim"
    status = f"{ns}/lgseg_node/status"
    with serving_node(ns, f"{ns}/camera/image_raw",
                      tiny_torch_args(tiny_checkpoint, "-p", "use_sim_time:=true"), env=node_env()) as parts:
        h, proc, rec, pub = parts

        def statuses_since(t: float) -> int:
            with rec.cond:
                return sum(1 for at, _ in rec.msgs[status] if at > t)
        t0 = time.monotonic()
        wait_until(lambda: statuses_since(t0) >= 2, timeout=10, what="~/status with no /clock")
        clock = h.client.create_publisher(Clock, "/clock", RELIABLE)
        wait_until(lambda: clock.get_subscription_count() > 0, timeout=15, what="the node's /clock")
        t1, sent = time.monotonic(), 0
        while time.monotonic() - t1 < 2.0:
            msg = Clock()
            msg.clock.sec = 1000 + sent          # each one 5 status periods (0.2 s) ahead
            clock.publish(msg)
            sent += 1
            time.sleep(0.002)
        time.sleep(0.5)
        took = time.monotonic() - t1
        got = statuses_since(t1)
        print(json.dumps({"sim_clock": {"clock_messages": sent, "status_messages": got,
                                        "seconds": round(took, 2)}}))
        assert got <= took / 0.2 + 3, (sent, got, took)
        h.client.destroy_publisher(clock)
        frame = camvid_frames(1)[0]
        publish_until(pub, lambda: rgb_msg(frame),
                      lambda m: rec.find_stamp(f"{ns}/lgseg_node/label_mask", stamp_key(m.header)), proc=proc)


def test_a_sim_time_clock_past_the_last_time_cannot_stamp_outputs_negative(tiny_checkpoint):
    """Probe round 11: with use_sim_time, a /clock of seconds 2**31 - 1 and nanosec
    4,294,967,295 (the field takes any uint32) put the node's clock 4 s past the last
    instant a Time holds; rclpy's to_msg() gave 2**31 + 3 seconds, which went out as
    -2**31 + 3: a label change's label_info and every ~/status were stamped before every
    mask. Stamps from the node's clock now stop at that last instant."""
    ns = "/hostile3_simmax"
    node = f"{ns}/lgseg_node"
    with serving_node(ns, f"{ns}/camera/image_raw",
                      tiny_torch_args(tiny_checkpoint, "-p", "use_sim_time:=true"), env=node_env()) as parts:
        h, proc, rec, pub = parts
        rec.listen(f"{node}/label_info", LabelInfo, LATCHED)
        clock = h.client.create_publisher(Clock, "/clock", RELIABLE)
        wait_until(lambda: clock.get_subscription_count() > 0, timeout=15, what="the node's /clock")
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = 2**31 - 1, 2**32 - 1
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            clock.publish(msg)
            time.sleep(0.01)
        infos_before = len(rec.get(f"{node}/label_info"))
        client = h.client.create_client(SetLabels, f"{node}/set_labels")
        reply = h.call(client, SetLabels.Request(labels=["road", "car"]), retry=False)
        assert reply.success, reply.message
        rec.wait_for(lambda: len(rec.get(f"{node}/label_info")) > infos_before, timeout=10,
                     what="the change's label_info")
        t1 = time.monotonic()
        rec.wait_for(lambda: sum(1 for at, _ in rec.msgs[f"{node}/status"] if at > t1) >= 2,
                     timeout=10, what="two ~/status")
        with rec.cond:
            statuses = [m.header.stamp for at, m in rec.msgs[f"{node}/status"] if at > t1]
        info = rec.get(f"{node}/label_info")[-1].header.stamp
        stamps = [(s.sec, s.nanosec) for s in (info, *statuses)]
        print(json.dumps({"sim_clock_past_time_max": stamps[:3]}))
        assert all(st == (2**31 - 1, 999_999_999) for st in stamps), stamps
        frame = camvid_frames(1)[0]
        publish_until(pub, lambda: rgb_msg(frame),
                      lambda m: rec.find_stamp(f"{node}/label_mask", stamp_key(m.header)), proc=proc)


def test_a_hangup_stops_the_node_and_user_signals_are_ignored(tiny_checkpoint):
    """Probe round 10: SIGHUP (what a closed terminal or ssh session sends) killed the node
    by the signal (exit -1, no orderly leave of the graph), and so did SIGUSR1, SIGUSR2 and
    SIGALRM (-10, -12, -14); probe round 14 found the rest of the class (SIGVTALRM -26,
    SIGPROF -27, SIGRTMIN -34). Every signal whose default would end the node and that means
    nothing to it is now ignored with one line each; SIGHUP stops the node as SIGTERM does:
    one line, exit 0."""
    from lgseg_ros.ros.node_main import IGNORED_SIGNALS, signal_name
    ns = "/hostile3_hup"
    ignored = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGVTALRM, signal.SIGPROF,
               signal.SIGIO, signal.SIGPWR, signal.SIGRTMIN, signal.SIGRTMIN + 3, signal.SIGRTMAX)
    assert set(ignored) <= set(IGNORED_SIGNALS)
    with serving_node(ns, f"{ns}/camera/image_raw", tiny_torch_args(tiny_checkpoint), env=node_env()) as parts:
        h, proc, rec, pub = parts
        for sig in ignored * 2:
            proc.proc.send_signal(sig)
            time.sleep(0.2)
        assert proc.alive(), (proc.proc.returncode, proc.text()[-3000:])
        frame = camvid_frames(1)[0]
        publish_until(pub, lambda: rgb_msg(frame),
                      lambda m: rec.find_stamp(f"{ns}/lgseg_node/label_mask", stamp_key(m.header)), proc=proc)
        text = proc.text()
        for sig in ignored:
            assert text.count(f"{signal_name(sig)} ignored") == 1, (signal_name(sig), text[-3000:])
        proc.proc.send_signal(signal.SIGHUP)
        rc = proc.wait(30)
        text = proc.text()
        assert rc == 0, (rc, text[-3000:])
        assert "stopped by SIGHUP" in text and "Traceback" not in text, text[-3000:]


# --- fuzz of parameter and service requests -----------------------------------------------

FUZZ_REQUESTS = 60
FUZZ_SECONDS = 60.0
_NAMES = ["labels", "cameras", "overlay_alpha", "checkpoint", "engine_cache_dir", "qos_depth",
          "max_image_pixels", "colormap", "nope", "", "x" * 5000, "use_sim_time"]


def _fuzz_text(rng: np.random.Generator) -> str:
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return "y" * int(rng.integers(0, 200_000))
    if kind == 1:
        return "".join(chr(int(c)) for c in rng.integers(1, 0x2FFF, int(rng.integers(1, 30))))
    return str(rng.choice(_NAMES))


def _fuzz_value(rng: np.random.Generator) -> ParameterValue:
    v = ParameterValue(type=int(rng.choice([1, 2, 3, 4, 5, 9, 99])))
    v.integer_value = int(rng.choice([0, 1, 64, 2 ** 62]))
    v.double_value = float(rng.choice([0.0, 0.5, 1e300, float("nan")]))
    v.string_value = _fuzz_text(rng)
    v.string_array_value = [_fuzz_text(rng)[:2000] for _ in range(int(rng.choice([0, 1, 3, 300])))]
    return v


def _fuzz_request(rng: np.random.Generator):
    n = int(rng.choice([0, 1, 5, 64, 65, 129, 3000]))
    kind = int(rng.integers(0, 6))
    if kind == 0:
        return SetParameters, "set_parameters", SetParameters.Request(
            parameters=[ParameterMsg(name=_fuzz_text(rng)[:5000], value=_fuzz_value(rng)) for _ in range(min(n, 300))])
    if kind == 1:
        return SetParametersAtomically, "set_parameters_atomically", SetParametersAtomically.Request(
            parameters=[ParameterMsg(name=str(rng.choice(_NAMES)), value=_fuzz_value(rng)) for _ in range(min(n, 80))])
    names = [_fuzz_text(rng)[:3000] if rng.random() < 0.2 else str(rng.choice(_NAMES)) for _ in range(n)]
    if kind == 2:
        return GetParameters, "get_parameters", GetParameters.Request(names=names)
    if kind == 3:
        return DescribeParameters, "describe_parameters", DescribeParameters.Request(names=names)
    if kind == 4:
        return ListParameters, "list_parameters", ListParameters.Request(prefixes=names, depth=int(rng.integers(0, 5)))
    labels = [_fuzz_text(rng)[:1100] for _ in range(int(rng.choice([0, 1, 3, 256, 257])))]
    return SetLabels, "set_labels", SetLabels.Request(labels=labels)


def test_fuzz_parameter_and_service_requests(env):
    """Bounded fuzz (count and time) of every request a peer can send: set / atomic set /
    get / describe / list parameters and set_labels, with entry and name counts around the
    caps (0 to 3,000), strings up to 200,000 characters and unknown value types. Each gets a
    reply; after all of them the process lives, ~/enable answers, the next good frame is
    served, and peak RSS rose less than 300 MB. LGSEG_FUZZ_SEED picks another sequence."""
    h, proc, rec, pub = env
    rng = np.random.default_rng(int(os.environ.get("LGSEG_FUZZ_SEED", "20")))
    rss0 = proc.rss_mb()
    proc.reset_peak()
    log_at = proc.log_bytes()
    end = time.monotonic() + FUZZ_SECONDS
    kinds: dict[str, int] = {}
    for _ in range(FUZZ_REQUESTS):
        if time.monotonic() > end:
            break
        srv, name, req = _fuzz_request(rng)
        # Sent again if unanswered after 5 s: a request over 1 MB renews its server, and a
        # request that reaches the old server as it goes gets no reply (service_renewal).
        call(h, srv, name, req, timeout=60, retry=True)
        kinds[name] = kinds.get(name, 0) + 1
        assert proc.alive(), proc.text()[-3000:]
    assert call(h, SetBool, "enable", SetBool.Request(data=True), retry=True).success
    assert call(h, SetLabels, "set_labels", SetLabels.Request(labels=["road", "car", "sky"]), retry=True).success
    value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=4194304)
    call(h, SetParameters, "set_parameters", SetParameters.Request(
        parameters=[ParameterMsg(name="max_image_pixels", value=value)]), retry=True)
    took = serve_one(env)
    rise = proc.peak_mb() - rss0
    report = {"requests": kinds, "peak_rss_rise_mb": round(rise, 1), "next_frame_s": round(took, 3),
              "log_bytes": proc.log_bytes() - log_at}
    print(json.dumps({"request_fuzz": report}))
    assert sum(kinds.values()) >= 20, report
    assert rise < RSS_RISE_LIMIT_MB, report
    assert report["log_bytes"] < 2_000_000, report  # every value a peer sent is cut short


# --- process-level: signals and security (own processes) -----------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_during_start_up_is_not_a_failure(tiny_checkpoint, sig):
    """Item 10: after SIGTERM, configure ran on for seconds and the node exited 1 with
    "FATAL: autostart: the node did not reach active"; SIGINT printed a traceback and exited
    -2. Now it stops at once with one line and exit 0. The signal is sent once the process
    has started loading (its first log line), i.e. during start-up."""
    proc = NodeProcess(["-r", "__ns:=/hostile3_sig", "-p", f"checkpoint:={tiny_checkpoint}",
                        "-p", "backend:=onnxruntime", "-p", "device:=cpu"], env=node_env())
    try:
        wait_until(lambda: proc.log_bytes() > 0 or not proc.alive(), timeout=120, what="start-up")
        proc.proc.send_signal(sig)
        rc = proc.wait(60)
        text = proc.text()
        assert rc == 0, (rc, text[-3000:])
        assert "Traceback" not in text and "FATAL" not in text, text[-3000:]
        assert f"stopped by {sig.name}" in text, text[-3000:]
    finally:
        proc.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_while_the_process_imports_is_not_a_failure(sig):
    """Probe round 5: 0.3 s after spawn, before the node's handlers existed (the imports of
    rclpy, numpy and OpenCV take about a second), SIGINT gave a KeyboardInterrupt traceback
    and exit -2, SIGTERM exit -15. The handlers now come before those imports."""
    proc = NodeProcess(["-r", "__ns:=/hostile3_early"], env=node_env())
    try:
        # Once the node's handlers exist (SIGTERM caught, /proc/PID/status): a signal before
        # the interpreter runs any of the node's code gets Python's defaults, which no
        # program can change. Under load 0.3 s after spawn was sometimes before that.
        wait_until(lambda: _catches(proc.proc.pid, signal.SIGTERM), timeout=30,
                   what="the node's signal handlers", period=0.002)
        time.sleep(0.2)
        proc.proc.send_signal(sig)
        rc = proc.wait(60)
        text = proc.text()
        assert rc == 0, (rc, text[-3000:])
        assert "Traceback" not in text, text[-3000:]
        assert f"stopped by {sig.name}" in text, text[-3000:]
    finally:
        proc.stop()


def _catches(pid: int, sig: signal.Signals) -> bool:
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(caught >> (sig - 1) & 1)


def test_a_stop_that_an_import_turns_into_its_own_error_is_still_a_stop():
    """Probe, this release: SIGTERM/SIGINT 0.23-0.25 s after spawn landed inside numpy's C
    extension import, which re-raises what it catches as "ImportError: initialization
    failed": exit 1 with a traceback, 2 of 40 stops. A stop already received wins over the
    error it caused. Here an import wrapper stands for numpy's."""
    code = ("import signal, sys\n"
            "from lgseg_ros.ros import node_main as m\n"
            "def run(argv):\n"
            "    try:\n"
            "        m._stop_requested(signal.SIGTERM, None)\n"
            "    except KeyboardInterrupt as e:\n"
            "        raise ImportError('initialization failed') from e\n"
            "m._run = run\n"
            "sys.exit(m.main([]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "stopped by SIGTERM during start-up" in out.stderr and "Traceback" not in out.stderr


def test_a_stop_swallowed_by_an_ignoring_callback_is_not_lost():
    """A CI-like run: SIGTERM 0.3 s after spawn raised inside importlib's module-lock
    weakref callback, where Python ignores exceptions; the node then started and ran on.
    The stop is kept as well as raised, and start-up checks it."""
    code = ("import gc, signal, sys, weakref\n"
            "from lgseg_ros.ros import node_main as m\n"
            "sys.unraisablehook = m._quiet_stop_hook(sys.unraisablehook)\n"
            "class T: pass\n"
            "t = T()\n"
            "r = weakref.ref(t, lambda _: m._stop_requested(signal.SIGTERM, None))\n"
            "del t; gc.collect()\n"
            "print('swallowed')\n"
            "try:\n    m._check_stop()\nexcept m.StopRequested as e:\n    print('kept', e.args[0])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["swallowed", "kept", "SIGTERM"], out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr


def test_more_stop_signals_while_the_process_ends_do_not_kill_it(tiny_checkpoint):
    """Probe round 16: after the first SIGINT, main put back the default handlers before
    the interpreter's teardown (about a second with torch loaded), so a second SIGINT or a
    SIGTERM then killed the node by that signal (exit -2 / -15): what `ros2 launch` reports
    as a died process when the terminal and launch both pass on a Ctrl-C. Also while the
    cleanup waits for a label encoding."""
    ns = "/hostile3_twostops"
    with serving_node(ns, f"{ns}/cam", tiny_torch_args(tiny_checkpoint), env=node_env()) as (h, proc, rec, pub):
        # An encoding in flight, so that cleanup waits for it (up to 1 s) while more stops
        # come: the review of this fix found a second stop there ended the process with -6.
        client = h.client.create_client(SetLabels, f"{ns}/lgseg_node/set_labels")
        assert client.wait_for_service(10)
        client.call_async(SetLabels.Request(labels=[w + " zq" for w in new_words(256, 16)]))
        time.sleep(0.5)
        proc.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        sent = 0
        while proc.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.03)
            try:
                proc.proc.send_signal((signal.SIGINT, signal.SIGTERM)[sent % 2])
                sent += 1
            except ProcessLookupError:
                break
        rc = proc.wait(30)
        assert sent >= 2, sent   # it was still ending when the others came
        assert rc == 0, (rc, sent, proc.text()[-3000:])
        assert "Traceback" not in proc.text(), proc.text()[-3000:]


def test_a_stop_while_label_sets_wait_ends_the_process_promptly(tiny_checkpoint):
    """Probe round 5: four queued sets of 256 long new words held a stop for 5-7 s (the label
    worker ran every queued encoding first), past ros2 launch's 5 s before it escalates to
    SIGTERM, so the node died by signal. Now waiting encodings are cancelled and the running
    one gets at most 1 s."""
    ns = "/hostile3_stopenc"
    with serving_node(ns, f"{ns}/cam", tiny_torch_args(tiny_checkpoint), env=node_env()) as (h, proc, rec, pub):
        client = h.client.create_client(SetLabels, f"{ns}/lgseg_node/set_labels")
        assert client.wait_for_service(10)
        rng = random.Random(5)
        for k in range(4):
            words = [f"q{k}z{i} " + " ".join("".join(rng.choice("qxzjkvwy") for _ in range(3)) for _ in range(14))
                     for i in range(256)]
            client.call_async(SetLabels.Request(labels=[w[:64] for w in words]))
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.proc.send_signal(signal.SIGINT)
        rc = proc.wait(30)
        took = time.monotonic() - t0
        print(json.dumps({"stop_with_label_sets_waiting": {"exit": rc, "seconds": round(took, 2)}}))
        assert rc == 0, (rc, proc.text()[-3000:])
        assert took < 5.0, took         # ros2 launch's grace period
        assert "Traceback" not in proc.text(), proc.text()[-3000:]


def test_rcl_init_failures_are_one_line(tmp_path):
    """Probe round 5: an unwritable ROS log directory or a params file rcl cannot read made
    rclpy.init raise out of `lgseg node` (a 22-line traceback, exit 1). Now one line, exit 2."""
    cases = {"log dir": ({"ROS_LOG_DIR": "/proc/lgseg/no_such_dir"}, []),
             "params file": ({}, ["--params-file", str(tmp_path / "missing.yaml")])}
    for what, (extra_env, args) in cases.items():
        out = subprocess.run([sys.executable, "-m", "lgseg_ros.cli", "node", "--ros-args",
                              "-r", "__ns:=/hostile3_init", *args],
                             capture_output=True, text=True, timeout=120, env={**node_env(), **extra_env})
        text = out.stdout + out.stderr
        assert out.returncode == 2, (what, out.returncode, text[-2000:])
        assert "Traceback" not in text and "cannot start" in text, (what, text[-2000:])
        assert len(text.strip().splitlines()) <= 3, (what, text)


def test_a_namespace_or_node_name_too_long_for_its_services_is_one_line():
    """Probe round 11: a namespace (or node name) of 215+ characters makes a service name
    past ROS's 255 (rclpy's parameter services, `~/get_available_transitions`), and rclpy
    raised out of Node.__init__: a 2.4 KB traceback, exit 1. Now one line naming the
    namespace and node name arguments, exit 2 (shorter ones that leave no room for class-mask
    topics were already refused at configure)."""
    for remap in (f"__ns:=/{'n' * 240}", f"__node:={'n' * 228}"):
        out = subprocess.run([sys.executable, "-m", "lgseg_ros.cli", "node", "--ros-args", "-r", remap],
                             capture_output=True, text=True, timeout=120, env=node_env())
        text = out.stdout + out.stderr
        assert out.returncode == 2, (remap[:10], out.returncode, text[-2000:])
        assert "Traceback" not in text and "cannot start" in text and "-r __ns:=" in text, text[-2000:]
        assert len(text.strip().splitlines()) == 1 and len(text) < 600, text


def test_security_without_plugins_is_one_clear_line(tmp_path):
    """Security: with ROS_SECURITY_ENABLE=true, the PyPI Fast DDS (no security plugins)
    made `lgseg node` exit 1 with a raw RCLError traceback. Now one line says what is
    missing and how to run under SROS2. (An empty keystore is enough: the participant is
    refused for the missing plugins before any key is read.)"""
    (tmp_path / "enclaves").mkdir()
    env = {**node_env(), "ROS_SECURITY_ENABLE": "true", "ROS_SECURITY_STRATEGY": "Enforce",
           "ROS_SECURITY_KEYSTORE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "lgseg_ros.cli", "node", "--ros-args",
                          "-r", "__ns:=/hostile3_sec", "-p", "autostart:=false"],
                         capture_output=True, text=True, timeout=120, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "Traceback" not in text, text
    fatal = [ln for ln in text.splitlines() if "FATAL" in ln]
    assert len(fatal) == 1 and "without the security plugins" in fatal[0], text
    assert "apt or source ROS 2" in fatal[0] and "ROS_SECURITY_ENABLE" in fatal[0], fatal


def _start_and_wait(args: list[str], timeout: float = 180) -> tuple[int | None, str, float]:
    """Start `lgseg node` with autostart; (exit code, output, peak RSS MB) once it exits."""
    proc = NodeProcess(["-r", "__ns:=/hostile3_start", *args], env=node_env())
    peak = 0.0
    end = time.monotonic() + timeout
    while proc.alive() and time.monotonic() < end:
        try:
            peak = max(peak, proc.peak_mb())
        except (OSError, KeyError):
            pass
        time.sleep(0.05)
    rc = proc.wait(5)
    proc.stop()
    return rc, proc.text(), peak


def test_library_log_lines_are_not_doubled_after_a_quantisation(tmp_path, tiny_checkpoint):
    """Probe round 10: an int8 quantisation at configure imports onnxruntime.quantization,
    which calls logging.basicConfig; from then on every line of the library's logging went
    to the ROS log and, again, to stderr ("INFO:lgseg_ros.runtime...."): twice the log. A
    fresh cache folder makes the node quantise here."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    proc = NodeProcess(["-r", "__ns:=/hostile3_quant", "-p", f"checkpoint:={tiny_checkpoint}",
                        "-p", "backend:=onnxruntime", "-p", "device:=cpu", "-p", "precision:=int8",
                        "-p", f"net_height:={NET_HW[0]}", "-p", f"net_width:={NET_HW[1]}"],
                       env={**node_env(), "LGSEG_CACHE_DIR": str(cache)})
    try:
        wait_until(lambda: "]: active" in proc.text() or not proc.alive(), timeout=180,
                   what="the node to quantise and come up", period=0.2)
        text = proc.text()
        assert proc.alive(), text[-3000:]
        assert "quantised" in text, text[-3000:]        # the case this test is about
        lines = text.splitlines()
        doubled = [ln for ln in lines if ln.startswith(("INFO:lgseg_ros", "WARNING:lgseg_ros"))]
        assert not doubled, doubled[:5]
        assert sum("quantised" in ln for ln in lines) == 1, [ln for ln in lines if "quantised" in ln]
    finally:
        assert proc.stop() == 0, proc.text()[-3000:]


def test_a_checkpoint_header_bomb_is_refused_at_configure(tmp_path):
    """Item 6, through the node: a 640-byte checkpoint describing a huge network raised
    peak RSS by 2.7 GB before it was refused. Now configure fails on the header, naming the
    field, and the process stays small: importing torch and the model code alone peaks
    near 0.9 GB here, the refusal adds nothing measurable (the old build added 2.7 GB)."""
    import struct

    from lgseg_ros.model import get_config
    from lgseg_ros.model.checkpoint import FORMAT

    cfg = {**get_config("lite-minilm").to_dict(), "dim": 65536, "heads": 4}
    meta = {"format": FORMAT, "format_version": "1", "config": json.dumps(cfg), "extra": "{}"}
    head = json.dumps({"__metadata__": meta}).encode()
    bomb = tmp_path / "bomb.safetensors"
    bomb.write_bytes(struct.pack("<Q", len(head)) + head)
    rc, text, peak = _start_and_wait(["-p", f"checkpoint:={bomb}", "-p", "backend:=torch", "-p", "device:=cpu"])
    print(json.dumps({"checkpoint_bomb": {"exit": rc, "peak_rss_mb": round(peak, 1), "file_bytes": bomb.stat().st_size}}))
    assert rc == 1, text[-3000:]
    assert "dim=65536" in text and "Traceback" not in text, text[-3000:]
    assert peak < 1500, peak


def test_a_huge_value_in_a_checkpoint_config_is_not_logged_whole(tmp_path):
    """Audit round 17: the refusal of a checkpoint whose config holds a 10 MB value ("unknown
    head 'xxxx...'") was logged whole, one 10 MB line per configure request. The line keeps
    its head and tail now, and names the field."""
    import struct

    from lgseg_ros.model import get_config
    from lgseg_ros.model.checkpoint import FORMAT

    cfg = {**get_config("lite-minilm").to_dict(), "head": "x" * 1_000_000}
    meta = {"format": FORMAT, "format_version": "1", "config": json.dumps(cfg), "extra": "{}"}
    head = json.dumps({"__metadata__": meta}).encode()
    ckpt = tmp_path / "long_value.safetensors"
    ckpt.write_bytes(struct.pack("<Q", len(head)) + head)
    rc, text, _ = _start_and_wait(["-p", f"checkpoint:={ckpt}", "-p", "backend:=onnxruntime", "-p", "device:=cpu"])
    assert rc == 1, text[-3000:]
    line = next((ln for ln in text.splitlines() if "configure failed" in ln), "")
    assert "head" in line, text[-3000:]
    print(json.dumps({"long_config_value": {"value_chars": 1_000_000, "log_chars": len(text)}}))
    assert len(text) < 50_000


def test_cache_directory_errors_name_the_parameter(tmp_path, tiny_checkpoint):
    """Item 12: a file given as the cache directory said only "File exists", and the node
    created any directory a peer named. Now the cache directory must exist, be a directory
    and be private; the refusal names engine_cache_dir and the path."""
    afile = tmp_path / "not_a_dir"
    afile.write_text("x")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    for path, words in ((afile, "is not a directory"), (tmp_path / "missing" / "deeper", "no such directory"),
                        (shared, "writable by group or others")):
        rc, text, _ = _start_and_wait(["-p", f"checkpoint:={tiny_checkpoint}", "-p", "backend:=onnxruntime",
                                       "-p", "device:=cpu", "-p", f"engine_cache_dir:={path}"])
        assert rc == 1, text[-3000:]
        line = next((ln for ln in text.splitlines() if "configure failed" in ln), "")
        assert f"engine_cache_dir={path}" in line and words in line, text[-3000:]
    assert not (tmp_path / "missing").exists()


def test_a_planted_onnx_file_is_not_served_by_the_node(tmp_path, tiny_checkpoint, reference_segmenter):
    """Item 5, through the node: a graph with the expected file name in the cache directory
    was served as the model ("none" everywhere) while the log named the trusted checkpoint.
    Now the ONNX Runtime path reads its graphs only from the artefact directories (not from
    the peer-named engine_cache_dir), each checked against its manifest (checkpoint sha256,
    size, precision, its own sha256) before it is served: a foreign graph under the expected
    name is refused and re-exported, and the masks are the checkpoint's."""
    import torch

    from lgseg_ros.model import build_model, load_checkpoint
    from lgseg_ros.runtime import export as ex

    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    art = tmp_path / "artefacts"
    env = {**node_env(), "LGSEG_ARTEFACTS": str(art)}
    ns = "/hostile3_onnx"
    args = ["-p", f"checkpoint:={tiny_checkpoint}", "-p", "backend:=onnxruntime", "-p", "device:=cpu", "-p", "precision:=fp32",
            "-p", f"net_height:={NET_HW[0]}", "-p", f"net_width:={NET_HW[1]}",
            "-p", f"engine_cache_dir:={cache}", "-p", "labels:=[road, car, sky]"]
    first = NodeProcess(["-r", f"__ns:={ns}", "-r", f"image:={ns}/cam", *args], env=env)
    try:
        wait_until(lambda: "]: active" in first.text() or not first.alive(), timeout=180, what="first start")
    finally:
        first.stop()
    (exported,) = list(art.glob("frame/lgseg_*_fp32.onnx"))
    assert not list(cache.glob("*.onnx"))       # the peer-named directory feeds nothing
    net, cfg = load_checkpoint(tiny_checkpoint)
    other = build_model(cfg, load_weights=False).eval()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5 * torch.randn_like(p))
    ex.export_onnx(other, exported, NET_HW, cfg.text_dim)  # well formed, right name, wrong model
    planted = exported.read_bytes()

    with serving_node(ns, f"{ns}/cam", args, env=env, timeout=180) as (h, proc, rec, pub):
        assert "fail their recorded sha256" in proc.text(), proc.text()[-3000:]
        assert exported.read_bytes() != planted
        frame = camvid_frames(1)[0]
        msg = rgb_msg(frame)
        pub.publish(msg)
        out = rec.wait_stamp(f"{ns}/lgseg_node/label_mask", stamp_key(msg.header), timeout=30)
        got = np.frombuffer(out.data, np.uint8).reshape(out.height, out.width)
        want = reference_segmenter.segment(frame, reference_segmenter.prepare_labels(["road", "car", "sky"])).ids
        assert float(np.mean(got == want)) > 0.99


# Item 9's bound. rmw_fastrtps copies a taken sample three times before rclpy sees it (the
# reader's reassembly buffer, a FastBuffer, the serialized message) and rclpy a fourth
# (bytes), two of them alive at once; 3.5x the sample is what the raw path costs. rclpy's
# own conversion cost ~4x (+816 MB for 200 MB), so this bound fails on the old path.
OVERSIZED_PEAK_FACTOR = 3.5
STALL_BOUND_S = 4.0


def test_an_oversized_sample_is_refused_before_conversion_and_its_buffer_given_back(tiny_checkpoint):
    """Item 9: a 200 MB `data` field on a 2x2 frame raised peak RSS by 816 MB, and 216 MB
    stayed (Fast DDS's reader keeps its largest payload). Now the node takes the serialized
    sample (raw=True), refuses it from its CDR header before any conversion, and renews the
    subscription, which hands the retained buffer back. What Fast DDS and rclpy copy before
    the node sees the sample is not bounded (README, Troubleshooting, "Oversized samples"):
    this test holds the rise to OVERSIZED_PEAK_FACTOR x the sample. The node subscribes
    reliable so that the whole sample arrives (best effort usually loses a fragment of it,
    which costs only the reassembly buffer)."""
    size = 200 << 20
    ns = "/hostile3_big"
    args = tiny_torch_args(tiny_checkpoint, "-p", "qos_reliability:=reliable", "-p", "qos_depth:=4")
    with serving_node(ns, f"{ns}/cam", args, env=node_env(), timeout=180) as (h, proc, rec, pub):
        def serve(deadline=1.0):
            """Frames at 10 Hz until one's mask comes back: seconds from the first frame
            (a frame sent while the renewed subscription rematches is lost, so this
            includes that moment)."""
            frame, sent, t0 = camvid_frames(1)[0], set(), time.monotonic()

            def answered():
                with rec.cond:
                    hit = any(stamp_key(m.header) in sent for _, m in rec.msgs[f"{ns}/lgseg_node/label_mask"])
                if not hit:
                    msg = rgb_msg(frame)
                    sent.add(stamp_key(msg.header))
                    pub.publish(msg)
                return hit
            wait_until(answered, timeout=deadline + 10, period=0.1, what="a mask for the next frames")
            return time.monotonic() - t0

        # The hostile peer has a writer of its own (the camera's history would replace the
        # big sample with its next frames before all of its fragments were acknowledged).
        attacker = h.client.create_publisher(Image, f"{ns}/cam", RELIABLE)
        wait_until(lambda: attacker.get_subscription_count() > 0, timeout=30, what="attacker matched")
        serve(deadline=30)
        time.sleep(1.0)
        rss0 = proc.rss_mb()
        proc.reset_peak()
        log_at = proc.log_bytes()
        big = rgb_msg(np.zeros((2, 2, 3), np.uint8))
        big.data = bytes(size)
        attacker.publish(big)
        wait_until(lambda: "skipped frame" in proc.text_since(log_at) or not proc.alive(),
                   timeout=120, what="the oversized frame to be refused")
        took = serve()
        time.sleep(1.0)
        rise, kept = proc.peak_mb() - rss0, proc.rss_mb() - rss0
        # Again with a camera at 10 Hz: masks must keep coming (the stall target).
        # The reader keeps 4 samples (qos_depth) so that the big one arrives whole beside the
        # camera's frames (a depth-1 reader replaces it half received: +216 MB, the reassembly
        # buffer, and nothing taken). The peer is a process of its own: sent from this one,
        # the send would hold this process's GIL and stop the camera stream and the mask
        # recorder here, which measured the test, not the node (0.7-1.4 s "gaps" before).
        del big
        stream_log_at = proc.log_bytes()
        rss1 = proc.rss_mb()
        proc.reset_peak()
        with Stream(pub):
            time.sleep(1.0)
            t0 = time.monotonic()
            peer = publish_big_sample_from_another_process(f"{ns}/cam", size)
            time.sleep(4.0)
            t1 = time.monotonic()
        with rec.cond:
            times = [t for t, _ in rec.msgs[f"{ns}/lgseg_node/label_mask"] if t0 - 1.0 <= t <= t1]
        gaps = [b - a for a, b in zip(times, times[1:])]
        stream_rise = proc.peak_mb() - rss1
        print(json.dumps({"oversized_sample": {"mb": size >> 20, "peak_rss_rise_mb": round(rise, 1),
                                               "rss_kept_mb": round(kept, 1),
                                               "next_frame_s": round(took, 3),
                                               "masks_during_stream": len(times),
                                               "longest_mask_gap_s": round(max(gaps), 3),
                                               "peer": peer.split(),
                                               "refused_during_stream_logged": proc.text_since(stream_log_at).count(
                                                   f"data has {size} bytes"),
                                               "peak_rss_rise_during_stream_mb": round(stream_rise, 1),
                                               # Taken whole: the rise holds the take's copies
                                               # (about 3x); else only the reassembly buffer
                                               # (1x), which a loaded machine sometimes gives.
                                               "taken_whole_during_stream": stream_rise > 2 * (size >> 20)}}))
        text = proc.text_since(log_at)
        assert f"data has {size} bytes, more than step*height = 6*2 = 12" in text, text[-2000:]
        assert took < 1.0, took
        # The target is 1 s; measured 1.22-1.90 s on the 2-core machine (README): the
        # take's copies of the sample in rmw_fastrtps and rclpy run on the executor thread,
        # and the camera's frames wait behind them. The bound catches a freeze.
        assert len(times) >= 10 and max(gaps) < STALL_BOUND_S, gaps
        assert rise < OVERSIZED_PEAK_FACTOR * (size >> 20), rise
        assert kept < 64, kept          # was 216 MB: the renewed reader gave its buffer back

        # The same for CameraInfo (probe round 4): 80 MB of D coefficients raised peak RSS by
        # 336 MB, kept 160 MB and was republished whole. Now refused from its size, never
        # converted, and its subscription renewed.
        info_size = 80 << 20
        out = f"{ns}/lgseg_node/camera_info"
        rec.listen(out, CameraInfo)
        rec.wait_matched(out)
        time.sleep(6.0)                 # past the image subscription's renewal throttle
        rss2, log_at = proc.rss_mb(), proc.log_bytes()
        proc.reset_peak()
        with Stream(pub):
            time.sleep(1.0)
            t0 = time.monotonic()
            peer = publish_big_sample_from_another_process(f"{ns}/camera_info", info_size, kind="camera_info")
            wait_until(lambda: "skipped camera_info" in proc.text_since(log_at) or not proc.alive(),
                       timeout=60, what="the oversized camera_info to be refused")
            time.sleep(3.0)
            t1 = time.monotonic()
        time.sleep(1.0)
        with rec.cond:
            times = [t for t, _ in rec.msgs[f"{ns}/lgseg_node/label_mask"] if t0 - 1.0 <= t <= t1]
            republished = len(rec.msgs[out])
        gaps = [b - a for a, b in zip(times, times[1:])]
        info_rise, info_kept = proc.peak_mb() - rss2, proc.rss_mb() - rss2
        print(json.dumps({"oversized_camera_info": {"mb": info_size >> 20, "peak_rss_rise_mb": round(info_rise, 1),
                                                    "rss_kept_mb": round(info_kept, 1), "republished": republished,
                                                    "longest_mask_gap_s": round(max(gaps), 3),
                                                    "peer": peer.split()}}))
        assert republished == 0, republished
        assert info_rise < OVERSIZED_PEAK_FACTOR * (info_size >> 20), info_rise
        assert info_kept < 64, info_kept
        assert len(times) >= 10 and max(gaps) < STALL_BOUND_S, gaps


def test_a_label_change_across_a_reconfigure_builds_each_model_file_once(tmp_path, camvid_root):
    """Probe round 11: a set_labels that reaches the rooms model, still encoding on the label
    worker when a peer drives deactivate, cleanup and configure, loaded the released
    segmenter's rooms model there while configure loaded the new one's on the executor
    thread. On a machine where the net size was not cached both built the same files at
    once: two torch exports (the second raised "GLOBALS.in_onnx_export must be False"; the
    auto backend then ran that rooms model on torch, or with backend onnxruntime routing
    stopped) or two int8 quantisations into one .tmp file, and configure failed ("Unable to
    open proto file ... int8.onnx.tmp"), leaving the node unconfigured. Builds in a process
    are now one at a time: the second builder waits and loads the first one's file."""
    from lgseg_ros.runtime.routing import rooms_checkpoint_path
    from lgseg_ros.runtime.segmenter import default_checkpoint_path

    if default_checkpoint_path() is None or rooms_checkpoint_path() is None:
        pytest.skip("needs the two shipped models (street and rooms)")
    pytest.importorskip("torch")   # the exports on a cache miss
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    env = {**node_env(), "LGSEG_CACHE_DIR": str(cache / "engines"),
           "LGSEG_CAMVID": str(camvid_root)}   # int8 calibration frames
    env.pop("LGSEG_ARTEFACTS", None)
    ns = "/hostile3_rebuild"
    node = f"{ns}/lgseg_node"
    args = ["-p", "backend:=onnxruntime", "-p", "device:=cpu", "-p", f"net_height:={NET_HW[0]}",
            "-p", f"net_width:={NET_HW[1]}", "-p", "labels:=[road, car, sky]", "-p", "status_period:=0.5"]
    with serving_node(ns, f"{ns}/cam", args, env=env, timeout=300) as (h, proc, rec, pub):
        change = h.client.create_client(ChangeState, f"{node}/change_state")
        set_labels = h.client.create_client(SetLabels, f"{node}/set_labels")
        assert change.wait_for_service(20) and set_labels.wait_for_service(20)
        log_at = proc.log_bytes()
        first = set_labels.call_async(SetLabels.Request(labels=["chair", "sofa", "bed"]))
        wait_until(lambda: "exporting" in proc.text_since(log_at) or first.done(), timeout=60,
                   what="the label worker to start building the rooms model")
        for tid in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP):
            assert h.call(change, ChangeState.Request(transition=Transition(id=tid)), retry=False).success
        stored = h.call(set_labels, SetLabels.Request(labels=["chair", "lamp"]), retry=False)
        assert stored.success and "stored" in stored.message, stored.message
        for tid in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            done = h.call(change, ChangeState.Request(transition=Transition(id=tid)), timeout=180, retry=False)
            assert done.success, (tid, proc.text_since(log_at)[-4000:])
        wait_until(first.done, timeout=120, what="the first set_labels reply")
        log = proc.text_since(log_at)
        rooms = [ln for ln in log.splitlines() if "rooms" in ln or "5cacbdb" in ln]
        print(json.dumps({"label_change_across_reconfigure": {
            "first_reply": first.result().message, "exports": log.count("exporting "),
            "quantisations": log.count("quantised ")}}))
        assert "configure failed" not in log and "in_onnx_export" not in log, log[-4000:]
        assert "rooms model unavailable" not in log and "trying the next backend" not in log, log[-4000:]
        assert log.count("exporting ") == 1, rooms         # the rooms model's fp32 file, once
        assert log.count("quantised ") == 1, rooms         # and its int8 file, once
        reply = h.call(set_labels, SetLabels.Request(labels=["chair", "table", "bed"]), timeout=60, retry=False)
        assert reply.success and "rooms model" in reply.message, reply.message
        msg = rgb_msg(camvid_frames(1)[0])
        publish_until(pub, msg, lambda m: rec.find_stamp(f"{node}/label_mask", stamp_key(m.header)),
                      timeout=5, proc=proc)


def test_a_reconfigure_at_a_new_net_size_does_not_keep_torch_in_the_node(tmp_path):
    """Probe round 11: net_height / net_width apply at configure, so a peer that set a size
    never used here and drove cleanup + configure made the node export the model at that
    size in its own process: torch and the eager network loaded for it stayed, RSS 283 ->
    1031 MB for the node's life. The export then ran in a child process, but the configure
    waited for it on the executor (19 s per new size; audit round 18). Now a configure after
    the first builds nothing: it fails naming the command that builds the files, loads no
    torch, and the node configures again at a size it has."""
    from lgseg_ros.runtime.segmenter import default_checkpoint_path

    if default_checkpoint_path() is None:
        pytest.skip("needs the shipped model")
    pytest.importorskip("torch")   # the exports on a cache miss
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    env = {**node_env(), "LGSEG_CACHE_DIR": str(cache / "engines")}
    env.pop("LGSEG_ARTEFACTS", None)
    ns = "/hostile3_netsize"
    node = f"{ns}/lgseg_node"
    args = ["-p", "backend:=onnxruntime", "-p", "device:=cpu", "-p", "precision:=fp32",
            "-p", f"net_height:={NET_HW[0]}", "-p", f"net_width:={NET_HW[1]}",
            "-p", "labels:=[road, car, sky]", "-p", "status_period:=0.5"]
    first = NodeProcess(["-r", f"__ns:={ns}", "-r", f"image:={ns}/cam", *args], env=env)
    try:   # the start-up size into the cache, so that the node below starts without an export
        wait_until(lambda: "]: active" in first.text() or not first.alive(), timeout=300, what="first start")
    finally:
        first.stop()
    with serving_node(ns, f"{ns}/cam", args, env=env, timeout=300) as (h, proc, rec, pub):
        assert "exporting" not in proc.text(), proc.text()[-3000:]
        change = h.client.create_client(ChangeState, f"{node}/change_state")
        params = h.client.create_client(SetParameters, f"{node}/set_parameters")
        assert change.wait_for_service(20) and params.wait_for_service(20)
        frame = camvid_frames(1)[0]
        publish_until(pub, lambda: rgb_msg(frame),
                      lambda m: rec.find_stamp(f"{node}/label_mask", stamp_key(m.header)), proc=proc)
        rss0, log_at = proc.rss_mb(), proc.log_bytes()
        size = (NET_HW[0] + 32, NET_HW[1] + 32)
        done = h.call(params, SetParameters.Request(parameters=[
            ParameterMsg(name=name, value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v))
            for name, v in (("net_height", size[0]), ("net_width", size[1]))]))
        assert all(r.successful for r in done.results), done
        def transition(tid):
            return h.call(change, ChangeState.Request(transition=Transition(id=tid)),
                          timeout=300, retry=False).success

        assert transition(Transition.TRANSITION_DEACTIVATE) and transition(Transition.TRANSITION_CLEANUP)
        assert not transition(Transition.TRANSITION_CONFIGURE)
        log = proc.text_since(log_at)
        assert "configure failed" in log and "builds no files" in log, log[-3000:]
        assert f"--size {size[0]} {size[1]} --precision fp32" in log, log[-3000:]
        assert "exporting" not in log, log[-3000:]
        done = h.call(params, SetParameters.Request(parameters=[
            ParameterMsg(name=name, value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v))
            for name, v in (("net_height", NET_HW[0]), ("net_width", NET_HW[1]))]))
        assert all(r.successful for r in done.results), done
        assert transition(Transition.TRANSITION_CONFIGURE) and transition(Transition.TRANSITION_ACTIVATE)
        publish_until(pub, lambda: rgb_msg(frame),
                      lambda m: rec.find_stamp(f"{node}/label_mask", stamp_key(m.header)), proc=proc)
        with open(f"/proc/{proc.pid}/maps") as f:
            assert not [ln for ln in f if "libtorch" in ln], "torch came into the node"
        rise = proc.rss_mb() - rss0
        print(json.dumps({"reconfigure_at_new_net_size": {"rss_before_mb": round(rss0), "rss_rise_mb": round(rise)}}))
        assert rise < RSS_RISE_LIMIT_MB, rise

