"""~/change_state with a bounded transition label.

rclpy hands a request's transition label to rcl_lifecycle, which logs it whole when no
transition matches ("No transition matching <label> found for current state ..."), once per
request: five requests with a 1,000,000-character label wrote 5 MB to the node's log
(probe round 4). rcl_lifecycle's longest label is 21 characters ("unconfigured_shutdown");
a longer one is refused here before rcl sees it, shown at most 40 characters, and the
refusals are logged at most once per 5 s.
"""
from __future__ import annotations

from lifecycle_msgs.srv import ChangeState

from lgseg_ros.labels import shown

MAX_TRANSITION_LABEL = 64


def guard_change_state(node, throttle) -> None:
    """Wrap the node's ~/change_state handler (rclpy's own) with the label bound."""
    for srv in node.services:
        if srv.srv_type is not ChangeState:
            continue
        inner = srv.callback

        def bounded(request, response, inner=inner):
            label = request.transition.label
            if len(label) <= MAX_TRANSITION_LABEL:
                return inner(request, response)
            response.success = False
            suppressed = throttle(("change_state", "long label"))
            if suppressed is not None:
                more = f" ({suppressed} more since the last report)" if suppressed else ""
                node.get_logger().warning(
                    f"~/change_state: transition label {shown(label)} refused: longer than "
                    f"{MAX_TRANSITION_LABEL} characters (lifecycle labels are at most 21){more}")
            return response

        srv.callback = bounded
