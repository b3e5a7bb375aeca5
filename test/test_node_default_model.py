"""The default model through the node: the shipped checkpoint when models/ has one (no model
parameters at all, as a plain `ros2 run` uses it), else lite-minilm's own weights (pretrained
backbone and MiniLM, untrained head) saved to a checkpoint the test's reference also loads.
One frame at a small network size: the other node tests use test-tiny for speed.
"""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from lgseg_ros.ros.node import LgsegNode
from test_node_support import (RELIABLE, Recorder, RosHarness, camvid_frames, mask_of, rgb_msg,
                               stamp_key, wait_until)

NET = (128, 160)


@pytest.fixture(scope="module")
def default_checkpoint(tmp_path_factory):
    from lgseg_ros.runtime.segmenter import default_checkpoint_path

    shipped = default_checkpoint_path()
    if shipped:
        return shipped, True
    import torch

    from lgseg_ros.model import build_model, get_config, save_checkpoint

    torch.manual_seed(0)
    cfg = get_config("lite-minilm")
    path = tmp_path_factory.mktemp("lite") / "lite_minilm.safetensors"
    return str(save_checkpoint(path, build_model(cfg), cfg)), False


def test_default_model_serves_a_camvid_frame(default_checkpoint):
    from lgseg_ros.runtime.segmenter import Segmenter

    checkpoint, shipped = default_checkpoint
    overrides = [Parameter("backend", value="torch"), Parameter("device", value="cpu"),
                 Parameter("net_height", value=NET[0]), Parameter("net_width", value=NET[1])]
    if not shipped:
        overrides.append(Parameter("checkpoint", value=checkpoint))
    h = RosHarness()
    try:
        node = h.add(LgsegNode("lgseg_default", context=h.context, parameter_overrides=overrides))
        assert node.lifecycle_state == "active"
        rec = Recorder(h)
        rec.listen("/lgseg_default/label_mask")
        pub = h.client.create_publisher(Image, "/image", RELIABLE)
        wait_until(lambda: pub.get_subscription_count() > 0, what="image subscription")
        rec.wait_matched("/lgseg_default/label_mask")
        frame = camvid_frames(1, hw=(180, 240))[0]
        msg = rgb_msg(frame)
        pub.publish(msg)
        got = rec.wait_stamp("/lgseg_default/label_mask", stamp_key(msg.header), timeout=60)
        assert got.header == msg.header and (got.height, got.width) == (180, 240)
        ref = Segmenter(checkpoint=checkpoint, backend="torch", device="cpu", net_size=NET)
        labels = list(node.get_parameter("labels").value)
        expect = ref.segment(frame, ref.prepare_labels(labels)).ids
        np.testing.assert_array_equal(mask_of(got), expect)
    finally:
        h.close()


def test_the_default_node_runs_room_words_on_the_rooms_model(default_checkpoint):
    """No model parameters: a set of room words is answered by the shipped rooms model (its
    masks, its grounding report), and the reply says so; street words go back to the street
    model (runtime/routing.py)."""
    from lgseg_ros.runtime.routing import rooms_checkpoint_path
    from lgseg_ros.runtime.segmenter import Segmenter
    from lgseg_ros.srv import SetLabels

    checkpoint, shipped = default_checkpoint
    rooms = rooms_checkpoint_path()
    if not shipped or rooms is None:
        pytest.skip("the shipped models are not installed")
    overrides = [Parameter("backend", value="torch"), Parameter("device", value="cpu"),
                 Parameter("net_height", value=NET[0]), Parameter("net_width", value=NET[1])]
    h = RosHarness()
    try:
        node = h.add(LgsegNode("lgseg_routed", context=h.context, parameter_overrides=overrides))
        rec = Recorder(h)
        rec.listen("/lgseg_routed/label_mask")
        pub = h.client.create_publisher(Image, "/image", RELIABLE)
        client = h.client.create_client(SetLabels, "/lgseg_routed/set_labels")
        wait_until(lambda: pub.get_subscription_count() > 0, what="image subscription")
        rec.wait_matched("/lgseg_routed/label_mask")
        words = ["floor", "wall", "door", "chair"]
        resp = h.call(client, SetLabels.Request(labels=words), timeout=60)
        assert resp.success and "rooms model: 'floor' (floor)" in resp.message, resp.message
        assert [e.nearest_trained_class for e in resp.labels] == words
        assert all(e.well_grounded for e in resp.labels) and not resp.warnings
        frame = camvid_frames(1, hw=(180, 240))[0]
        msg = rgb_msg(frame)
        pub.publish(msg)
        got = rec.wait_stamp("/lgseg_routed/label_mask", stamp_key(msg.header), timeout=60)
        ref = Segmenter(checkpoint=rooms, backend="torch", device="cpu", net_size=NET)
        np.testing.assert_array_equal(mask_of(got), ref.segment(frame, ref.prepare_labels(words)).ids)
        resp = h.call(client, SetLabels.Request(labels=["road", "car", "person"]), timeout=60)
        assert resp.success and "street model" in resp.message, resp.message
        assert node.lifecycle_state == "active"
    finally:
        h.close()
