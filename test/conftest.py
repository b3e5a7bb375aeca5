"""Test-wide settings. Every test that starts a node stays on loopback, in its own domain."""
import os
import random
from pathlib import Path

import pytest

# Set before any test imports rclpy: DDS discovery must not leave this machine, and a
# per-session domain keeps parallel runs (two developers, CI) from seeing each other.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_LOCALHOST_ONLY", None)
if "ROS_DOMAIN_ID" not in os.environ or os.environ.get("LGSEG_TEST_RANDOM_DOMAIN", "1") == "1":
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "datasets" / "camvid"


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    if not (CAMVID / "train.txt").exists():
        pytest.skip(f"CamVid not found at {CAMVID} (expected ../shared beside the checkout)")
    return CAMVID
