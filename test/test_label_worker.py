"""LabelWorker: label encodings off the executor, and a prompt close."""
import threading
import time

from lgseg_ros.ros.label_worker import LabelWorker


def test_close_cancels_waiting_jobs_and_waits_only_for_the_running_one():
    """Probe round 5: close() queued its stop behind every waiting job, so four sets of 256
    labels held a SIGTERM for 7 s, past ros2 launch's 5 s before it kills the node."""
    worker = LabelWorker(max_pending=4)
    started = threading.Event()

    def slow():
        started.set()
        time.sleep(0.5)
        return "done"

    running = worker.submit(slow)
    waiting = [worker.submit(lambda: time.sleep(0.5)) for _ in range(3)]
    assert started.wait(5)
    t0 = time.monotonic()
    worker.close()
    took = time.monotonic() - t0
    assert took < 1.0, took                         # not 0.5 s x 4
    assert running.done() and running.result() == "done"
    assert all(f.cancelled() for f in waiting)
    assert worker.pending == 0
