"""The latest-frame slots the node's worker takes frames from (lgseg_ros/ros/frames.py)."""
from __future__ import annotations

from lgseg_ros.ros.frames import LatestFrameSlots, Pending


def _served(costs: dict[str, float], phases: dict[str, float], period: float = 0.1,
            seconds: float = 60.0) -> dict[str, list[float]]:
    """Cameras sending at ``period`` from ``phases``, one worker spending ``costs`` per frame,
    on a virtual clock (the receipt times the node stamps, made here): when each was served."""
    slots = LatestFrameSlots()
    arrivals = sorted((phase + k * period, cam) for cam, phase in phases.items()
                      for k in range(int(seconds / period)))
    served: dict[str, list[float]] = {cam: [] for cam in phases}
    now, i = 0.0, 0
    while i < len(arrivals):
        while i < len(arrivals) and arrivals[i][0] <= now:
            slots.put(Pending(arrivals[i][1], None, arrivals[i][0]))
            i += 1
        item = slots.take(timeout=0)
        if item is None:
            now = arrivals[i][0] if i < len(arrivals) else now
            continue
        now += costs[item.key]
        served[item.key].append(now)
    return served


def test_a_camera_whose_frames_keep_arriving_does_not_lose_its_turn():
    """Probe round 12: the worker took the slot whose newest frame arrived first, and a
    replacing frame reset that, so the order followed the cameras' phases, not their
    waiting. Beside a second camera sending 4 MP PNGs at 10 Hz (~0.35 s a frame on the
    2-core machine), a 10 Hz camera's masks came at 1.2-1.7 Hz with gaps of 2.8-5.1 s
    (attack script, a real node with `cameras: [front, rear]`). Now a camera's turn counts
    from the first frame its slot got since it was served: the cameras alternate."""
    slots = LatestFrameSlots()
    slots.put(Pending("front", "f1", 1.00))
    slots.put(Pending("rear", "r1", 1.05))
    assert slots.put(Pending("front", "f2", 1.10))      # replaced: front has waited since 1.00
    first = slots.take(timeout=0)
    assert (first.key, first.msg, first.received) == ("front", "f2", 1.10)   # the newest frame
    assert slots.take(timeout=0).key == "rear"
    assert slots.take(timeout=0) is None

    # A 10 Hz camera beside a heavy one (each frame 0.35 s of the worker), at several phases
    # between their frames: the light camera waits at most for the heavy frame in progress and
    # one that began waiting before its own, and is served about as often. The old order
    # starved it at phase 0.02: served 96 times to the heavy one's 159, a 15.1 s gap.
    for phase in (0.0, 0.02, 0.05, 0.08):
        served = _served({"heavy": 0.35, "light": 0.05}, {"heavy": phase, "light": 0.05})
        light = [t for t in served["light"] if t < 59.0]     # not the tail, after the last frames
        gaps = [b - a for a, b in zip(light, light[1:])]
        assert max(gaps) <= 2 * 0.35 + 0.05 + 0.1 + 1e-9, (phase, max(gaps))
        assert len(served["light"]) >= 0.9 * len(served["heavy"]), (phase, len(served["light"]))


def test_the_flood_gate_counts_what_it_drops_and_each_camera_has_its_own(monkeypatch):
    """Probe round 13: a camera sending frames with ever new encodings filled the one gate the
    node logged everything through; the new keys it dropped were counted nowhere, and other
    cameras' lines fell silent with them. Now the drops are counted (a line that passes says
    how many), and each camera's bad-frame lines pass through a gate of its own."""
    from lgseg_ros.ros import frames
    from lgseg_ros.ros.node import _Camera
    clock = [1000.0]
    monkeypatch.setattr(frames.time, "monotonic", lambda: clock[0])
    a = _Camera("a", "/a/image", "/a/image/compressed", "/a/camera_info", "~/a")
    b = _Camera("b", "/b/image", "/b/image/compressed", "/b/camera_info", "~/b")
    passed = [a.log_gate(("skipped frame", f"encoding enc{chr(97 + i % 26)}{i // 26}"))
              for i in range(100)]
    admitted = sum(p is not None for p in passed)
    assert admitted == a.log_gate.lines_per_period
    assert a.log_gate.take_flooded() == 100 - admitted
    assert a.log_gate.take_flooded() == 0
    assert b.log_gate(("frame failed", "something else")) == 0      # b's gate is untouched
    assert a.error_gate(("frame failed", "the node's own error")) == 0   # nor a's own errors
    clock[0] += a.log_gate.period
    assert a.log_gate(("skipped frame", "a new reason")) == 0         # the flood has passed


def test_cycling_through_remembered_reasons_stays_within_the_total_bound(monkeypatch):
    """Audit round 19: frames whose encodings cycled through 256 names passed one line per
    name every period once the gate knew them all (24 lines a second logged, up to 51),
    because only new keys counted against the bound. Now every line does, and what the
    bound drops is counted for the next line that passes."""
    from lgseg_ros.ros import frames
    clock = [1000.0]
    monkeypatch.setattr(frames.time, "monotonic", lambda: clock[0])
    gate = frames.Throttle(period=5.0, max_keys=256, lines_per_period=20)
    keys = [("skipped frame", f"encoding e{i}") for i in range(256)]
    for i, k in enumerate(keys):                         # learnt slowly: 20 new keys per 5 s
        clock[0] = 1000.0 + 0.25 * i
        assert gate(k) is not None
    passed_per_period = []
    for _ in range(6):                                   # then all 256 every period, 30 s
        clock[0] += 5.0
        passed_per_period.append(sum(gate(k) is not None for k in keys))
    assert passed_per_period == [20] * 6
    clock[0] += 5.0
    assert [gate(k) for k in keys[100:103]] == [0, 0, 0]
    assert gate.take_flooded() == 6 * (256 - 20)          # what the bound held back, told
    assert gate.take_flooded() == 0
