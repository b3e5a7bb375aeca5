"""The DDS configurations the package ships, and which one a process gets.

Cyclone DDS is not on PyPI, so config/cyclonedds_lgseg.xml cannot be run here: its form and
its size cap are checked against the node's own frame limits instead, and the choice of
file per RMW is checked on plain environments (the same code runs before rclpy.init in
`lgseg node`, the demo and `lgseg bench-node`).
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lgseg_ros.ros import dds
from lgseg_ros.ros.params import DEFAULT_MAX_IMAGE_PIXELS
from lgseg_ros.ros.wire import COMPRESSED_SLACK_BYTES, MAX_BYTES_PER_PIXEL

REPO = Path(__file__).resolve().parents[1]
CYCLONE_NS = "{https://cdds.io/config}"
UNITS = {"B": 1, "kB": 1024, "KiB": 1024, "MB": 1 << 20, "MiB": 1 << 20,
         "GB": 1 << 30, "GiB": 1 << 30}  # Cyclone's own table: kB and MB are binary too


def _cyclone_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*(B|kB|KiB|MB|MiB|GB|GiB)\s*", text)
    assert m, f"{text!r}: Cyclone needs a number with an explicit unit"
    return int(m.group(1)) * UNITS[m.group(2)]


def test_cyclone_config_caps_samples_just_above_the_largest_frame_the_node_takes():
    root = ET.parse(REPO / dds.CYCLONE_RELATIVE).getroot()
    assert root.tag == f"{CYCLONE_NS}CycloneDDS"
    caps = root.findall(f"{CYCLONE_NS}Domain/{CYCLONE_NS}Internal/{CYCLONE_NS}MaxSampleSize")
    assert len(caps) == 1
    cap = _cyclone_bytes(caps[0].text)
    # Every frame the node accepts at the default max_image_pixels must pass: 8 bytes a
    # pixel (rgba16), 1 KiB of row padding on up to 4096 rows, the header; and the largest
    # compressed frame the node reads (wire.py's bound).
    largest_raw = DEFAULT_MAX_IMAGE_PIXELS * MAX_BYTES_PER_PIXEL + 4096 * 1024 + (64 << 10)
    largest_compressed = DEFAULT_MAX_IMAGE_PIXELS * MAX_BYTES_PER_PIXEL + COMPRESSED_SLACK_BYTES
    assert cap >= max(largest_raw, largest_compressed)
    # And the point of it: the middleware holds about three copies of a sample at its peak
    # (README, "Oversized samples"), which must stay under issue 20's 300 MB per message.
    assert 3 * cap <= 300 * 10**6


def test_each_rmw_gets_its_own_file_and_a_users_choice_wins(tmp_path):
    env: dict[str, str] = {}
    assert dds.apply_dds_config(env) == env["FASTDDS_DEFAULT_PROFILES_FILE"]
    assert Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]).name == "fastdds_large_frames.xml"
    assert dds.CYCLONE_VAR not in env

    env = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    path = dds.apply_dds_config(env)
    assert Path(path).is_file() and Path(path).name == "cyclonedds_lgseg.xml"
    assert env[dds.CYCLONE_VAR] == Path(path).as_uri()
    assert not any(v in env for v in dds.PROFILE_VARS)

    theirs = (tmp_path / "mine.xml").as_uri()
    env = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp", dds.CYCLONE_VAR: theirs}
    assert dds.apply_dds_config(env) == theirs and env[dds.CYCLONE_VAR] == theirs

    env = {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/mine.xml"}
    assert dds.apply_dds_config(env) == "/etc/mine.xml"
    assert "FASTDDS_DEFAULT_PROFILES_FILE" not in env

    env = {"RMW_IMPLEMENTATION": "rmw_zenoh_cpp"}
    assert dds.apply_dds_config(env) is None and env == {"RMW_IMPLEMENTATION": "rmw_zenoh_cpp"}


@pytest.mark.parametrize("rmw", ["", "rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp"])
def test_fast_dds_names_all_get_the_fast_dds_profile(rmw):
    env = {"RMW_IMPLEMENTATION": rmw}
    assert Path(dds.apply_dds_config(env)).name == "fastdds_large_frames.xml"
