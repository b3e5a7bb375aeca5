"""Latest-frame slots and per-stage latency statistics (no rclpy: tested and reused alone).

The subscription callback never does work: it puts the message into its camera's slot
and returns. A slot holds one frame; a newer frame replaces it and the replaced one is
counted as dropped. The worker takes from the camera that has waited longest among all
cameras, counted from the first frame its slot got since it was last served (a replacing
frame does not reset it), so no camera starves another and nothing ever queues up behind
the model.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Hashable

import numpy as np

# queue: receipt -> worker picks the frame up; set_labels: loading a changed label set into
# the backend (first frame after a change only); total: receipt -> outputs published.
STAGES = ("queue", "decode", "set_labels", "preprocess", "model", "postprocess", "publish", "total")


@dataclass
class Pending:
    key: Hashable
    msg: Any
    received: float  # time.perf_counter() at receipt
    compressed: bool = False


class LatestFrameSlots:
    """One single-frame slot per camera key, one condition for the worker to wait on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._slots: dict[Hashable, Pending] = {}
        # per camera: receipt of the first frame its slot got since the worker last served it.
        # Ordered by the newest frame's receipt instead, a camera whose frames kept arriving
        # just after another's lost every turn: beside a second camera sending 4 MP PNGs at
        # 10 Hz, a 10 Hz camera's masks came at 1.2 Hz with gaps up to 2.8 s (probe round 12).
        self._since: dict[Hashable, float] = {}
        self._closed = False

    def put(self, item: Pending) -> bool:
        """Store ``item`` as its camera's newest frame; True when it replaced an unprocessed one."""
        with self._cond:
            replaced = item.key in self._slots
            self._slots[item.key] = item
            if not replaced:
                self._since[item.key] = item.received
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> Pending | None:
        """The newest frame of the camera that has waited longest (since the first frame its
        slot got after it was last served), or None on timeout / close."""
        with self._cond:
            end = None if timeout is None else time.monotonic() + timeout
            while not self._slots and not self._closed:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            if self._closed:
                return None
            key = min(self._slots, key=lambda k: self._since[k])
            del self._since[key]
            return self._slots.pop(key)

    def clear(self) -> int:
        """Drop every pending frame; returns how many."""
        with self._cond:
            n = len(self._slots)
            self._slots.clear()
            self._since.clear()
            return n

    def close(self) -> None:
        """Wake the worker for good (take returns None from now on)."""
        with self._cond:
            self._closed = True
            self._slots.clear()
            self._since.clear()
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False


@dataclass
class CameraStats:
    """Counters and a rolling window of per-stage seconds for one camera. Thread-safe."""

    window: int = 300
    frames_in: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    frames_rejected: int = 0
    frames_failed: int = 0
    camera_info_rejected: int = 0
    class_masks_skipped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _timings: deque = field(default=None, repr=False)  # type: ignore[assignment]
    _done_at: deque = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self._timings = deque(maxlen=self.window)
        self._done_at = deque(maxlen=self.window)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def add_frame(self, timings: dict[str, float]) -> None:
        with self._lock:
            self.frames_processed += 1
            self._timings.append(timings)
            self._done_at.append(time.monotonic())

    def snapshot(self) -> dict[str, float | int]:
        """Counters, output rate over the window, and p50 / p95 / mean ms per stage."""
        with self._lock:
            timings = list(self._timings)
            done = list(self._done_at)
            out: dict[str, float | int] = {
                "frames_in": self.frames_in,
                "frames_processed": self.frames_processed,
                "frames_dropped": self.frames_dropped,
                "frames_rejected": self.frames_rejected,
                "frames_failed": self.frames_failed,
                "camera_info_rejected": self.camera_info_rejected,
                "class_masks_skipped": self.class_masks_skipped,
            }
        out["rate_hz"] = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0.0
        for stage in STAGES:
            vals = np.array([t[stage] for t in timings if stage in t], dtype=np.float64) * 1e3
            if vals.size:
                out[f"{stage}_ms_p50"] = float(np.percentile(vals, 50))
                out[f"{stage}_ms_p95"] = float(np.percentile(vals, 95))
                out[f"{stage}_ms_mean"] = float(vals.mean())
        return out


class Throttle:
    """Lets one message per key through every ``period`` seconds and counts the rest.

    Keys come from what peers send (an encoding name, a size), so there may be any number
    of them: at most ``max_keys`` are remembered, the oldest forgotten first, and at most
    ``lines_per_period`` lines pass per period whatever their keys. The total bound is on
    every line, not only a new key's: a peer cycling through 256 remembered reasons passed
    one line per key every period, 51 a second past a gate meant for 4 (audit round 19)."""

    def __init__(self, period: float = 5.0, max_keys: int = 256, lines_per_period: int = 20) -> None:
        self.period = period
        self.max_keys = max_keys
        self.lines_per_period = lines_per_period
        self._last: dict[Hashable, float] = {}
        self._suppressed: dict[Hashable, int] = {}
        self._passed_at: deque = deque()
        self._flooded = 0   # lines the total bound dropped since take_flooded() last ran
        self._lock = threading.Lock()

    def __call__(self, key: Hashable) -> int | None:
        """None when the message should be suppressed, else how many were suppressed before it."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            while self._passed_at and now - self._passed_at[0] >= self.period:
                self._passed_at.popleft()
            if len(self._passed_at) >= self.lines_per_period:
                # Counted in the total the next passing line tells (take_flooded), not with
                # the key: a key the bound keeps out may be forgotten before it passes again.
                self._flooded += 1
                return None
            self._passed_at.append(now)
            self._last.pop(key, None)  # re-inserted last: dicts keep insertion order
            self._last[key] = now
            while len(self._last) > self.max_keys:
                old = next(iter(self._last))
                del self._last[old]
                self._suppressed.pop(old, None)
            return self._suppressed.pop(key, 0)

    def dropped_note(self, what: str = "lines") -> str:
        """For a line that passes: how many others the total bound dropped meanwhile, as a
        suffix ("" if none). Every user of a Throttle adds it: a key the bound kept out is
        counted only here (review of audit round 19)."""
        n = self.take_flooded()
        return (f" ({n} other {what} dropped: more than {self.lines_per_period} in "
                f"{self.period:g} s)") if n else ""

    def take_flooded(self) -> int:
        """How many lines the total bound dropped since the last call: they belong to no
        key's count, so a line that does pass says how many went unseen."""
        with self._lock:
            n, self._flooded = self._flooded, 0
            return n
