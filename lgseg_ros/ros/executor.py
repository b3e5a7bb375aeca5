"""The executor the node spins in: rclpy's MultiThreadedExecutor, kept alive through a race
in rclpy's wait-set construction.

rclpy (9.1.2, Kilted; also Humble and Jazzy) collects a node's waitables, then adds each to
the wait set. A publisher or subscription destroyed by another thread in between leaves its
QoS-event handler in that list, and ``add_to_wait_set`` raises ``InvalidHandle`` ("cannot
use Destroyable because destruction was requested") out of ``spin()``: the executor thread
ends and the node stops answering services and taking images, without a crash to show for
it when the spin runs on a thread (ros2/rclpy#1284, #1355; fixes in ros2/rclpy#1150, #1590
are not in the released wheels). The node destroys per-class publishers on every label
change, so a label change under load could stop it. The destroyed entity has already left
the node's lists, so the next wait set is built without it: catching the error and spinning
on is the whole fix (the same workaround as ros2_ros_bt_py#238).
"""
from __future__ import annotations

import logging

from rclpy._rclpy_pybind11 import InvalidHandle
from rclpy.executors import MultiThreadedExecutor

_log = logging.getLogger(__name__)


class RespinExecutor(MultiThreadedExecutor):
    """MultiThreadedExecutor that survives entities destroyed while it builds a wait set."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.invalid_handle_respins = 0   # how often the race was hit (tests, diagnostics)

    def _spin_once_impl(self, *args, **kwargs) -> None:
        try:
            super()._spin_once_impl(*args, **kwargs)
        except InvalidHandle as e:
            self.invalid_handle_respins += 1
            _log.debug("executor: an entity was destroyed while the wait set was built (%s); "
                       "spinning on", e)
