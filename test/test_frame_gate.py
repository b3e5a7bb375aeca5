"""FrameGate (lgseg_ros/ros/frame_gate.py): a label swap waits for the gap between two frames
by a call back from whoever lets the frame lock go, not by blocking on it; the worker
starts no frame while a swap holds it, and none at all once the swap is granted its gap,
however long that swap takes to come. Real threads, no ROS."""
from __future__ import annotations

import threading
import time

from lgseg_ros.ros.frame_gate import FrameGate


def _frame_in_thread(gate: FrameGate, stop: threading.Event, let_go: threading.Event,
                     entered: threading.Event) -> threading.Thread:
    def run():
        gate.enter_frame(stop)
        entered.set()
        let_go.wait(10)
        gate.leave_frame()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_swap_is_called_back_when_the_frame_in_progress_ends():
    gate, stop = FrameGate(), threading.Event()
    let_go, entered, freed = threading.Event(), threading.Event(), threading.Event()
    worker = _frame_in_thread(gate, stop, let_go, entered)
    assert entered.wait(5)
    gate.hold()
    assert gate.grant_or_notify(freed.set) is False   # a frame holds the lock: wait for it
    assert not freed.is_set()
    let_go.set()
    assert freed.wait(5)
    worker.join(5)
    assert gate.grant_or_notify(lambda: None) is True and not gate.lock.locked()
    gate.release_hold(granted=True)


def test_the_worker_starts_no_frame_while_a_swap_holds_it():
    gate, stop = FrameGate(max_hold_s=30), threading.Event()
    gate.hold()
    entered, let_go = threading.Event(), threading.Event()
    let_go.set()
    worker = _frame_in_thread(gate, stop, let_go, entered)
    assert not entered.wait(0.3)          # held: the next frame has not begun
    assert gate.grant_or_notify(lambda: None) is True   # so the swap may take the lock now
    with gate.swap():
        pass
    gate.release_hold(granted=True)
    assert entered.wait(5)
    worker.join(5)


def test_a_granted_swap_is_waited_for_past_the_hold_timeout():
    """Review of round 17: with only the hold's timeout, an executor slow to reach the swap
    after its grant let the worker take the lock first, and the swap then blocked the
    executor for a whole frame."""
    gate, stop = FrameGate(max_hold_s=0.05), threading.Event()
    gate.hold()
    assert gate.grant_or_notify(lambda: None) is True
    entered, let_go = threading.Event(), threading.Event()
    let_go.set()
    worker = _frame_in_thread(gate, stop, let_go, entered)
    assert not entered.wait(0.5)          # ten hold timeouts later, still the swap's gap
    assert gate.lock.acquire(blocking=False)   # the swap gets the lock without waiting
    gate.end_swap()
    gate.release_hold(granted=True)
    assert entered.wait(5)
    worker.join(5)


def test_a_hold_not_yet_granted_delays_a_frame_by_at_most_max_hold():
    gate, stop = FrameGate(max_hold_s=0.2), threading.Event()
    gate.hold()                       # never granted, never released
    entered, let_go = threading.Event(), threading.Event()
    let_go.set()
    t0 = time.monotonic()
    worker = _frame_in_thread(gate, stop, let_go, entered)
    assert entered.wait(5)
    assert time.monotonic() - t0 >= 0.15
    worker.join(5)


def test_a_swap_outside_the_worker_calls_back_waiters_too():
    """Review of round 17: only the worker's leave_frame called waiters back, so a gap
    awaited while another thread swapped (an embedding application) waited for the next
    frame, and for ever on a quiet camera."""
    gate = FrameGate()
    woken = threading.Event()
    with gate.swap():
        assert gate.grant_or_notify(woken.set) is False
    assert woken.is_set()
    assert gate.try_swap()
    assert gate.grant_or_notify(woken.clear) is False
    gate.end_swap()
    assert not woken.is_set()


def test_a_stop_wakes_a_worker_waiting_for_a_hold():
    """Review of round 17: a stop slept out the hold (up to max_hold_s) while deactivate
    joined the worker on the executor thread."""
    gate, stop = FrameGate(max_hold_s=30), threading.Event()
    gate.hold()
    entered, let_go = threading.Event(), threading.Event()
    let_go.set()
    worker = _frame_in_thread(gate, stop, let_go, entered)
    assert not entered.wait(0.2)
    stop.set()
    gate.wake_worker()
    assert entered.wait(5)            # well inside the 30 s hold
    worker.join(5)
