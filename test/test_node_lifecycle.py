"""Lifecycle there and back with autostart off, driven through the lifecycle services (as a
lifecycle manager does) and the node's trigger methods; compressed input; configure errors."""
from __future__ import annotations

import os
import time

import cv2
import numpy as np
import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image

from lgseg_ros.msg import LabelInfo
from lgseg_ros.ros.node import LgsegNode
from lgseg_ros.srv import SetLabels
from test_node_support import (LATCHED, RELIABLE, Recorder, RosHarness, camvid_frames, header,  # noqa: F401
                               mask_of, node_params, publish_until, reference_segmenter, rgb_msg,
                               stamp_key, tiny_checkpoint, wait_until)

NS = "/lgseg_lc"


@pytest.fixture(scope="module")
def env(tiny_checkpoint):
    h = RosHarness()
    try:
        node = h.add(LgsegNode("lgseg_lc", context=h.context,
                               parameter_overrides=node_params(tiny_checkpoint, autostart=False)))
        yield h, node
    finally:
        h.close()


_GOAL = {Transition.TRANSITION_CONFIGURE: "inactive", Transition.TRANSITION_ACTIVATE: "active",
         Transition.TRANSITION_DEACTIVATE: "inactive", Transition.TRANSITION_CLEANUP: "unconfigured",
         Transition.TRANSITION_ACTIVE_SHUTDOWN: "finalized"}


def transition(h, transition_id: int) -> bool:
    """Through the lifecycle service, as a lifecycle manager does it. A transition is not
    idempotent, so a lost reply is resolved by asking for the state instead of resending."""
    client = h.client.create_client(ChangeState, f"{NS}/change_state")
    try:
        return h.call(client, ChangeState.Request(transition=Transition(id=transition_id)),
                      timeout=8.0, retry=False).success
    except AssertionError:
        return state(h) == _GOAL[transition_id]
    finally:
        h.client.destroy_client(client)


def state(h) -> str:
    client = h.client.create_client(GetState, f"{NS}/get_state")
    try:
        return h.call(client, GetState.Request()).current_state.label
    finally:
        h.client.destroy_client(client)


