"""The DDS configuration the node ships for each RMW, and who applies it.

Fast DDS (rmw_fastrtps_cpp, the PyPI default): moves samples between processes of one
machine through a shared-memory segment that belongs to the publishing participant, 512 KB
by default. A larger sample (a 640x480 bgr8 frame is 900 KB) falls back to fragmented UDP,
where a best-effort reader drops it whenever one fragment is lost: measured on loopback,
0-2 of 10 frames at 640x480 and 0 of 10 at 1280x720 arrived; with
config/fastdds_large_frames.xml loaded by the publisher, 10 of 10 and 30 of 30 at 30 Hz.
Loading it in the subscriber alone changes nothing. Fast DDS has no receive-side size cap.

Cyclone DDS (rmw_cyclonedds_cpp, apt installs): config/cyclonedds_lgseg.xml sets
Internal/MaxSampleSize, which drops a sample larger than any frame the node accepts as it
arrives, before reassembly: the cap against oversized samples that Fast DDS lacks.

Both are read when the process creates its first participant, i.e. at ``rclpy.init``; the
variables must be set before that. No rclpy here: importable anywhere.
"""
from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from lgseg_ros.resources import package_path

PROFILE_RELATIVE = "config/fastdds_large_frames.xml"
PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
CYCLONE_RELATIVE = "config/cyclonedds_lgseg.xml"
CYCLONE_VAR = "CYCLONEDDS_URI"


def profile_path() -> str | None:
    """The shipped Fast DDS profile (source tree or install space), or None if missing."""
    path = package_path(PROFILE_RELATIVE)
    return str(path) if path is not None else None


def cyclone_config_path() -> str | None:
    """The shipped Cyclone DDS configuration, or None if missing."""
    path = package_path(CYCLONE_RELATIVE)
    return str(path) if path is not None else None


def _rmw(env: MutableMapping[str, str]) -> str:
    return env.get("RMW_IMPLEMENTATION", "") or "rmw_fastrtps_cpp"


def uses_fastdds(env: MutableMapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return _rmw(env) in ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")


def uses_cyclonedds(env: MutableMapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return _rmw(env) == "rmw_cyclonedds_cpp"


def apply_dds_config(env: MutableMapping[str, str] | None = None) -> str | None:
    """Point ``env`` (default: this process's environment) at the shipped configuration of
    the RMW it selects, unless the user chose one of their own. Returns the file now in
    effect (theirs or ours), None when none is (another RMW, or the file is missing). Call
    before rclpy.init, or before starting a child process with ``env``."""
    env = os.environ if env is None else env
    if uses_cyclonedds(env):
        if env.get(CYCLONE_VAR):
            return env[CYCLONE_VAR]
        path = cyclone_config_path()
        if path is not None:
            env[CYCLONE_VAR] = Path(path).as_uri()
        return path
    if not uses_fastdds(env):
        return None
    for var in PROFILE_VARS:
        if env.get(var):
            return env[var]
    path = profile_path()
    if path is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = path
    return path
