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
