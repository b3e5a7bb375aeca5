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


# glibc's mallopt parameter (malloc.h) and the threshold the node sets.
M_MMAP_THRESHOLD = -3
NODE_MMAP_THRESHOLD = 8 << 20


def fix_mmap_threshold(threshold: int = NODE_MMAP_THRESHOLD) -> bool:
    """Make glibc serve every allocation of ``threshold`` bytes or more with its own mmap, for
    good, so that its memory goes back to the system as soon as it is freed. By default glibc
    raises this threshold each time such a block is freed (up to 32 MB): once a released
    model's large buffers were freed at cleanup, the next model's went into the heap and the
    thread arenas instead, where small long-lived allocations made in between pin the pages
    (issue 19: 10 lifecycle cycles of the default node kept +82 MB over a node that never
    cycled; with 1, 4 or 8 MB fixed, none; with 16 MB, +14 MB). 8 MB keeps a 1080p rgb
    frame's buffers (6.2 MB) in the heap, where they are reused without page faults (a
    1 MB threshold cost 720p frames 3-10 ms of page faults each).

    Left alone where the user chose it (MALLOC_MMAP_THRESHOLD_ or GLIBC_TUNABLES); a no-op
    without glibc. True when set. Process-wide: the node's start-up calls it (node_main)."""
    import os

    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False