def test_lifecycle_there_and_back(env, reference_segmenter, tiny_checkpoint):
    h, node = env
    rec = Recorder(h)
    rec.listen(f"{NS}/label_mask")
    rec.listen(f"{NS}/label_info", LabelInfo, LATCHED)
    pub = h.client.create_publisher(Image, "/image", RELIABLE)
    frame = camvid_frames(1)[0]

    def mask_for(msg):
        return rec.find_stamp(f"{NS}/label_mask", stamp_key(msg.header))

    def serve(what: str):
        publish_until(pub, lambda: rgb_msg(frame), mask_for, timeout=1.0, tries=20, what=what)

    # autostart false: nothing loaded, nothing subscribed, but labels can be set already.
    assert state(h) == "unconfigured"
    assert h.client.count_publishers(f"{NS}/label_mask") == 0
    set_client = h.client.create_client(SetLabels, f"{NS}/set_labels")
    resp = h.call(set_client, SetLabels.Request(labels=["Road", "car"]))
    assert resp.success and [c.class_name for c in resp.class_map] == ["road", "car"]
    resp = h.call(set_client, SetLabels.Request(labels=["car", "car"]))
    assert not resp.success and [c.class_name for c in resp.class_map] == ["road", "car"]

    # What the node loads is chosen at start-up only (issue 20, security): refused by name.
    result = node.set_parameters([Parameter("checkpoint", value="/nonexistent/model.safetensors")])[0]
    assert not result.successful and "checkpoint is read-only" in result.reason, result.reason
    # A configure that cannot succeed says why and leaves the node unconfigured.
    node.set_parameters([Parameter("backend", value="tensorrt")])
    assert not transition(h, Transition.TRANSITION_CONFIGURE)
    assert state(h) == "unconfigured"
    node.set_parameters([Parameter("backend", value="torch")])

    assert transition(h, Transition.TRANSITION_CONFIGURE)
    assert state(h) == "inactive"
    assert h.client.count_publishers(f"{NS}/label_mask") == 1
    time.sleep(0.3)
    assert pub.get_subscription_count() == 0  # no image subscription before activate
    assert not rec.get(f"{NS}/label_info")  # lifecycle publishers stay silent while inactive

    assert transition(h, Transition.TRANSITION_ACTIVATE)
    assert state(h) == "active"
    wait_until(lambda: pub.get_subscription_count() == 1, what="image subscription after activate")
    rec.wait_matched(f"{NS}/label_mask")
    info = rec.wait_for(lambda: rec.get(f"{NS}/label_info"), what="label_info on activate")[-1]
    assert [c.class_name for c in info.class_map] == ["road", "car"]  # the set given while unconfigured
    serve("a mask after activate")

    assert transition(h, Transition.TRANSITION_DEACTIVATE)
    assert state(h) == "inactive"
    wait_until(lambda: pub.get_subscription_count() == 0, what="image subscription gone")
    # Nothing is served while inactive. Slept on rather than waited for: a wait that times
    # out gathers every thread's stack (and gdb's) for its message.
    msg = rgb_msg(frame)
    pub.publish(msg)
    time.sleep(1.0)
    assert not mask_for(msg)

    # Subscriptions are made at activate: switch to CompressedImage between the two.
    node.set_parameters([Parameter("use_compressed", value=True)])
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert node.lifecycle_state == "active"
    cpub = h.client.create_publisher(CompressedImage, "/image/compressed", RELIABLE)
    wait_until(lambda: cpub.get_subscription_count() == 1, what="compressed subscription")
    label_set = reference_segmenter.prepare_labels(["road", "car"])
    ok, png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    good = CompressedImage(format="png")
    good.data = png.tobytes()

    def compressed(data: bytes) -> CompressedImage:
        msg = CompressedImage(format="png", header=header())
        msg.data = data
        return msg

    def send_compressed(data: bytes) -> CompressedImage:
        msg = compressed(data)
        cpub.publish(msg)
        return msg

    msg = publish_until(cpub, lambda: compressed(good.data), mask_for, timeout=1.0, tries=20,
                        what="compressed frame served")
    np.testing.assert_array_equal(mask_of(msg), reference_segmenter.segment(frame, label_set).ids)
    rejected = node.stats()["/image"]["frames_rejected"]
    bad = send_compressed(b"\x89PNG\r\n\x1a\n" + bytes(64))
    wait_until(lambda: node.stats()["/image"]["frames_rejected"] > rejected, what="garbage rejected")
    after = send_compressed(good.data)
    rec.wait_stamp(f"{NS}/label_mask", stamp_key(after.header))
    assert not any(stamp_key(m.header) == stamp_key(bad.header) for m in rec.get(f"{NS}/label_mask"))
    node.set_parameters([Parameter("use_compressed", value=False)])

    # Cleanup releases the model and every publisher; configure brings them back.
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.lifecycle_state == "inactive"
    assert transition(h, Transition.TRANSITION_CLEANUP)
    assert state(h) == "unconfigured"
    wait_until(lambda: h.client.count_publishers(f"{NS}/label_mask") == 0, what="publishers released")
    assert node.stats() == {}

    assert transition(h, Transition.TRANSITION_CONFIGURE)
    assert transition(h, Transition.TRANSITION_ACTIVATE)
    wait_until(lambda: pub.get_subscription_count() == 1, what="raw subscription again")
    rec.wait_matched(f"{NS}/label_mask")
    serve("a mask after cleanup + configure + activate")

    assert transition(h, Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert state(h) == "finalized"
    wait_until(lambda: h.client.count_publishers(f"{NS}/label_mask") == 0, what="publishers gone at shutdown")


def test_cleanup_releases_the_model_after_a_label_change(tiny_checkpoint):
    """Issue 19: the label worker kept its last job, a closure over the Segmenter, so a model
    that had encoded a label change outlived cleanup (and the heap trim that follows it):
    20 lifecycle cycles with a label change each left the default node at 654-701 MB, not
    ~500. After cleanup no Segmenter the node made may be alive."""
    import gc
    import weakref

    h = RosHarness()
    try:
        node = h.add(LgsegNode("lgseg_lc_release", namespace="/lgseg_lc_release", context=h.context,
                               parameter_overrides=node_params(tiny_checkpoint)))
        assert node.lifecycle_state == "active"
        set_client = h.client.create_client(SetLabels, "/lgseg_lc_release/lgseg_lc_release/set_labels")
        models = []
        for cycle, labels in enumerate((["road", "car"], ["sky", "tree", "wall"])):
            models.append(weakref.ref(node._segmenter))
            # Through the service: encoded on the label worker, as a robot's change is.
            resp = h.call(set_client, SetLabels.Request(labels=labels))
            assert resp.success, resp.message
            assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
            assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
            gc.collect()
            alive = [m() for m in models if m() is not None]
            assert not alive, (f"cycle {cycle}: {len(alive)} released Segmenter(s) still referenced "
                               f"by {[type(r).__name__ for r in gc.get_referrers(alive[0])][:8]}")
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    finally:
        h.close()


def _unconfigured_node(h, tiny_checkpoint, ns, name, labels, remaps):
    """A node left unconfigured (autostart off) with its /rosout and ~/status recorded, and
    a set_labels client: the stored-set tests' start."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rcl_interfaces.msg import Log

    node_ns = f"{ns}/{name}"
    rec = Recorder(h)
    rec.listen("/rosout", Log, RELIABLE)
    rec.listen(f"{node_ns}/status", DiagnosticArray)
    args = ["--ros-args"] + [a for r in remaps for a in ("-r", r)]
    node = h.add(LgsegNode(name, namespace=ns, context=h.context, cli_args=args,
                           parameter_overrides=node_params(tiny_checkpoint, autostart=False,
                                                           labels=labels)))
    return rec, node, h.client.create_client(SetLabels, f"{node_ns}/set_labels")


def test_a_stored_set_that_configure_refuses_does_not_stick(tiny_checkpoint):
    """A set stored while unconfigured was written to `labels` and encoded only at configure:
    one the text encoder refuses ('road' and 'röad' read as one word), or whose mask topic a
    remap puts on the input, failed that configure and every later one. Configure now falls
    back to the labels the set replaced, and says why in the log and ~/status; the remap is
    refused when the set is stored, where it can be seen already."""
    ns, name = "/lgseg_stored", "lgseg_stored"
    node_ns = f"{ns}/{name}"
    h = RosHarness()
    try:
        rec, node, client = _unconfigured_node(
            h, tiny_checkpoint, ns, name, ["sky", "road"],
            [f"{node_ns}/class/lamp/mask:={ns}/image", f"{node_ns}/front/class/pole/mask:={ns}/front/image"])

        def refusals():
            return [m.msg for m in rec.get("/rosout")
                    if m.name == node_ns[1:].replace("/", ".") and "refused at configure" in m.msg]

        # The encoder's check: only a loaded model can make it, so the set is stored...
        reply = h.call(client, SetLabels.Request(labels=["road", "car", "röad"]))
        assert reply.success and "stored" in reply.message, reply.message
        # ...and configure serves the labels it replaced, naming the stored set's problem.
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert tuple(node._label_set.names) == ("sky", "road")
        assert node.get_parameter("labels").value == ["sky", "road"]
        line = rec.wait_for(refusals, what="the stored set's refusal in the log")[0]
        assert "'röad' is the same as label 0 'road' to the text encoder" in line, line
        assert "['sky', 'road']" in line and len(line) < 1500, line
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS

        def refused_status():
            for arr in rec.get(f"{node_ns}/status"):
                for st in arr.status:
                    values = {kv.key: kv.value for kv in st.values}
                    if "stored_labels_refused" in values:
                        return st, values["stored_labels_refused"]
            return None

        st, why = rec.wait_for(refused_status, what="the refusal in ~/status")
        assert st.level == st.WARN and "röad" in why, (st.message, why)
        # A label change that succeeds ends the report.
        assert h.call(client, SetLabels.Request(labels=["road", "car"])).success
        count = len(rec.get(f"{node_ns}/status"))
        rec.wait_for(lambda: len(rec.get(f"{node_ns}/status")) > count + 1, what="two more statuses")
        last = rec.get(f"{node_ns}/status")[-1].status[0]
        assert "stored_labels_refused" not in {kv.key for kv in last.values}, last

        # The remap is known before configure: the store itself is refused, by name.
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        reply = h.call(client, SetLabels.Request(labels=["road", "lamp"]))
        assert not reply.success, reply.message
        assert (f"label 'lamp': its mask topic resolves to '{ns}/image', which is the input "
                "image") in reply.message, reply.message
        assert node.get_parameter("labels").value == ["road", "car"]
        # A camera named after the store moves the mask topics: the clash is found at
        # configure, which again falls back to the labels the stored set replaced.
        reply = h.call(client, SetLabels.Request(labels=["road", "pole"]))
        assert reply.success and "stored" in reply.message, reply.message
        node.set_parameters([Parameter("cameras", value=["front"])])
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert tuple(node._label_set.names) == ("road", "car")
        assert node.get_parameter("labels").value == ["road", "car"]
        line = rec.wait_for(lambda: [x for x in refusals() if "pole" in x],
                            what="the second refusal in the log")[0]
        assert f"label 'pole': its mask topic resolves to '{ns}/front/image'" in line, line
    finally:
        h.close()


def _status_values(arr) -> dict:
    return {kv.key: kv.value for st in arr.status for kv in st.values}


def test_a_stored_set_is_reported_refused_only_by_a_configure_that_succeeds(tiny_checkpoint, monkeypatch):
    """Review of b62b70c. The refusal was written to ~/status before configure knew it would
    succeed: when the labels the stored set replaced were refused too, configure failed and
    the reason stuck, even through a later configure that served the stored set, with
    "configured with the labels they replaced" logged before "configure failed". Any error
    at all gave way to those labels, an out-of-memory or a bug too, and dropped the stored
    set. And re-sending the set in force after a fallback left the WARN on."""
    from lgseg_ros.runtime.segmenter import Segmenter

    ns, name = "/lgseg_refused", "lgseg_refused"
    node_ns = f"{ns}/{name}"
    h = RosHarness()
    try:
        rec, node, client = _unconfigured_node(
            h, tiny_checkpoint, ns, name, ["sky", "pole"],
            [f"{node_ns}/front/class/pole/mask:={ns}/front/image"])

        def lines(text):
            return [m.msg for m in rec.get("/rosout")
                    if m.name == node_ns[1:].replace("/", ".") and text in m.msg]

        def statuses_after(count):
            rec.wait_for(lambda: len(rec.get(f"{node_ns}/status")) > count + 1, what="two more statuses")
            return _status_values(rec.get(f"{node_ns}/status")[-1])

        # 0. The encoder refuses the stored set, and the labels it replaced clash with the
        # camera named since: configure fails naming both refusals (review of d159259: it
        # named only the clash, as if nothing had been stored), and the set stays stored.
        assert h.call(client, SetLabels.Request(labels=["road", "car", "röad"])).success
        node.set_parameters([Parameter("cameras", value=["front"])])
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        failed = rec.wait_for(lambda: lines("configure failed"), what="the failure line")[0]
        assert ("labels stored while unconfigured ['road', 'car', 'röad'] refused: label 2 'röad' "
                "is the same as label 0 'road'" in failed
                and "the labels they replaced, ['sky', 'pole'], refused too: label 'pole': its mask "
                f"topic resolves to '{ns}/front/image'" in failed), failed
        assert node._stored_labels == ("road", "car", "röad") and node._stored_refusal is None
        assert node.get_parameter("labels").value == ["road", "car", "röad"]

        # 1. Both the stored set and the labels it replaced clash with the camera named
        # since: configure fails, naming both, and reports no fallback it did not make.
        node.set_parameters([Parameter("cameras", Parameter.Type.STRING_ARRAY, [])])
        assert h.call(client, SetLabels.Request(labels=["road", "pole"])).success
        node.set_parameters([Parameter("cameras", value=["front"])])
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        failed = rec.wait_for(lambda: lines("configure failed: labels stored while unconfigured ['road', 'pole']"),
                              what="the failure line")[0]
        assert not lines("configured with the labels they replaced"), lines("configured with")
        assert node._stored_refusal is None and node._stored_labels == ("road", "pole")
        assert node.get_parameter("labels").value == ["road", "pole"]
        assert ("labels stored while unconfigured ['road', 'pole'] refused: label 'pole'" in failed
                and "the labels they replaced, ['sky', 'pole'], refused too: label 'pole'" in failed), failed
        # ...and the configure that serves the stored set shows no refusal.
        node.set_parameters([Parameter("cameras", Parameter.Type.STRING_ARRAY, [])])
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert tuple(node._label_set.names) == ("road", "pole")
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert "stored_labels_refused" not in statuses_after(len(rec.get(f"{node_ns}/status")))
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS

        # 2. An error that is not a refusal (here an out-of-memory) fails the configure with
        # its traceback, as before; the stored set stays stored, `labels` keeps it.
        assert h.call(client, SetLabels.Request(labels=["road", "car"])).success
        real = Segmenter.prepare_labels

        def out_of_memory(self, labels, *a, **kw):
            if tuple(labels) == ("road", "car"):
                raise MemoryError("injected: out of memory encoding the labels")
            return real(self, labels, *a, **kw)

        monkeypatch.setattr(Segmenter, "prepare_labels", out_of_memory)
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        oom = rec.wait_for(lambda: lines("injected: out of memory"), what="the OOM failure line")[0]
        assert oom.startswith("configure failed: injected") and "Traceback" in oom, oom
        assert node._stored_labels == ("road", "car") and node._stored_refusal is None
        assert node.get_parameter("labels").value == ["road", "car"]
        monkeypatch.setattr(Segmenter, "prepare_labels", real)
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert tuple(node._label_set.names) == ("road", "car")
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS

        # 3. After a fallback, re-sending the set in force ("already in force") is a label
        # change that succeeds: the report ends.
        assert h.call(client, SetLabels.Request(labels=["road", "car", "röad"])).success
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert tuple(node._label_set.names) == ("road", "car")
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        rec.wait_for(lambda: any("stored_labels_refused" in _status_values(a)
                                 for a in rec.get(f"{node_ns}/status")), what="the refusal in ~/status")
        reply = h.call(client, SetLabels.Request(labels=["road", "car"]))
        assert reply.success and "in force" in reply.message, reply.message
        assert "stored_labels_refused" not in statuses_after(len(rec.get(f"{node_ns}/status")))

        # 4. The report belongs to the configure that fell back: cleanup ends it (review of
        # d159259: a later configure with nothing stored showed it again), as does a
        # shutdown from inactive.
        def refused_again():   # from active: a configure that falls back again
            assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
            assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
            assert h.call(client, SetLabels.Request(labels=["road", "car", "röad"])).success
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            assert node._stored_refusal is not None

        refused_again()
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node._stored_refusal is None
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert "stored_labels_refused" not in statuses_after(len(rec.get(f"{node_ns}/status")))
        refused_again()
        assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
        assert node._stored_refusal is None
    finally:
        h.close()


def test_the_store_time_topic_check_refuses_only_clashes(tiny_checkpoint):
    """Review of b62b70c. The mask-topic check made when a set is stored while unconfigured
    used the `cameras` in force even when the same atomic request set new ones, refusing a
    set configure accepts (and accepting one it refuses); and with a camera name that leaves
    no room for class-mask topics rcl's "topic length" error turned a valid store into
    "label encoding failed" with a traceback, where configure refuses the camera by name."""
    from rcl_interfaces.msg import Log

    ns, name = "/lgseg_storechk", "lgseg_storechk"
    node_ns = f"{ns}/{name}"
    h = RosHarness()
    try:
        rec = Recorder(h)
        rec.listen("/rosout", Log, RELIABLE)
        node = h.add(LgsegNode(
            name, namespace=ns, context=h.context,
            cli_args=["--ros-args", "-r", f"{node_ns}/class/lamp/mask:={ns}/image"],
            parameter_overrides=node_params(tiny_checkpoint, autostart=False)))
        # The request's own cameras: with `front`, lamp's mask topic is not the remapped one.
        r = node.set_parameters_atomically([Parameter("cameras", value=["front"]),
                                            Parameter("labels", value=["road", "lamp"])])
        assert r.successful, r.reason
        assert node.get_parameter("labels").value == ["road", "lamp"]
        # ...and back to the default camera, where it is the input: refused, by name.
        r = node.set_parameters_atomically([Parameter("cameras", Parameter.Type.STRING_ARRAY, []),
                                            Parameter("labels", value=["sky", "lamp"])])
        assert not r.successful and f"label 'lamp': its mask topic resolves to '{ns}/image'" in r.reason, r.reason
        assert node.get_parameter("cameras").value == ["front"]
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert tuple(node._label_set.names) == ("road", "lamp")
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS

        # Non-atomic (the SetParameters service, rclpy's set_parameters): rclpy sets the
        # entries one at a time, and `labels` before `cameras` was checked against the
        # cameras in force (review of d159259). Now against the request's, in either order.
        from rcl_interfaces.srv import SetParameters
        set_params = h.client.create_client(SetParameters, f"{node_ns}/set_parameters")

        def nonatomic(*params):
            req = SetParameters.Request(parameters=[p.to_parameter_msg() for p in params])
            return [(r.successful, r.reason) for r in h.call(set_params, req).results]

        no_cameras = Parameter("cameras", Parameter.Type.STRING_ARRAY, [])
        (ok, why), cams = nonatomic(Parameter("labels", value=["sky", "lamp"]), no_cameras)
        assert not ok and f"label 'lamp': its mask topic resolves to '{ns}/image'" in why, why
        assert cams[0] and node.get_parameter("cameras").value == []
        assert nonatomic(Parameter("labels", value=["road", "lamp"]),
                         Parameter("cameras", value=["front"])) == [(True, ""), (True, "")]
        assert node._stored_labels == ("road", "lamp")
        results = node.set_parameters([Parameter("labels", value=["sky", "lamp"]), no_cameras])
        assert not results[0].successful and results[1].successful, results
        assert node._stored_labels == ("road", "lamp")
        assert [r.successful for r in node.set_parameters(
            [Parameter("labels", value=["sky", "lamp"]), Parameter("cameras", value=["front"])])] == [True, True]
        assert node._stored_labels == ("sky", "lamp")
        # A `cameras` entry the node refuses sets nothing: the labels are checked against the
        # cameras in force ([], where 'lamp' clashes; the refused pair would have let it pass).
        node.set_parameters([no_cameras])
        (ok, why), cams = nonatomic(Parameter("labels", value=["road", "lamp"]),
                                    Parameter("cameras", value=["front", "front"]))
        assert not ok and "its mask topic resolves to" in why and not cams[0], (why, cams)
        # The last `cameras` entry the node accepts is the one the labels meet.
        assert [ok for ok, _ in nonatomic(Parameter("cameras", value=["front"]),
                                          Parameter("labels", value=["road", "lamp"]),
                                          no_cameras)] == [True, False, True]
        # In process, an undeclared name stops rclpy before a `cameras` after it is set.
        with pytest.raises(Exception, match="undeclared"):
            node.set_parameters([Parameter("labels", value=["road", "lamp"]),
                                 Parameter("nope", value=1), Parameter("cameras", value=["front"])])
        assert node._stored_labels == ("sky", "lamp")
        assert node.get_parameter("cameras").value == []
        node.set_parameters([Parameter("cameras", value=["front"])])
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert tuple(node._label_set.names) == ("sky", "lamp")
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS

        # A camera name that leaves too little room: the set is stored, and configure names
        # the camera.
        node.set_parameters([Parameter("cameras", value=["c" + "a" * 199])])
        client = h.client.create_client(SetLabels, f"{node_ns}/set_labels")
        reply = h.call(client, SetLabels.Request(labels=["road", "x" * 60]))
        assert reply.success and "stored" in reply.message, reply.message
        assert node._stored_labels == ("road", "x" * 60)
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node._stored_labels == ("road", "x" * 60)
        rec.wait_for(lambda: [m for m in rec.get("/rosout") if m.name == node_ns[1:].replace("/", ".")
                              and "camera 'caaa" in m.msg and "leaves too little room" in m.msg],
                     what="configure refusing the camera by name")
        assert not [m for m in rec.get("/rosout") if "set_labels" in m.msg], "a store logged as failed"
    finally:
        h.close()


def test_the_node_hands_its_single_label_margin_to_the_segmenter(tiny_checkpoint):
    """`single_label_margin` (a configure parameter) reaches the Segmenter that serves the
    frames; out of range it is refused by name."""
    h = RosHarness()
    try:
        node = h.add(LgsegNode("lgseg_margin", namespace="/lgseg_margin", context=h.context,
                               parameter_overrides=node_params(tiny_checkpoint, autostart=False,
                                                               single_label_margin=0.75)))
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node._segmenter.single_label_margin == 0.75
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        refused = node.set_parameters([Parameter("single_label_margin", value=4.5)])[0]
        assert not refused.successful and "single_label_margin" in refused.reason, refused.reason
        assert node.get_parameter("single_label_margin").value == 0.75
    finally:
        h.close()


def test_the_configure_hold_measurement_runs_and_prints_json():
    """tools/measure_configure_hold.py (the README's figures for a configure with many
    cameras and labels): a small run configures and cleans up through ~/change_state."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": "91"}
    out = subprocess.run([sys.executable, "tools/measure_configure_hold.py", "--cameras", "2",
                          "--labels", "3", "--rounds", "1"], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert (r["cameras"], r["labels"], len(r["rounds"])) == (2, 3, 1)
    for step in ("configure", "cleanup"):
        s = r["rounds"][0][step]
        assert s["success"] and 0 < s["executor_held_s"] <= s["reply_s"] + 0.05, s
