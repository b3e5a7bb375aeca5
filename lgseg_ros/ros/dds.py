"""The Fast DDS profile for camera-sized samples, and who applies it.

Fast DDS moves samples between processes of one machine through a shared-memory segment
that belongs to the publishing participant, 512 KB by default. A larger sample (a 640x480
bgr8 frame is 900 KB) falls back to fragmented UDP, where a best-effort reader drops it
whenever one fragment is lost: measured on loopback, 0-2 of 10 frames at 640x480 and 0 of
10 at 1280x720 arrived; with config/fastdds_large_frames.xml loaded by the publisher, 10 of
10 and 30 of 30 at 30 Hz. Loading it in the subscriber alone changes nothing.

Fast DDS reads the file when the process creates its first participant, i.e. at
``rclpy.init``; the variable must be set before that. No rclpy here: importable anywhere.
"""
from __future__ import annotations

import os
from collections.abc import MutableMapping

from lgseg_ros.resources import package_path

PROFILE_RELATIVE = "config/fastdds_large_frames.xml"
PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def profile_path() -> str | None:
    """The shipped profile (source tree or install space), or None if it is missing."""
    path = package_path(PROFILE_RELATIVE)
    return str(path) if path is not None else None


def uses_fastdds(env: MutableMapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") in ("", "rmw_fastrtps_cpp",
                                                                  "rmw_fastrtps_dynamic_cpp")


def apply_large_frame_profile(env: MutableMapping[str, str] | None = None) -> str | None:
    """Point ``env`` (default: this process's environment) at the shipped profile unless the
    user chose a profile of their own or another RMW. Returns the profile now in effect
    (theirs or ours), None when none is. Call before rclpy.init, or before starting a child
    process with ``env``."""
    env = os.environ if env is None else env
    for var in PROFILE_VARS:
        if env.get(var):
            return env[var]
    if not uses_fastdds(env):
        return None
    path = profile_path()
    if path is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = path
    return path
