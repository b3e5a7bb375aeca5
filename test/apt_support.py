"""Debian packages a test needs (colcon, WordNet): installed with apt-get when missing and
the tests run as root (as CI does on a fresh machine); otherwise the test skips, saying
what to install."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def ensure_debian_packages(packages: list[str], present, what: str) -> None:
    """``present()`` says whether the thing is there; install ``packages`` if it is not."""
    if present():
        return
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or apt is None:
        pytest.skip(f"{what} is not installed and cannot be: apt-get needs root "
                    f"(install {' '.join(packages)})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in ([apt, "update", "-qq"],
                [apt, "install", "-y", "-qq", "--no-install-recommends", *packages]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            pytest.skip(f"could not install {what} with `{' '.join(cmd)}`: {proc.stderr[-800:]}")
    if not present():
        pytest.fail(f"apt-get installed {' '.join(packages)} but {what} is still missing")
