"""How long a configure and a cleanup asked for through ~/change_state hold the node's
executor, with many cameras and many labels (README, "Configure on the executor").

The node (test-tiny checkpoint, `cameras` x `labels` as given) and a client share one
executor, as a peer's request and the node's own timers would; a 10 ms timer on that
executor ticks throughout, and the longest gap between its ticks while a request is in
flight is how long the executor was held. Prints JSON. Run from the tree to measure (its
`lgseg_ros` is imported from the working directory):

    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=84 .venv/bin/python \\
        tools/measure_configure_hold.py --cameras 16 --labels 256 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cameras", type=int, default=16)
    p.add_argument("--labels", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3, help="configure + cleanup pairs")
    a = p.parse_args(argv)
    sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "test")]
    import rclpy
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    from rclpy.node import Node

    import lgseg_ros
    from lgseg_ros.ros.executor import BackgroundSpin, RespinExecutor
    from lgseg_ros.ros.node import LgsegNode
    from test_node_support import make_checkpoint, node_params

    ckpt = make_checkpoint(Path(tempfile.mkdtemp()) / "tiny.safetensors")
    cams = [f"cam{i:02d}" for i in range(a.cameras)]
    words = [f"w{chr(97 + i // 26 % 26)}{chr(97 + i % 26)}" for i in range(a.labels)]
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    ex = RespinExecutor(context=ctx)
    node = LgsegNode("lgseg_hold", context=ctx, parameter_overrides=node_params(
        ckpt, cameras=cams, labels=words, autostart=False))
    client = Node("lgseg_hold_client", context=ctx)
    ticks: list[float] = []
    client.create_timer(0.01, lambda: ticks.append(time.monotonic()))
    ex.add_node(node)
    ex.add_node(client)
    spin = BackgroundSpin(ex, name="spin").start()
    cli = client.create_client(ChangeState, "/lgseg_hold/change_state")
    if not cli.wait_for_service(10):
        raise SystemExit("~/change_state did not appear")

    def transition(tid: int) -> dict:
        ticks.clear()
        t0 = time.monotonic()
        fut = cli.call_async(ChangeState.Request(transition=Transition(id=tid)))
        while not fut.done():
            time.sleep(0.002)
        t1 = time.monotonic()
        time.sleep(0.1)
        ts = [t0] + [t for t in ticks if t0 <= t <= t1 + 0.05]
        gap = max((b - c for c, b in zip(ts, ts[1:])), default=float("nan"))
        return {"success": bool(fut.result().success), "reply_s": round(t1 - t0, 3),
                "executor_held_s": round(gap, 3)}

    rounds = []
    try:
        for _ in range(a.rounds):
            rounds.append({"configure": transition(Transition.TRANSITION_CONFIGURE),
                           "cleanup": transition(Transition.TRANSITION_CLEANUP)})
    finally:
        spin.stop()
        ex.shutdown(5)
        node.destroy_node()
        client.destroy_node()
        rclpy.try_shutdown(context=ctx)
    print(json.dumps({"lgseg_ros": str(Path(lgseg_ros.__file__).parent), "cameras": a.cameras,
                      "labels": a.labels, "load_avg_1m": round(os.getloadavg()[0], 2),
                      "rounds": rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
