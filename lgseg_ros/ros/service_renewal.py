"""Service servers renewed after an oversized request, so Fast DDS gives the request back.

rmw_fastrtps gives every reader the ``PREALLOCATED_WITH_REALLOC`` history memory policy: its
payload pool grows to the largest sample the reader has received and keeps that size until
the reader is destroyed (``TopicPayloadPool::release_history``); ``malloc_trim`` cannot
return it. A service server's request reader is such a reader: one describe_parameters
request of 100 names x 2 MB, refused by param_guard, left the node that much larger for
good, and each other service could be made to hold as much (issue 20, hostile peers). The
image subscriptions had the same leak and the same cure (``LgsegNode._renew_input``).

Every watched server's callback is wrapped: it estimates the request's serialized size
(``request_bytes``, bounded work), and after a request over ``RENEW_SERVICE_ABOVE_BYTES``,
or once the requests over ``COUNT_ABOVE_BYTES`` since the server was made add up to
``RENEW_AFTER_TOTAL_BYTES`` (many queued requests just under the first limit each kept a
buffer), the server is destroyed and created again with its name, type, QoS, callback and
group, and the heap is trimmed:

* after the reply: from a timer, once no request of that server is being answered (the
  label-changing handlers are coroutines that await the encoder);
* once the server has had no request for ``RENEW_QUIET_S``, so that a client in the middle
  of a series of calls (``ros2 param dump``) is not cut off; a peer that keeps calling
  postpones it by at most ``RENEW_INTERVAL_S``;
* at most once per ``RENEW_INTERVAL_S`` per server, so a peer cannot make the node churn
  DDS entities; a large request inside the interval moves the renewal to the interval's
  end instead of dropping it, so the last large request is always followed by one.

A request still queued in the old server when it is destroyed, or sent by a client that
had matched the old server only, is lost: the client gets no reply and times out (rclpy's
``call_async`` waits until the caller gives up; `ros2 service call` and `ros2 param` give up
after their timeout) and may call again. The node itself is not affected. The old server is
destroyed before the new one is made: with both alive a request would be served twice.

Not covered: rcl_lifecycle's services (the state machine creates and owns them, and cannot
renew them without being recreated itself; ``~/change_state`` carries an unbounded label),
``~/get_type_description`` (rclpy's C object keeps its server alive: destroying the Python
wrapper and making another left two servers, the old one still taking requests), and a
sample whose wire size is large but which deserializes to a small request (the handler
never sees its size).
"""
from __future__ import annotations

import array
import copy
import inspect
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Iterable

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType

from lgseg_ros.procinfo import trim_heap

# Far above any legitimate request: 256 labels of 64 characters are 17 KB, `ros2 param
# dump` asks for ~25 names.
RENEW_SERVICE_ABOVE_BYTES = 1 << 20
# Many requests just under that held as much: every queued request has its own buffer of
# the reader's pool, so 1,000 requests of 1,000,000 bytes to three parameter services kept
# +1,028 MB for good (probe round 16). Requests over COUNT_ABOVE_BYTES (an ordinary set
# of 256 labels is 17 KB; only a set of raw names near the 1,024-character pre-normalisation
# cap, ~263 KB, is counted, and it takes 32 of those to renew) are summed since the server was made, and the server is renewed once they pass
# RENEW_AFTER_TOTAL_BYTES; ordinary traffic never renews it.
COUNT_ABOVE_BYTES = 64 << 10
RENEW_AFTER_TOTAL_BYTES = 8 << 20
RENEW_INTERVAL_S = 5.0
RENEW_QUIET_S = 0.5
# How often a pending renewal looks whether it may run (a timer only while one is pending).
RENEW_CHECK_S = 0.25


def request_bytes(msg: Any, limit: int) -> int:
    """A lower estimate of ``msg``'s CDR size, in work bounded by ``limit``: the count stops
    as soon as it is over ``limit``, and every element visited adds at least a byte."""
    total, stack = 0, [msg]
    while stack and total <= limit:
        value = stack.pop()
        if isinstance(value, (str, bytes, bytearray)):
            total += 4 + len(value)
        elif isinstance(value, (bool, int, float)) or value is None:
            total += 1
        elif isinstance(value, array.array):
            total += 4 + len(value) * value.itemsize
        elif hasattr(value, "nbytes"):                   # numpy: fixed-size arrays
            total += int(value.nbytes)
        elif isinstance(value, (list, tuple)):
            total += 4
            if not value:
                continue
            if total + len(value) > limit:               # at least a byte each: over already
                total += len(value)
            elif isinstance(value[0], str):              # string sequences summed in C
                total += 4 * len(value) + sum(map(len, value))
            elif isinstance(value[0], bytes):            # octet sequences: a bytes per octet
                total += sum(map(len, value))
            else:
                stack.extend(value)
        elif hasattr(type(value), "get_fields_and_field_types"):
            stack.extend(getattr(value, f) for f in type(value).get_fields_and_field_types())
    return total


