"""The frame lock, and a way to wait for the gap between two frames without blocking.

A label set is swapped in strictly between two frames: the frame worker holds the lock for
a whole frame (model and publishing), the swap takes it. The swap runs on the executor, so
it used to wait there for the frame in progress, and with it every callback of the node:
2048x2048 frames with 256 labels and every output subscribed take 1.4 s each, and a peer
switching between two cached sets every 0.2 s held parameter services, ~/enable, the
lifecycle and image intake for up to 4.5 s at a time (probe round 17).

Now a swap ``hold()``s the worker before its next frame and asks ``grant_or_notify``: the
gap is granted at once when no frame has the lock, else the worker calls back when its frame
ends (the node turns that into a Future its executor awaits; no rclpy here). Once granted,
the worker waits for ``release_hold`` however long the executor takes to get there, so the
swap then takes the lock without waiting. Everyone but the worker takes the lock through
``swap()`` / ``try_swap()``, which call back waiters when they let it go.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

# How long the worker waits before a frame for a swap that holds it but has not been granted
# its gap yet (the executor may be slow to resume it). A hold left behind by a bug would
# delay every frame by this much, not stop them.
MAX_HOLD_S = 1.0
# How long the worker waits for a granted swap: it runs synchronously on the executor right
# after the grant, so this only bounds a grant left behind.
MAX_GRANT_S = 10.0


class FrameGate:
    def __init__(self, max_hold_s: float = MAX_HOLD_S, max_grant_s: float = MAX_GRANT_S) -> None:
        self.lock = threading.Lock()
        self.max_hold_s = max_hold_s
        self.max_grant_s = max_grant_s
        self._cond = threading.Condition()
        self._holds = 0
        self._granted = 0
        self._waiters: list[Callable[[], None]] = []

    # -- the frame worker -----------------------------------------------------------------
    def enter_frame(self, stop: threading.Event) -> None:
        """Take the lock for a frame, after the swaps that hold the worker. Taken under the
        condition, so grant_or_notify never sees the lock free just before a frame takes it."""
        with self._cond:
            self._cond.wait_for(lambda: self._holds == 0 or stop.is_set(), timeout=self.max_hold_s)
            self._cond.wait_for(lambda: self._granted == 0 or stop.is_set(), timeout=self.max_grant_s)
            self.lock.acquire()

    def leave_frame(self) -> None:
        self.lock.release()
        self.wake_waiters()

    def wake_waiters(self) -> None:
        """Call back everyone waiting for a gap (also when the worker stops for good)."""
        with self._cond:
            waiters, self._waiters = self._waiters, []
        for call in waiters:
            call()

    def wake_worker(self) -> None:
        """A worker waiting before a frame looks at its stop event again (a stop must not
        sleep out a hold)."""
        with self._cond:
            self._cond.notify_all()

    # -- the swaps ---------------------------------------------------------------------------
    def hold(self) -> None:
        """Keep the worker from starting a frame until release_hold (or max_hold_s)."""
        with self._cond:
            self._holds += 1

    def grant_or_notify(self, on_free: Callable[[], None]) -> bool:
        """True when no frame holds the lock: the gap is this hold's, and the worker waits
        for its release_hold(granted=True). Else False, and ``on_free`` is called (on the
        thread that lets the lock go) when it is free again."""
        with self._cond:
            if not self.lock.locked():
                self._granted += 1
                return True
            self._waiters.append(on_free)
            return False

    def release_hold(self, granted: bool) -> None:
        with self._cond:
            self._holds = max(0, self._holds - 1)
            if granted:
                self._granted = max(0, self._granted - 1)
            self._cond.notify_all()

    @contextmanager
    def swap(self) -> Iterator[None]:
        """The lock for work between two frames (a swap, an announcement, activation)."""
        self.lock.acquire()
        try:
            yield
        finally:
            self.lock.release()
            self.wake_waiters()

    def try_swap(self) -> bool:
        """swap()'s lock if it is free now (then release with end_swap), else False."""
        return self.lock.acquire(blocking=False)

    def end_swap(self) -> None:
        self.lock.release()
        self.wake_waiters()

    @property
    def holds(self) -> int:
        with self._cond:
            return self._holds
