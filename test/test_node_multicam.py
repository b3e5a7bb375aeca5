"""Two cameras served at once by one node and one model, in a namespace, one input remapped."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image

from lgseg_ros.labels import topic_tokens
from lgseg_ros.msg import LabelInfo
from lgseg_ros.ros.node import LgsegNode
from lgseg_ros.srv import SetLabels
from test_node_support import (LATCHED, RELIABLE, Recorder, RosHarness, camvid_frames, header,  # noqa: F401
                               mask_of, node_params, reference_segmenter, rgb_msg, stamp_key,
                               tiny_checkpoint, topic_names, wait_until)

OUT = "/robot/lgseg_node"
CAMS = {"front": "/cams/front/image_raw", "rear": "/robot/rear/image"}


@pytest.fixture(scope="module")
def env(tiny_checkpoint):
    h = RosHarness()
    try:
        node = h.add(LgsegNode(
            context=h.context, namespace="/robot",
            cli_args=["--ros-args", "-r", "front/image:=/cams/front/image_raw"],
            parameter_overrides=node_params(tiny_checkpoint, cameras=["front", "rear"],
                                            labels=["road", "car", "sky"])))
        assert node.lifecycle_state == "active"
        yield h, node
    finally:
        h.close()


def test_inputs_follow_namespace_remapping_and_image_transport_conventions(env):
    h, node = env
    stats = node.stats()
    assert set(stats) == set(CAMS.values())
    # camera_info is the remapped image's sibling, as image_transport does it.
    wait_until(lambda: h.client.count_subscribers("/cams/front/camera_info") == 1, what="front camera_info sub")
    wait_until(lambda: h.client.count_subscribers("/robot/rear/camera_info") == 1, what="rear camera_info sub")
    names = topic_names(h.client)
    for cam in CAMS:
        for out in ("label_mask", "confidence", "color_mask", "overlay", "label_info", "camera_info"):
            assert f"{OUT}/{cam}/{out}" in names
        for token in topic_tokens(["road", "car", "sky"]):
            assert f"{OUT}/{cam}/class/{token}/mask" in names


def test_two_cameras_stream_at_once_and_stay_apart(env, reference_segmenter):
    h, node = env
    rec = Recorder(h)
    pubs = {}
    for cam, topic in CAMS.items():
        rec.listen(f"{OUT}/{cam}/label_mask")
        rec.listen(f"{OUT}/{cam}/label_info", LabelInfo, LATCHED)
        rec.listen(f"{OUT}/{cam}/camera_info", CameraInfo)
        pubs[cam] = h.client.create_publisher(Image, topic, RELIABLE)
    info_pub = h.client.create_publisher(CameraInfo, "/cams/front/camera_info", RELIABLE)
    for cam, pub in pubs.items():
        wait_until(lambda p=pub: p.get_subscription_count() > 0, what=f"{cam} subscription")
        rec.wait_matched(f"{OUT}/{cam}/label_mask")
    wait_until(lambda: info_pub.get_subscription_count() > 0, what="camera_info subscription")

    # Each camera's label_info is latched under its own namespace.
    for cam in CAMS:
        rec.wait_for(lambda c=cam: rec.get(f"{OUT}/{c}/label_info"), what=f"{cam} label_info")
        assert [c.class_name for c in rec.get(f"{OUT}/{cam}/label_info")[-1].class_map] == ["road", "car", "sky"]

    info = CameraInfo(width=120, height=90)
    info.header = header("front")
    info_pub.publish(info)
    assert rec.wait_stamp(f"{OUT}/front/camera_info", stamp_key(info.header)) == info

    frames = camvid_frames(6)
    sent = {}
    stop = threading.Event()

    def stream(cam, offset):
        i = offset
        while not stop.is_set():
            frame = frames[i % len(frames)]
            msg = rgb_msg(frame, frame_id=cam)
            sent[stamp_key(msg.header)] = (cam, frame)
            pubs[cam].publish(msg)
            i += 1
            time.sleep(1 / 15)

    threads = [threading.Thread(target=stream, args=(cam, k * 3), daemon=True) for k, cam in enumerate(CAMS)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    time.sleep(0.3)

    label_set = reference_segmenter.prepare_labels(["road", "car", "sky"])
    for cam in CAMS:
        masks = rec.get(f"{OUT}/{cam}/label_mask")
        assert len(masks) >= 5, f"{cam}: only {len(masks)} masks"
        for m in masks:
            src_cam, frame = sent[stamp_key(m.header)]
            assert src_cam == cam and m.header.frame_id == cam  # never crossed over
            np.testing.assert_array_equal(mask_of(m), reference_segmenter.segment(frame, label_set).ids)
    stats = node.stats()
    assert all(s["frames_processed"] >= 5 for s in stats.values())

    # One label change reaches both cameras: both republish label_info, both class trees move.
    client = h.client.create_client(SetLabels, "/robot/lgseg_node/set_labels")
    resp = h.call(client, SetLabels.Request(labels=["tree", "building"]))
    assert resp.success
    for cam in CAMS:
        rec.wait_for(lambda c=cam: [x.class_name for x in rec.get(f"{OUT}/{c}/label_info")[-1].class_map]
                     == ["tree", "building"], what=f"{cam} label_info update")
        wait_until(lambda c=cam: f"{OUT}/{c}/class/tree/mask" in topic_names(h.client)
                   and f"{OUT}/{c}/class/car/mask" not in topic_names(h.client), what=f"{cam} class topics")


def test_a_large_label_change_makes_and_retires_class_topics_in_chunks(env):
    """Probe round 5: 16 cameras x 256 new labels are 4,096 publishers, made in one go on
    the executor thread (3.3-4.6 s without a frame taken). They are now made a chunk
    (PUBLISHERS_PER_TURN) per executor turn while set_labels awaits, and the ones that
    leave are destroyed the same way: every camera still gets exactly its set's topics."""
    from lgseg_ros.ros.node import PUBLISHERS_PER_TURN

    h, node = env
    client = h.client.create_client(SetLabels, f"{OUT}/set_labels")
    assert client.wait_for_service(10)
    try:
        for labels in ([f"thing {i}" for i in range(PUBLISHERS_PER_TURN + 36)], ["road", "car", "sky"]):
            reply = h.call(client, SetLabels.Request(labels=labels), timeout=120)
            assert reply.success, reply.message
            want = {f"{OUT}/{cam}/class/{t}/mask" for cam in CAMS for t in topic_tokens(labels)}
            wait_until(lambda: {n for n in topic_names(h.client) if "/class/" in n} == want,
                       timeout=15, what=f"class topics of the {len(labels)}-label set only")
            assert not node._retiring
    finally:
        h.client.destroy_client(client)
