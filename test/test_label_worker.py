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


def test_a_request_awaiting_an_encoding_resumes_when_it_is_done():
    """A coroutine awaiting the worker's Future resumed only when its executor next woke for
    something else: on an idle node set_labels took 260 ms p50 and up to 1.07 s (the status
    timer's period). The worker now wakes the executor when a job ends."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    node = rclpy.create_node("label_worker_wake", context=context)
    executor.add_node(node)
    worker = LabelWorker()
    try:
        async def request():
            return await worker.submit(lambda: "encoded", executor=executor)

        task = executor.create_task(request)
        executor.spin_once(timeout_sec=0.1)         # the request starts and awaits
        t0 = time.monotonic()
        while not task.done() and time.monotonic() - t0 < 5.0:
            executor.spin_once(timeout_sec=3.0)     # nothing else would wake it for 3 s
        took = time.monotonic() - t0
        assert task.done() and task.result() == "encoded"
        assert took < 1.5, took
    finally:
        worker.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)


def test_a_finished_job_holds_nothing_it_ran_on():
    """Issue 19: the worker kept its last job (closure, Future, result) in its loop's locals
    while it waited for the next one. The node's jobs close over the Segmenter, so the model
    outlived the node's cleanup (and its heap trim): 20 lifecycle cycles with a label change
    each left the default node at 654-701 MB instead of ~500."""
    import gc
    import weakref

    class Model:
        def encode(self):
            return "encoded"

    def job_for(model):   # as the node's: the closure's own cell holds the model
        return lambda: model.encode()

    worker = LabelWorker()
    try:
        model = Model()
        gone = weakref.ref(model)
        future = worker.submit(job_for(model))
        end = time.monotonic() + 5
        while not future.done() and time.monotonic() < end:
            time.sleep(0.005)
        assert future.result() == "encoded"
        del model, future
        end = time.monotonic() + 5
        while gone() is not None and time.monotonic() < end:
            gc.collect()
            time.sleep(0.01)
        assert gone() is None, [type(r).__name__ for r in gc.get_referrers(gone())]
    finally:
        worker.close()
