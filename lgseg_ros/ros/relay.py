"""`lgseg_relay`: subscribes `image`, republishes the same message on `~/image`, nothing else.

The baseline of `lgseg bench-node`: its latency is what DDS and rclpy cost for one hop of
the same image, in the same run, so what the segmentation node adds beyond inference is
the node's latency minus the relay's minus the model stages.
"""
from __future__ import annotations

import sys

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from lgseg_ros.ros.executor import spin_until_shutdown
from lgseg_ros.ros.params_file_guard import init_rclpy

# The same output QoS as the segmentation node's, so both hops cost the same.
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                        reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


class ImageRelay(Node):
    def __init__(self, node_name: str = "lgseg_relay", **kwargs) -> None:
        # No parameter services: its two parameters are read once, here, from the command
        # line; the services answered a peer's 200,000-name request with seconds of executor
        # time and a malformed value with a traceback and no reply (audit round 18).
        kwargs.setdefault("start_parameter_services", False)
        super().__init__(node_name, **kwargs)
        reliability = self.declare_parameter(
            "qos_reliability", "best_effort",
            ParameterDescriptor(description="Input reliability, as the segmentation node's.")).value
        depth = self.declare_parameter(
            "qos_depth", 1, ParameterDescriptor(description="Input queue depth.")).value
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                         reliability=(ReliabilityPolicy.RELIABLE if reliability == "reliable"
                                      else ReliabilityPolicy.BEST_EFFORT),
                         durability=DurabilityPolicy.VOLATILE)
        self._pub = self.create_publisher(Image, "~/image", OUTPUT_QOS)
        self._sub = self.create_subscription(Image, "image", self._pub.publish, qos)


def main(argv: list[str] | None = None) -> int:
    # The node's guard on its parameter files: rcl's parse of an oversized one held the relay
    # as long as it held the node (see params_file_guard.py).
    refused = init_rclpy(sys.argv if argv is None else ["lgseg_relay", *argv])
    if refused:
        print(f"[lgseg_relay] cannot start: {refused}", file=sys.stderr)
        return 2
    node = ImageRelay()
    try:
        spin_until_shutdown(node)  # the node's executor: both hops cost the same
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
