"""A process's resident memory: read from /proc (the benchmarks), and freed heap given back
(the segmenter and the node). ROS-free, torch-free."""
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


def trim_heap() -> None:
    """Return freed heap pages to the system: glibc keeps them otherwise, so memory a
    released model or label set used still counts in the process's RSS (a new segmenter
    per configure left 110 MB so). A no-op where there is no glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