@dataclass(eq=False)
class _Watched:
    service: Any
    inflight: int = 0
    last_request_at: float = float("-inf")
    due_since: float = 0.0
    timer: Any = None
    renewed_at: float = float("-inf")
    counted_bytes: int = 0   # of requests over COUNT_ABOVE_BYTES, since the server was made


class ServiceRenewal:
    """Watches a node's service servers; see the module docstring."""

    def __init__(self, node, above_bytes: int = RENEW_SERVICE_ABOVE_BYTES,
                 interval_s: float = RENEW_INTERVAL_S) -> None:
        self._node = weakref.proxy(node)   # the node owns this object, not the reverse
        self.above_bytes = above_bytes
        self.interval_s = interval_s
        self._group = MutuallyExclusiveCallbackGroup()
        self._watched: dict[str, _Watched] = {}
        # The node spins single-threaded, but an application may spin it in a multi-
        # threaded executor, where the parameter services (a reentrant group) run in parallel.
        self._lock = threading.Lock()

    def watch(self, services: Iterable[Any]) -> None:
        for srv in services:
            if srv.srv_name in self._watched:
                continue
            watched = _Watched(srv)
            self._watched[srv.srv_name] = watched
            srv.callback = self._measured(watched, srv.callback)

    def _measured(self, watched: _Watched, inner):
        async def measured(request, response):
            try:
                size = request_bytes(request, self.above_bytes)
            except Exception:   # an estimate must never cost the request its reply
                size = 0
            with self._lock:
                watched.inflight += 1
                watched.last_request_at = time.monotonic()
                if size > COUNT_ABOVE_BYTES:
                    watched.counted_bytes += min(size, self.above_bytes + 1)
                large = size > self.above_bytes or watched.counted_bytes > RENEW_AFTER_TOTAL_BYTES
            try:
                result = inner(request, response)
                return (await result) if inspect.isawaitable(result) else result
            finally:
                with self._lock:
                    watched.inflight -= 1
                    watched.last_request_at = time.monotonic()
                if large:
                    try:
                        self._schedule(watched)
                    except Exception as e:   # a node being destroyed: the reply still goes
                        self._node.get_logger().warning(f"service renewal not scheduled: {e}")
        return measured

    def _schedule(self, watched: _Watched) -> None:
        with self._lock:
            if watched.timer is not None:
                return
            watched.due_since = time.monotonic()
            # Steady clock: on ROS time a /clock that stops (or never comes) kept the buffer.
            watched.timer = self._node.create_timer(RENEW_CHECK_S, lambda: self._renew(watched),
                                                    callback_group=self._group,
                                                    clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _renew(self, watched: _Watched) -> None:
        node = self._node
        with self._lock:
            now = time.monotonic()
            if watched.inflight or now < watched.renewed_at + self.interval_s:
                return
            if now - watched.last_request_at < RENEW_QUIET_S and now - watched.due_since < self.interval_s:
                return
            node.destroy_timer(watched.timer)
            watched.timer = None
            watched.renewed_at = now
            self._remake(watched, watched.service.qos_profile)
        # The pool's buffers were freed into glibc's heap (below the node's mmap threshold),
        # which keeps them until trimmed: a renewal alone gave back a third (round 16).
        trim_heap()
        node.get_logger().info(
            f"{watched.service.service_name}: server renewed after a request over "
            f"{self.above_bytes >> 20} MB or {RENEW_AFTER_TOTAL_BYTES >> 20} MB of requests over "
            f"{COUNT_ABOVE_BYTES >> 10} KB, so that Fast DDS frees the buffers it kept for them "
            f"(a request sent during the renewal gets no reply; README, Troubleshooting, "
            f"\"Oversized samples\")")

    def _remake(self, watched: _Watched, qos) -> None:
        """Destroy the server and make it again with ``qos`` (caller holds the lock)."""
        node, old = self._node, watched.service
        group = old.callback_group
        node.destroy_service(old)
        if group is not None:
            group.entities.discard(weakref.ref(old))
        watched.service = node.create_service(old.srv_type, old.srv_name, old.callback,
                                              qos_profile=qos, callback_group=group)
        watched.counted_bytes = 0

    def set_request_depth(self, depth: int, which) -> None:
        """Make the watched servers for which ``which(service)`` is true again with a
        request queue of ``depth`` (at start-up, before any request)."""
        with self._lock:
            for watched in self._watched.values():
                old = watched.service
                if which(old):
                    qos = copy.copy(old.qos_profile)
                    qos.depth = depth
                    self._remake(watched, qos)


def watch_node_services(node) -> ServiceRenewal:
    """Watch every service server the node made with ``create_service`` (its own and
    rclpy's parameter services); rcl_lifecycle's cannot be renewed, nor can
    ~/get_type_description (module docstring)."""
    renewal = ServiceRenewal(node)
    renewal.watch(s for s in node.services if not s.srv_type.__module__.startswith(
        ("lifecycle_msgs", "type_description_interfaces")))
    return renewal
