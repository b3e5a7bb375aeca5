"""The node's executor survives a publisher destroyed while it builds a wait set.

The race (ros2/rclpy#1284) needs another thread to destroy a publisher between the
executor's gathering of the node's waitables and its adding them to the wait set. A waitable
that destroys the publisher from its own ``__enter__`` puts that destruction at exactly that
point, every time, so the test does not depend on thread timing. Real rclpy, real DDS.
"""
from __future__ import annotations

import threading
import time

import pytest
import rclpy
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.waitable import NumberOfEntities, Waitable
from std_msgs.msg import Empty

from lgseg_ros.ros.executor import RespinExecutor, RespinMultiThreadedExecutor


class _DestroyOnEnter(Waitable):
    """Destroys `pub` the first time the executor enters it, as another thread could."""

    def __init__(self, node: Node) -> None:
        super().__init__(node.default_callback_group)
        self.node, self.pub = node, None

    def __enter__(self) -> None:
        if self.pub is not None:
            self.node.destroy_publisher(self.pub)
            self.pub = None

    def __exit__(self, *exc) -> None:
        pass

    def is_ready(self, wait_set) -> bool:
        return False

    def take_data(self):
        return None

    async def execute(self, taken_data) -> None:
        return None

    def get_num_entities(self) -> NumberOfEntities:
        return NumberOfEntities()

    def add_to_wait_set(self, wait_set) -> None:
        pass


@pytest.fixture()
def race_node():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = Node("lgseg_executor_race", context=ctx)
    trap = _DestroyOnEnter(node)
    node.add_waitable(trap)  # before the publisher's event handlers in node.waitables
    trap.pub = node.create_publisher(Empty, "~/doomed", 1)
    assert trap.pub.event_handlers, "rclpy gave the publisher no QoS event handler to race on"
    try:
        yield ctx, node
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)


@pytest.mark.parametrize("plain", [SingleThreadedExecutor, MultiThreadedExecutor])
def test_plain_executor_is_what_breaks(race_node, plain):
    """The upstream bug as of the rclpy in use. If this starts failing, rclpy has fixed it
    and the respin guard can go."""
    ctx, node = race_node
    executor = plain(context=ctx)
    executor.add_node(node)
    try:
        with pytest.raises(rclpy.exceptions.InvalidHandle):
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()


@pytest.mark.parametrize("respin", [RespinExecutor, RespinMultiThreadedExecutor])
def test_respin_executor_survives_and_keeps_serving(race_node, respin):
    ctx, node = race_node
    executor = respin(context=ctx)
    executor.add_node(node)
    ticks = threading.Event()
    node.create_timer(0.01, ticks.set)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        assert ticks.wait(5.0), "the executor stopped running callbacks"
        time.sleep(0.1)
        assert thread.is_alive(), "spin() ended"
        assert executor.invalid_handle_respins == 1
    finally:
        executor.shutdown()
        thread.join(5.0)
