"""~/change_state with a bounded transition label.

rclpy hands a request's transition label to rcl_lifecycle, which logs it whole when no
transition matches ("No transition matching <label> found for current state ..."), once per
request: five requests with a 1,000,000-character label wrote 5 MB to the node's log
(probe round 4). rcl_lifecycle's longest label is 21 characters ("unconfigured_shutdown");
a longer one is refused here before rcl sees it, shown at most 40 characters, and the
refusals are logged at most once per 5 s.

A transition the current state does not have (an unknown id, `activate` while active, a
short unknown label) cost two lines per request, rcl_lifecycle's "No transition matching"
and rclpy's "Unable to start transition": 3,870 such requests (128 KB) in 5 s wrote 767 KB
of log (probe round 10). Such a request is refused here, from the state machine's list of
available transitions, with one line per 5 s naming what is available.
"""
from __future__ import annotations

from lifecycle_msgs.srv import ChangeState

from lgseg_ros.labels import shown

MAX_TRANSITION_LABEL = 64


def guard_change_state(node, throttle) -> None:
    """Wrap the node's ~/change_state handler (rclpy's own): the label bound, then the
    transitions the current state has."""
    for srv in node.services:
        if srv.srv_type is not ChangeState:
            continue
        inner = srv.callback

        def bounded(request, response, inner=inner):
            label = request.transition.label
            if len(label) > MAX_TRANSITION_LABEL:
                return _refuse(node, throttle, response, "long label",
                               f"transition label {shown(label)} refused: longer than "
                               f"{MAX_TRANSITION_LABEL} characters (lifecycle labels are at most 21)")
            machine = node._state_machine
            available = machine.available_transitions   # (id, label, start, ..., goal, ...)
            # rclpy's rule: a label, when given, names the transition; else the id does.
            if any((t[1] == label) if label else (t[0] == request.transition.id) for t in available):
                return inner(request, response)
            asked = shown(label) if label else f"id {request.transition.id}"
            offered = ", ".join(f"{t[1]} ({t[0]})" for t in available) or "none"
            return _refuse(node, throttle, response, "unavailable",
                           f"transition {asked} refused: not available from state "
                           f"{machine.current_state[1]!r} (available: {offered})")

        srv.callback = bounded


def _refuse(node, throttle, response, kind: str, line: str):
    response.success = False
    suppressed = throttle(("change_state", kind))
    if suppressed is not None:
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        node.get_logger().warning(f"~/change_state: {line}{more}")
    return response
