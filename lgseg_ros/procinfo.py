"""A process's resident memory from /proc, for the benchmarks (ROS-free, torch-free)."""
from __future__ import annotations


def rss_mb(pid: int | str = "self") -> float | None:
    """VmRSS of ``pid`` (default: this process) in MB, rounded to 0.1; None where /proc has
    no such process or no such field."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None
