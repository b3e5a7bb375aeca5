"""Issue 10: no request may end the process. The Respin executors log a callback's
exception and spin on; real rclpy, a real service over Fast DDS on loopback."""
import time

from rclpy.node import Node
from std_srvs.srv import SetBool

from test_node_support import RosHarness


def test_a_callback_that_raises_costs_its_request_not_the_executor():
    h = RosHarness()
    try:
        server = h.add(Node("lgseg_raising_server", context=h.context))

        def callback(req, resp):
            if req.data:
                raise ValueError("hostile request")
            resp.success = True
            return resp

        server.create_service(SetBool, "/raising/set", callback)
        client = h.client.create_client(SetBool, "/raising/set")
        assert client.wait_for_service(timeout_sec=20)
        future = client.call_async(SetBool.Request(data=True))  # raises in the callback
        deadline = time.monotonic() + 20
        while h.executor.callback_errors == 0:
            assert time.monotonic() < deadline, "the callback never ran"
            time.sleep(0.01)
        assert "hostile request" in h.executor.last_callback_error
        assert h.spin.alive and not h.spin.error
        client.remove_pending_request(future)
        h.executor.callback_errors = 0  # seen; the harness reports unseen ones
        reply = h.call(client, SetBool.Request(data=False))
        assert reply.success
    finally:
        h.close()


def test_a_flood_of_one_error_is_logged_once_and_counted(caplog):
    """Probe round 9: with use_sim_time, /clock messages of negative seconds make rclpy's
    clock callback raise, one 2 KB traceback each at the peer's rate. The same error from
    the same place is logged once per ERROR_LOG_PERIOD_S; every one is still counted."""
    import logging

    h = RosHarness()
    try:
        node = h.add(Node("lgseg_raising_timer", context=h.context))
        raised = []

        def tick():
            raised.append(1)
            raise ValueError("one more bad clock")

        with caplog.at_level(logging.ERROR, logger="lgseg_ros.ros.executor"):
            timer = node.create_timer(0.002, tick)
            deadline = time.monotonic() + 20
            while len(raised) < 200:
                assert time.monotonic() < deadline, f"the timer ran {len(raised)} times"
                time.sleep(0.01)
            node.destroy_timer(timer)
        lines = [r for r in caplog.records if "one more bad clock" in r.getMessage()]
        assert len(raised) >= 200 and h.executor.callback_errors >= 200
        assert len(lines) == 1, [r.getMessage()[:120] for r in lines]
        assert h.spin.alive and not h.spin.error
        h.executor.callback_errors = 0
    finally:
        h.close()
