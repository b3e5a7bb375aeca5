"""The shipped SROS2 policy template (config/sros2/lgseg.policy.xml) is well formed.

sros2 itself is not on PyPI, so its schema cannot be run here; this checks the structure
that schema (policy format 0.2.0) prescribes, and that the node's own enclave grants
exactly what the node uses: every topic and service in lgseg_ros.ros.params, the
parameter, lifecycle and type-description services rclpy adds, and nothing that lets the
read-only consumer enclave change the node.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from lgseg_ros.ros import params as P

POLICY = Path(__file__).resolve().parents[1] / "config" / "sros2" / "lgseg.policy.xml"
RULES = {"topics": ("publish", "subscribe"), "services": ("reply", "request"),
         "actions": ("call", "execute")}
CHILD = {"topics": "topic", "services": "service", "actions": "action"}


def _profiles():
    root = ET.parse(POLICY).getroot()
    assert root.tag == "policy" and root.get("version") == "0.2.0"
    (contexts,) = list(root)
    assert contexts.tag == "contexts"
    out = {}
    for context in contexts:
        assert context.tag == "context" and context.get("path", "").startswith("/")
        (profiles,) = list(context)
        assert profiles.tag == "profiles"
        for profile in profiles:
            assert profile.tag == "profile" and profile.get("ns") and profile.get("node")
            grants = {}
            for group in profile:
                assert group.tag in RULES, group.tag
                qualifiers = {k: v for k, v in group.attrib.items()}
                assert qualifiers and set(qualifiers) <= set(RULES[group.tag]), qualifiers
                assert set(qualifiers.values()) <= {"ALLOW", "DENY"}, qualifiers
                names = [e.text for e in group]
                assert names and all(e.tag == CHILD[group.tag] and e.text and e.text.strip() == e.text
                                     for e in group)
                for rule, verdict in qualifiers.items():
                    for name in names:
                        grants.setdefault((rule, verdict), set()).add(name)
            out[context.get("path")] = grants
    return out


def _private(name: str) -> str:
    return name.replace("~/", "~").replace("<label>", "*")


def test_policy_template_is_well_formed_and_covers_the_node():
    profiles = _profiles()
    assert set(profiles) == {"/lgseg/lgseg_node", "/lgseg/operator", "/lgseg/consumer"}
    node = profiles["/lgseg/lgseg_node"]
    published = node[("publish", "ALLOW")]
    for topic in [*P.OUTPUT_TOPICS, "~/label_set", "~/status"]:
        assert _private(topic) in published, topic
    assert "diagnostics" in published and "~transition_event" in published
    replies = node[("reply", "ALLOW")]
    for service in P.SERVICES:
        assert _private(service) in replies, service
    for service in ("set_parameters", "set_parameters_atomically", "get_parameters", "change_state"):
        assert f"~{service}" in replies
    assert {"camera/image_raw", "camera/camera_info"} <= node[("subscribe", "ALLOW")]
    # Only the operator may change the node; the consumer is refused explicitly.
    changing = {"lgseg_node/set_labels", "lgseg_node/enable", "lgseg_node/set_parameters",
                "lgseg_node/set_parameters_atomically", "lgseg_node/change_state"}
    assert changing <= profiles["/lgseg/operator"][("request", "ALLOW")]
    consumer = profiles["/lgseg/consumer"]
    assert not changing & consumer[("request", "ALLOW")]
    assert changing <= consumer[("request", "DENY")]
