"""A consumer shaped like Nav2's semantic segmentation costmap layer
(kiwicampus/semantic_segmentation_layer), over real DDS on loopback.

The layer subscribes to the class-id mask and the confidence image with sensor-data QoS
(best effort, volatile, keep last), to LabelInfo reliable + transient local (depth 5),
pairs mask and confidence by exact header stamp, and on every LabelInfo rebuilds its
class-name -> id table, which it then applies to every mask it receives. This test does
the same in Python and checks, for every frame streamed across two label changes that
reorder the ids, that the mask, the confidence and the LabelInfo the layer would hold at
that moment agree: same header, mono8, and the mask, read through that table by name, is
exactly what the model gives for that label set.

Not run here: the layer itself (Nav2 is not on PyPI) and vision_msgs/LabelInfo, the type
the layer reads (vision_msgs is not on PyPI either; the node publishes it where it is
installed, and lgseg_ros/LabelInfo, field for field the same, otherwise).
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from lgseg_ros.msg import LabelInfo
from lgseg_ros.ros.node import LgsegNode
from lgseg_ros.srv import SetLabels
from test_node_support import (RELIABLE, RosHarness, camvid_frames, mask_of, node_params,  # noqa: F401
                               reference_segmenter, rgb_msg, stamp_key, tiny_checkpoint, wait_until)

NAME = "lgseg_nav2_node"
NS = f"/{NAME}"
# nav2::qos::SensorDataQoS(depth) and LatchedSubscriptionQoS(5), as the layer creates them.
SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
# The layer's class_types, matched by name; labels outside them are ignored by the layer.
LAYER_CLASSES = {"traversable": ["road"], "danger": ["car", "pedestrian"]}
SETS = [["road", "car", "sky"], ["sky", "pedestrian", "road"], ["car", "road"]]


class LayerLikeConsumer:
    """Keeps what the layer keeps: the newest LabelInfo's name -> id table at the moment
    each mask arrives, and the confidence images by stamp."""

    def __init__(self, node) -> None:
        self.lock = threading.Lock()
        self.info: LabelInfo | None = None
        self.infos: list[LabelInfo] = []
        self.masks: list[tuple[Image, LabelInfo | None]] = []
        self.confidence: dict[tuple[int, int], Image] = {}
        # In the layer's order (segmentation, label_info, confidence): an rclpy or rclcpp
        # executor serves subscriptions that are ready together in creation order, so a
        # mask that arrives with the label_info of its set is handled first, as in the
        # layer, and must not need that label_info.
        node.create_subscription(Image, f"{NS}/label_mask", self._on_mask, SENSOR_QOS)
        node.create_subscription(LabelInfo, f"{NS}/label_info", self._on_info, LATCHED_QOS)
        node.create_subscription(Image, f"{NS}/confidence", self._on_conf, SENSOR_QOS)

    def _on_info(self, msg) -> None:
        with self.lock:
            self.info = msg
            self.infos.append(msg)

    def _on_mask(self, msg) -> None:
        with self.lock:
            self.masks.append((msg, self.info))

    def _on_conf(self, msg) -> None:
        with self.lock:
            self.confidence[stamp_key(msg.header)] = msg


@pytest.fixture(scope="module")
def env(tiny_checkpoint):
    h = RosHarness()
    try:
        node = h.add(LgsegNode(NAME, context=h.context, parameter_overrides=node_params(
            tiny_checkpoint, labels=SETS[0])))
        assert node.lifecycle_state == "active"
        yield h, node
    finally:
        h.close()


def test_a_late_layer_gets_the_label_info_in_force(env):
    h, _ = env
    time.sleep(0.5)  # the node published label_info long before this consumer exists
    consumer = LayerLikeConsumer(h.client)
    wait_until(lambda: consumer.info is not None, what="latched label_info")
    assert [c.class_name for c in consumer.info.class_map] == SETS[0]
    assert [c.class_id for c in consumer.info.class_map] == [0, 1, 2]


@pytest.mark.parametrize("camera_ahead_s", [0.0, 0.5])
def test_mask_confidence_and_label_info_agree_for_every_frame_across_label_changes(
        env, reference_segmenter, camera_ahead_s):
    """camera_ahead_s: the camera's clock ahead of the node's (probe round 7: a label_info
    stamped with the node clock then came before old-set masks by stamp, ~3 per change)."""
    h, _ = env
    consumer = LayerLikeConsumer(h.client)
    wait_until(lambda: consumer.info is not None, what="latched label_info")
    pub = h.client.create_publisher(Image, "/image", RELIABLE)
    wait_until(lambda: pub.get_subscription_count() > 0, what="the node's image subscription")
    wait_until(lambda: h.client.count_subscribers(f"{NS}/confidence") > 0, what="confidence subscriber")
    frames = camvid_frames(6)
    sent: dict[tuple[int, int], int] = {}
    stop = threading.Event()

    def stream():  # a 15 Hz camera, running through the label changes
        i = 0
        while not stop.is_set():
            msg = rgb_msg(frames[i % len(frames)])
            ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(
                ns + int(camera_ahead_s * 1e9), 1_000_000_000)
            sent[stamp_key(msg.header)] = i % len(frames)
            pub.publish(msg)
            i += 1
            time.sleep(1 / 15)

    def masks_arrive(n):
        seen = len(consumer.masks)
        wait_until(lambda: len(consumer.masks) >= seen + n, timeout=60, what=f"{n} more masks")

    client = h.client.create_client(SetLabels, f"{NS}/set_labels")
    assert h.call(client, SetLabels.Request(labels=SETS[0])).success
    with consumer.lock:   # from the first set on: what an earlier run left is not checked
        consumer.masks.clear()
    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    try:
        masks_arrive(5)
        for labels in SETS[1:]:
            resp = h.call(client, SetLabels.Request(labels=labels))
            assert resp.success, resp.message
            masks_arrive(5)
    finally:
        stop.set()
        thread.join()
    time.sleep(0.5)  # the last confidences in flight

    expected = {}
    for labels in SETS:
        label_set = reference_segmenter.prepare_labels(labels)
        expected[tuple(labels)] = [reference_segmenter.segment(f, label_set) for f in frames]
    seen_sets = set()
    with consumer.lock:
        masks = list(consumer.masks)
    assert len(masks) >= 15
    for mask_msg, info in masks:
        key = stamp_key(mask_msg.header)
        assert info is not None, "a mask arrived before any label_info"
        names = [c.class_name for c in info.class_map]
        assert [c.class_id for c in info.class_map] == list(range(len(names)))
        # The README's rule, for consumers that go by stamps instead of arrival: the newest
        # label_info stamped at or before the mask is the mask's set. (The one held by arrival
        # may be stamped later than the mask: the node-clock announcement of a change can be
        # newer than the camera stamp of the first frame served under it.)
        with consumer.lock:
            earlier = [i for i in consumer.infos if stamp_key(i.header) <= key]
        assert earlier, f"no label_info stamped at or before mask {key}"
        by_stamp = max(earlier, key=lambda i: stamp_key(i.header))
        assert [c.class_name for c in by_stamp.class_map] == names, (key, names)
        assert mask_msg.encoding == "mono8" and key in sent
        conf = consumer.confidence.get(key)
        assert conf is not None, f"no confidence with the mask's stamp {key} (exact sync would drop it)"
        assert conf.encoding == "mono8" and conf.header == mask_msg.header
        assert (conf.height, conf.width) == (mask_msg.height, mask_msg.width)
        ref = expected[tuple(names)][sent[key]]
        ids = mask_of(mask_msg)
        # Read by name, as the layer does: every layer class gets exactly the model's pixels
        # for that word under this label set, and nothing else is claimed.
        for cls, words in LAYER_CLASSES.items():
            by_name = {c.class_name: c.class_id for c in info.class_map if c.class_name in words}
            marked = np.isin(ids, list(by_name.values()))
            truth = np.isin(ref.ids, [names.index(w) for w in words if w in names])
            np.testing.assert_array_equal(marked, truth, err_msg=f"{cls} under {names}")
        np.testing.assert_array_equal(ids, ref.ids)
        np.testing.assert_array_equal(mask_of(conf), ref.confidence)
        seen_sets.add(tuple(names))
    assert seen_sets == {tuple(s) for s in SETS}, "masks of every label set were checked"


def test_a_camera_clock_stepping_back_gets_its_label_info_again(env):
    """Probe round 8: after a label change the camera's clock stepped back 5 s; by README's
    rule 20 of 38 new-set masks then fell under no label_info or the old set. The node
    announces the set in force again with the first frame after the step."""
    h, _ = env
    consumer = LayerLikeConsumer(h.client)
    wait_until(lambda: consumer.info is not None, what="latched label_info")
    pub = h.client.create_publisher(Image, "/image", RELIABLE)
    wait_until(lambda: pub.get_subscription_count() > 0, what="the node's image subscription")
    client = h.client.create_client(SetLabels, f"{NS}/set_labels")
    assert h.call(client, SetLabels.Request(labels=SETS[0])).success
    frame = camvid_frames(1)[0]
    offset = [0]

    def send(n):
        for _ in range(n):
            msg = rgb_msg(frame)
            ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec + offset[0]
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)
            seen = len(consumer.masks)
            pub.publish(msg)
            wait_until(lambda: len(consumer.masks) > seen, timeout=30, what="its mask")

    send(3)
    assert h.call(client, SetLabels.Request(labels=SETS[1])).success
    send(3)
    offset[0] = -5_000_000_000   # the camera's clock steps back 5 s
    with consumer.lock:
        before = len(consumer.masks)
    send(5)
    time.sleep(0.3)
    with consumer.lock:
        after = [m for m, _ in consumer.masks[before:]]
        infos = list(consumer.infos)
    for mask in after:
        key = stamp_key(mask.header)
        earlier = [i for i in infos if stamp_key(i.header) <= key]
        assert earlier, f"no label_info stamped at or before mask {key}"
        by_stamp = max(earlier, key=lambda i: stamp_key(i.header))
        assert [c.class_name for c in by_stamp.class_map] == SETS[1], key


def test_label_info_is_field_for_field_vision_msgs():
    # What the layer reads from vision_msgs/LabelInfo: header, class_map[].class_id/.class_name.
    fields = LabelInfo.get_fields_and_field_types()
    assert fields == {"header": "std_msgs/Header", "class_map": "sequence<lgseg_ros/VisionClass>",
                      "threshold": "float"}
    from lgseg_ros.msg import VisionClass
    assert VisionClass.get_fields_and_field_types() == {"class_id": "uint16", "class_name": "string"}


# Parameters the layer declares per observation source and per class type (read from
# semantic_segmentation_layer.cpp, kiwicampus and ros-navigation versions).
LAYER_SOURCE_PARAMS = {"segmentation_topic", "confidence_topic", "labels_topic", "pointcloud_topic",
                       "observation_persistence", "expected_update_rate", "class_types",
                       "max_obstacle_distance", "min_obstacle_distance", "tile_map_decay_time",
                       "visualize_tile_map", "use_cost_selection"}
LAYER_CLASS_PARAMS = {"classes", "base_cost", "max_cost", "mark_confidence", "samples_to_max_cost",
                      "dominant_priority"}


def test_the_documented_layer_config_names_real_topics_params_and_labels():
    import re
    from pathlib import Path

    import yaml

    from lgseg_ros.labels import validate_labels
    from lgseg_ros.ros import params as P

    doc = (Path(__file__).resolve().parents[1] / "docs" / "NAV2.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", doc, re.S).group(1)
    layer = yaml.safe_load(block)["semantic_segmentation_layer"]
    source = layer[layer["observation_sources"]]
    outputs = {t.replace("~", f"/{P.NODE_NAME}") for t in P.OUTPUT_TOPICS}
    for key in ("segmentation_topic", "confidence_topic", "labels_topic"):
        assert source[key] in outputs, source[key]
    assert source["segmentation_topic"].endswith("/label_mask")
    assert source["confidence_topic"].endswith("/confidence")
    params = {k for k in source if k not in source["class_types"]}
    assert params <= LAYER_SOURCE_PARAMS, params - LAYER_SOURCE_PARAMS
    words = []
    for cls in source["class_types"]:
        assert set(source[cls]) <= LAYER_CLASS_PARAMS
        words += source[cls]["classes"]
    # The layer matches names exactly: they must be what the node publishes after validation.
    assert list(validate_labels(words)) == words
    set_line = re.search(r"lgseg labels set (.*?)\s+#", doc).group(1).split()
    assert set_line == words
