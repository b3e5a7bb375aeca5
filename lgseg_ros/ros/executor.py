"""The executor the node spins in: one thread, kept alive through a race in rclpy.

One thread, because rclpy's MultiThreadedExecutor was the source of the node's latency
outliers. In `lgseg demo` runs of 128 frames on a 2-core machine, 4 to 11% of frames took
100 ms to 4 s end to end while the node's own stages stayed at ~40 ms; per-hop timestamps
put every one of those delays between the arrival of a message and the
MultiThreadedExecutor running its callback (a subscriber process spinning a single-threaded
executor got the same messages within 3 ms). With single-threaded executors on both sides,
no frame of those runs exceeded 62 ms. The node needs no parallel callbacks: image
callbacks only fill a slot, inference runs on the node's own worker thread, and a label
change waits at most one frame for the frame lock.

The race: rclpy (9.1.2, Kilted; Humble and Jazzy alike) collects a node's waitables, then
adds each to the wait set. A publisher or subscription destroyed by another thread in
between leaves its QoS-event handler in that list, and ``add_to_wait_set`` raises
``InvalidHandle`` ("cannot use Destroyable because destruction was requested") out of
``spin()`` (ros2/rclpy#1284, #1355; fixes in ros2/rclpy#1150, #1590 are not in the released
wheels). The executor thread ends and the node stops answering services and taking images.
The node destroys per-class publishers on every label change; in a single-threaded
executor that happens on the executor's own thread, but a process that embeds the node
(tests, an application with its own threads) may destroy entities from anywhere. The
destroyed entity has already left the node's lists, so the next wait set is built without
it: catching the error and spinning on is the whole fix (as in ros2_ros_bt_py#238).

Any other exception a callback raises is logged and spun past too: a request that makes
some callback raise (rclpy's own parameter service raised ValueError on an unknown
ParameterValue.type) must cost that request, not the process. The log is throttled per
exception type and place: with use_sim_time, a peer's /clock message of negative seconds
makes rclpy's own clock callback raise, and /clock at 500 Hz wrote a 2 KB traceback per
message (probe round 9). One traceback per ``ERROR_LOG_PERIOD_S`` and place, the rest
counted in the next line.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback

from rclpy.exceptions import InvalidHandle
from rclpy.executors import (ExternalShutdownException, MultiThreadedExecutor, ShutdownException,
                             SingleThreadedExecutor)

from lgseg_ros.ros.frames import Throttle

_log = logging.getLogger(__name__)

ERROR_LOG_PERIOD_S = 10.0
_MAX_ERROR_PLACES = 64


class _Respin:
    """Mixin: an InvalidHandle from one spin iteration is counted and spun past."""

    invalid_handle_respins = 0   # how often the race was hit (tests, diagnostics)
    callback_errors = 0          # callbacks that raised and were spun past
    last_callback_error = ""     # the last one's traceback (cut short)

    def _spin_once_impl(self, *args, **kwargs) -> None:
        try:
            super()._spin_once_impl(*args, **kwargs)
        except InvalidHandle as e:
            self.invalid_handle_respins += 1
            _log.debug("executor: an entity was destroyed while the wait set was built (%s); "
                       "spinning on", e)
        except (ExternalShutdownException, ShutdownException):
            raise
        except Exception as e:
            if not self.context.ok():
                raise
            self.callback_errors += 1
            self.last_callback_error = traceback.format_exc()[-4000:]
            quiet = self._count_if_logged_lately(e)
            if quiet is not None:
                _log.error("a callback raised %s: %.300s; spinning on%s\n%s", type(e).__name__,
                           e, quiet, self.last_callback_error[-1500:])

    def _count_if_logged_lately(self, e: BaseException) -> str | None:
        """None when this kind of error was logged less than ERROR_LOG_PERIOD_S ago (it is
        counted instead); else what the line adds about the ones counted since."""
        tb = traceback.extract_tb(e.__traceback__)
        place = (type(e).__name__, tb[-1].filename, tb[-1].lineno) if tb else (type(e).__name__,)
        throttle = self.__dict__.get("_error_throttle")
        if throttle is None:   # a mixin: no __init__ of its own to make it in
            throttle = self.__dict__["_error_throttle"] = Throttle(ERROR_LOG_PERIOD_S, _MAX_ERROR_PLACES)
        skipped = throttle(place)
        if skipped is None:
            return None
        more = f" ({skipped} more like it since the last such line, not logged)" if skipped else ""
        return more + throttle.dropped_note("error lines")


class RespinExecutor(_Respin, SingleThreadedExecutor):
    """The node's executor: single-threaded, survives entities destroyed mid-wait."""


class RespinMultiThreadedExecutor(_Respin, MultiThreadedExecutor):
    """For applications that need parallel callbacks next to the node (expect the latency
    outliers described above)."""


class BackgroundSpin:
    """Spins an executor on a daemon thread, in short waits, until ``stop()``.

    ``stop()`` returns once the thread has ended, so the executor, nodes and context are
    torn down with nothing waiting on them. Shutting an executor down under a running
    ``spin()`` instead (rclpy destroys the executor's guard condition while the spin thread
    may be entering a new wait) left processes aborting at exit, "terminate called without
    an active exception", in 1 of 6 runs of `lgseg bench-node`.
    """

    def __init__(self, executor, period_s: float = 0.05, name: str = "lgseg-spin") -> None:
        self.executor = executor
        self.period_s = period_s
        self.error: str | None = None     # traceback of what ended the spin, if anything did
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "BackgroundSpin":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.executor.spin_once(timeout_sec=self.period_s)
        except ExternalShutdownException:
            pass
        except Exception:  # kept for the caller: a dead spin looks like a silent node
            self.error = traceback.format_exc()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """End the spin; True when the thread ended within the timeout."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()


def spin_until_shutdown(node, done=None, linger_s: float = 0.5) -> None:
    """Spin `node` in RespinExecutor on this thread until Ctrl-C, context shutdown or
    ``done()`` (checked after every callback): the `main` of every lgseg executable (the
    node, the benchmark's relay). After ``done()``, spins ``linger_s`` longer so that the
    reply to the request that ended it (a lifecycle shutdown) leaves the process."""
    executor = RespinExecutor()
    executor.add_node(node)
    try:
        if done is None:
            executor.spin()
            return
        while executor.context.ok() and not done():
            executor.spin_once(timeout_sec=0.25)
        end = time.monotonic() + linger_s
        while executor.context.ok() and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
