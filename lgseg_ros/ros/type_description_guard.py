"""~/get_type_description with its request checked before rcl sees it.

rclpy hands the request to rcl, which logs a type hash it cannot parse whole, on every
request and without a throttle ("Failed to parse type hash '<the string>'"): 20 requests
with a 200 KB hash wrote 4 MB to stdout and 4 MB to the log file in 0.11 s (probe round
16). A type hash is "RIHS01_" and 64 hex digits (REP 2011) and a type name is short, so
anything else is refused here, shown at most 40 characters, one line per 5 s.
"""
from __future__ import annotations

import re

from type_description_interfaces.srv import GetTypeDescription

from lgseg_ros.labels import shown

TYPE_HASH = re.compile(r"RIHS01_[0-9a-fA-F]{64}")   # rcl parses either case
# ROS type names are package/interface/Name: a few dozen characters.
MAX_TYPE_NAME = 256


def guard_type_description(node, throttle) -> None:
    """Wrap the node's ~/get_type_description handler (rclpy's own), if it has one."""
    for srv in node.services:
        if srv.srv_type is not GetTypeDescription:
            continue
        inner = srv.callback

        def checked(request, response, inner=inner):
            if len(request.type_name) > MAX_TYPE_NAME:
                why = (f"type_name of {len(request.type_name)} characters refused: "
                       f"at most {MAX_TYPE_NAME}")
            elif not TYPE_HASH.fullmatch(request.type_hash):
                why = (f"type_hash {shown(request.type_hash)} refused: "
                       "not RIHS01_ and 64 hex digits")
            else:
                return inner(request, response)
            response.successful = False
            response.failure_reason = why
            suppressed = throttle(("get_type_description", "refused"))
            if suppressed is not None:
                more = f" ({suppressed} more since the last report)" if suppressed else ""
                node.get_logger().warning(f"~/get_type_description: {why}{more}")
            return response

        srv.callback = checked
