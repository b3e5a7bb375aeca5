"""What the node publishes per frame and per label set: masks, overlay, label_info, label_set.

A mixin of LgsegNode (it uses the node's publishers, segmenter and parameters). The rules:
outputs carry the input header unchanged and the input resolution; a new label set is
announced on label_info / label_set before the first masks made with it; per-class topics
follow the label set, and a token kept across sets keeps its publisher (and subscribers).
Optional outputs (confidence, colour mask, overlay, class masks) are only computed for
topics that have subscribers.
"""
from __future__ import annotations

import time

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                        qos_policy_name_from_kind)
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from lgseg_ros import viz
from lgseg_ros.labels import topic_tokens
from lgseg_ros.ros.image_conversion import numpy_to_image

try:  # the standard type where it exists; field-for-field the same as ours
    from vision_msgs.msg import LabelInfo, VisionClass
    LABEL_INFO_TYPE = "vision_msgs/msg/LabelInfo"
except ImportError:
    from lgseg_ros.msg import LabelInfo, VisionClass
    LABEL_INFO_TYPE = "lgseg_ros/msg/LabelInfo"
from lgseg_ros.msg import LabelEntry
from lgseg_ros.msg import LabelSet as LabelSetMsg

OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                        reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
# Latched: a consumer that starts later still learns what the ids mean.
LABEL_INFO_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                            reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)


# Class masks per frame, in pixels, at most this many times max_image_pixels (64 MB at the
# default): every subscribed class topic gets a full-resolution mono8 image, and each
# writer keeps its last one. 256 labels with a subscriber each made one 2048x2048 frame
# (a 66 KB JPEG can be one) publish and hold a gigabyte. A 640x480 camera still gets 218.
CLASS_MASK_BUDGET_PIXELS = 16


