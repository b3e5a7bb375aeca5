"""One thread for the slow half of a label change (text encoding, grounding), off the executor.

A set of 256 new words costs about a second of text encoding on a 2-core CPU; done in a
service callback it held the node's only executor thread, so ~/enable, the lifecycle and
every other request waited, and four clients in parallel cut mask output from 10 Hz to
2.4 Hz (issue 20, items 2 and 7). The services that change labels are coroutines instead:
they hand the encoding to this worker, await an rclpy Future, and the executor serves
everything else meanwhile. The swap itself stays on the executor thread, between two frames.

One thread, because the encodings would only contend for the same cores as the frame
path; requests run in arrival order. At most ``max_pending`` wait: a flood of label changes
is refused ("busy") instead of queueing minutes of work behind each other.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable

from rclpy.task import Future


def wake_awaiting(executor) -> None:
    """A coroutine awaiting a Future is resumed only when its executor next wakes; a Future
    done on another thread does not wake it. Without this a label change waited for the next
    frame or timer: set_labels on an idle node took 260 ms p50 and up to 1.07 s (the status
    period)."""
    if executor is not None:
        executor.wake()


class LabelWorkerBusy(RuntimeError):
    """Too many label changes are already waiting; the message says how many."""


class LabelWorker:
    def __init__(self, max_pending: int = 4, name: str = "lgseg-labels") -> None:
        self.max_pending = max_pending
        self._jobs: queue.Queue = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any], executor=None) -> Future:
        """Run ``fn()`` on the worker; the Future (woken through ``executor``) gets its result
        or its exception. Raises LabelWorkerBusy when max_pending jobs wait already."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise LabelWorkerBusy(f"{self._pending} label changes are already being encoded; "
                                      "try again when they are done")
            self._pending += 1
        future = Future(executor=executor)
        self._jobs.put((fn, future, executor))
        return future

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            self._run_job(*job)
            # Dropped before waiting for the next job: a job's closure holds what it ran on
            # (the node's: a whole Segmenter), and kept here it outlived the node's cleanup,
            # so each lifecycle cycle left the previous model's heap behind (issue 19).
            job = None

    def _run_job(self, fn: Callable[[], Any], future: Future, executor) -> None:
        try:
            result = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting request
            with self._lock:
                self._pending -= 1
            future.set_exception(e)
        else:
            with self._lock:
                self._pending -= 1
            future.set_result(result)
        wake_awaiting(executor)

    def close(self, timeout_s: float = 10.0) -> None:
        """End the thread and wait for it (a job in progress finishes first). Joined, not
        left as a daemon: a worker that had run the text encoder (torch) and was still alive
        at interpreter exit aborted the process (exit -6, "terminate called without an
        active exception"). Jobs still waiting are cancelled first, not run: four queued
        sets of 256 labels held a SIGTERM for 7 s, past `ros2 launch`'s 5 s before it kills
        the process (probe round 5)."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                with self._lock:
                    self._pending -= 1
                job[1].cancel()
        self._jobs.put(None)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