class OutputsMixin:
    def _output_events(self, topic: str) -> PublisherEventCallbacks:
        """QoS event handlers for an output publisher (and /parameter_events). rclpy's default
        logs a line for every subscriber that asks for a QoS the publisher does not offer:
        200 transient_local subscribers to ~/label_mask, made and dropped in 4 s, wrote 200
        lines (40 KB) to the node's log (probe round 10). This one says it once per topic
        every 5 s (the node's QoS Throttle), with the count held back."""
        return PublisherEventCallbacks(
            incompatible_qos=lambda info, t=topic: self._on_output_incompatible_qos(t, info),
            use_default_callbacks=False)

    def _warn_throttled(self, key, text: str) -> None:
        """One warning per ``key`` every 5 s, with the count held back. A Throttle of their
        own: keyed by topic (16 cameras have over 100 outputs), a peer's mismatched
        subscribers used up the 20 lines per 5 s of the throttle that request lines share,
        and a label change then went unlogged (probe round 17)."""
        suppressed = self._qos_throttle(key)
        if suppressed is None:
            return
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        more += self._qos_throttle.dropped_note("such warnings on other topics")
        self.get_logger().warning(text + more)

    def _on_output_incompatible_qos(self, topic: str, info) -> None:
        self._warn_throttled(
            ("incompatible_qos_out", topic),
            f"a subscriber to {self.resolve_topic_name(topic)} asks for QoS this publisher does "
            f"not offer (policy {qos_policy_name_from_kind(info.last_policy_kind)}) and gets "
            "nothing: outputs are reliable and volatile, label_info and label_set transient "
            "local (README, Topics)")

    def _publish_outputs(self, cam, header: Header, rgb: np.ndarray, result) -> None:
        ls = result.label_set
        names = ls.names
        ids = result.ids
        if not header.frame_id and not cam.warned_frame_id:
            cam.warned_frame_id = True
            self.get_logger().warning(
                f"{cam.image_topic}: frames have an empty frame_id; outputs copy the header, "
                "and RViz's Camera display needs a frame_id that exists in TF")
        stamp = (header.stamp.sec, header.stamp.nanosec)
        if cam.info_set is not ls or self._went_back(cam, stamp):
            cam.info_set, cam.info_header = ls, header
            self._publish_label_info(cam, ls, header)
        pubs = cam.pubs
        pubs["label_mask"].publish(
            numpy_to_image(ids, "mono8" if ids.dtype == np.uint8 else "16UC1", header))
        cam.last_mask_stamp = stamp
        if pubs["confidence"].get_subscription_count():
            pubs["confidence"].publish(numpy_to_image(result.confidence, "mono8", header))
        want_color = pubs["color_mask"].get_subscription_count() > 0
        want_overlay = pubs["overlay"].get_subscription_count() > 0
        if want_color or want_overlay:
            color = viz.colorize(ids, names, self._dyn["colormap"])
            if want_color:
                pubs["color_mask"].publish(numpy_to_image(color, "rgb8", header))
            if want_overlay:
                blended = viz.overlay(rgb, color, float(self._dyn["overlay_alpha"]), ids=ids,
                                      num_labels=len(names))
                pubs["overlay"].publish(numpy_to_image(blended, "rgb8", header))
        if cam.class_set is ls:
            budget = CLASS_MASK_BUDGET_PIXELS * int(self._dyn["max_image_pixels"])
            skipped = []
            for class_id, token in enumerate(cam.class_order):
                pub = cam.class_pubs[token]
                if pub.get_subscription_count():
                    if ids.size > budget:
                        skipped.append(class_id)
                        continue
                    budget -= ids.size
                    pub.publish(numpy_to_image(viz.equal_mask(ids, class_id), "mono8", header))
            if skipped:
                cam.stats.count("class_masks_skipped", len(skipped))
                self._log_throttled(
                    cam, "class masks over budget",
                    f"{len(skipped)} subscribed class masks not published for this "
                    f"{ids.shape[1]}x{ids.shape[0]} frame (ids {skipped[0]}..{skipped[-1]}): at most "
                    f"{CLASS_MASK_BUDGET_PIXELS} x max_image_pixels pixels of class masks per frame")

    @staticmethod
    def _went_back(cam, stamp: tuple[int, int]) -> bool:
        """The camera's clock stepped back: the label_info in force is announced again
        with this frame's header, so that by README's stamp rule the masks from here on
        have their set (after a change and a 5 s step back, 20 of 38 new-set masks fell
        under no set or the old one; probe round 8). At most once a second per camera: a
        peer alternating stamps must not get a label_info per frame."""
        if cam.last_mask_stamp is None or stamp >= cam.last_mask_stamp:
            return False
        now = time.monotonic()
        if now - cam.reannounced_at < 1.0:
            return False
        cam.reannounced_at = now
        return True

    def _publish_label_info(self, cam, label_set, header: Header) -> None:
        msg = LabelInfo()
        msg.header = header
        msg.class_map = [VisionClass(class_id=i, class_name=n) for i, n in enumerate(label_set.names)]
        msg.threshold = float(self._segmenter.score_threshold) if self._segmenter else 0.0
        cam.pubs["label_info"].publish(msg)
        report = LabelSetMsg(header=header, labels=self._label_entries(cam, label_set))
        if self._segmenter is not None:
            report.grounding_warn_below = float(self._segmenter.grounding.warn_below)
            report.label_anchor = float(self._segmenter.label_anchor)
        cam.pubs["label_set"].publish(report)

    def _reconcile_class_pubs(self, cam, label_set, destroy: bool = True) -> list:
        """Per-class topics follow the label set; a token kept across sets keeps its publisher
        (and its subscribers). Called under the frame lock or before the worker runs. With
        ``destroy=False`` the publishers of labels that left are returned, for the caller to
        destroy once it has released the frame lock."""
        tokens = topic_tokens(label_set.names)
        keep = set(tokens) | set(cam.reserved)   # and what a change being prepared made
        self._create_class_pubs(cam, tokens)
        stale = [cam.class_pubs.pop(t) for t in [t for t in cam.class_pubs if t not in keep]]
        cam.class_order, cam.class_set = tokens, label_set
        if not destroy:
            return stale
        for pub in stale:
            self.destroy_lifecycle_publisher(pub)
        return []

    def _create_class_pubs(self, cam, tokens) -> None:
        """Publishers for the tokens that have none yet (unused until the set is swapped in).
        Called before the frame lock is taken where it can: 16 cameras x 256 new labels are
        4,096 publishers, about 1.5 s of DDS entity creation that must not stall masks."""
        for token in tokens:
            if token not in cam.class_pubs:
                # A group of its own: rclpy's callback groups keep a weakref to every event
                # handler ever added (the node's destroys drop them since probe round 14,
                # group_hygiene.py), and with the node's default group each label change
                # leaked ~3 KB (measured over 1000 changes). This group goes with its publisher.
                # And no QoS event handlers: rclpy's defaults add two waitables per
                # publisher, which its executor walks on every turn; 16 cameras x 256 labels
                # made 8,192 of them, and the executor thread burnt a core with no frames at
                # all, masks at 1.3 Hz instead of 10 (probe round 9). Their only use was a
                # warning for a subscriber asking for transient_local on a class mask.
                pub = self.create_lifecycle_publisher(
                    Image, f"{cam.out}/class/{token}/mask", OUTPUT_QOS,
                    callback_group=MutuallyExclusiveCallbackGroup(),
                    event_callbacks=PublisherEventCallbacks(use_default_callbacks=False))
                if self._active:
                    pub.on_activate(None)
                cam.class_pubs[token] = pub

    def _label_entries(self, cam, label_set) -> list[LabelEntry]:
        """One entry per id: mask topic (of ``cam``) and what training makes of the word."""
        names = tuple(label_set.names) if label_set is not None else self._current_names()
        grounding = getattr(label_set, "grounding", ()) or ()
        tokens = topic_tokens(names)
        entries = []
        for i, name in enumerate(names):
            e = LabelEntry(class_id=i, label=name, grounding_score=float("nan"), well_grounded=True)
            if cam is not None:
                e.mask_topic = self.resolve_topic_name(f"{cam.out}/class/{tokens[i]}/mask")
            if i < len(grounding):
                g = grounding[i]
                e.nearest_trained_name = g.nearest_name
                e.nearest_trained_class = g.nearest_class
                e.grounding_score = float(g.score)
                e.well_grounded = bool(g.well_grounded)
            entries.append(e)
        return entries
