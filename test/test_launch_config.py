"""The launch file, the config files and the RViz config name only things that exist.

`ros2 launch` and RViz cannot run here, so the files are parsed (AST for the launch file,
YAML for the rest) and checked against the node itself: a real node is constructed and
configured, and its declared parameters and its publishers are the reference, beside the
table in lgseg_ros/ros/params.py that the README is generated from.
"""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest
import yaml
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from lgseg_ros.ros import params as P
from lgseg_ros.ros.node import LgsegNode
from test_node_support import RosHarness, tiny_checkpoint  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "lgseg.launch.py"
RVIZ = REPO / "config" / "lgseg.rviz"
CONFIGS = sorted((REPO / "config").glob("*.yaml"))
ROS_BUILTIN_PARAMS = {"use_sim_time", "start_type_description_service"}


@pytest.fixture(scope="module")
def harness():
    h = RosHarness()
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(scope="module")
def configured_node(harness, tiny_checkpoint):
    # A name of its own: the graph is asked for this node's publishers by name, and a
    # /lgseg_node of an earlier test (another context or process, still leaving the graph)
    # answered once with only its transition_event.
    node = harness.add(LgsegNode("lgseg_node_table_check", context=harness.context, parameter_overrides=[
        Parameter("autostart", value=False), Parameter("checkpoint", value=tiny_checkpoint),
        Parameter("backend", value="torch"), Parameter("device", value="cpu"),
        Parameter("net_height", value=64), Parameter("net_width", value=96)]))
    assert node.lifecycle_state == "unconfigured"
    yield node
    harness.remove(node)


def test_node_declares_exactly_the_table_with_descriptions(configured_node):
    node = configured_node
    declared = set(node._parameters) - ROS_BUILTIN_PARAMS
    assert declared == set(P.PARAM_BY_NAME)
    for name in declared:
        desc = node.describe_parameter(name)
        assert len(desc.description) > 20, name
        assert f"applies: {P.PARAM_BY_NAME[name].applies}" in desc.description
    assert "| `labels` |" in P.markdown_table()


def test_publishers_and_services_of_a_configured_node_match_the_table(configured_node):
    node = configured_node
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    try:
        pubs = {name: types for name, types in node.get_publisher_names_and_types_by_node(
            node.get_name(), node.get_namespace())}
        ns = f"/{node.get_name()}"
        for topic, type_ in {**P.OUTPUT_TOPICS, **P.NODE_TOPICS}.items():
            if "<label>" in topic:
                topic = topic.replace("<label>", "car")
            full = topic.replace("~", ns)
            assert full in pubs, f"{full} in the table but not published"
            assert pubs[full][0] in type_.split(" | "), full
        services = {name for name, _ in node.get_service_names_and_types_by_node(
            node.get_name(), node.get_namespace())}
        for srv in P.SERVICES:
            assert srv.replace("~", ns) in services
    finally:
        node.trigger_cleanup()


def _ros_params(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert list(data) == ["/**"], f"{path.name}: use the /** wildcard so any node name/namespace matches"
    return data["/**"]["ros__parameters"]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_files_name_declared_parameters_with_valid_values(path, harness):
    values = _ros_params(path)
    for name, value in values.items():
        assert name in P.PARAM_BY_NAME, f"{path.name}: unknown parameter {name!r}"
        if name != "labels":
            LgsegNode._check_value(name, value)
    # rcl parses the file and the node declares every value with its type (a 0 where a
    # double is due would fail here, as it would on the robot).
    node = LgsegNode("config_check", context=harness.context,
                     cli_args=["--ros-args", "--params-file", str(path), "-p", "autostart:=false"])
    try:
        for name, value in values.items():
            if name != "autostart":  # overridden above: this check must not load a model
                assert node.get_parameter(name).value == value, name
    finally:
        node.destroy_node()


def test_default_config_documents_every_parameter():
    text = (REPO / "config" / "lgseg.yaml").read_text()
    values = _ros_params(REPO / "config" / "lgseg.yaml")
    lines = text.splitlines()
    for p in P.PARAMETERS:
        where = [i for i, line in enumerate(lines) if re.match(rf"\s*#?\s*{p.name}:", line)]
        assert where, f"config/lgseg.yaml does not mention {p.name}"
        j = where[0] - 1  # a comment may document a group of adjacent parameters
        while re.match(r"\s*[a-z_]+:", lines[j]):
            j -= 1
        assert lines[j].strip().startswith("#"), f"{p.name} has no comment above it"
        if p.default is not None:
            assert values[p.name] == p.default, f"{p.name}: config default differs from the node's"
    multi = _ros_params(REPO / "config" / "multi_camera.yaml")
    assert len(multi["cameras"]) >= 2


def _launch_tree():
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def test_launch_file_names_real_executables_parameters_and_topics():
    tree = _launch_tree()
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]

    def fname(c):
        return c.func.id if isinstance(c.func, ast.Name) else getattr(c.func, "attr", "")

    declared = {c.args[0].value for c in calls if fname(c) == "DeclareLaunchArgument"}
    assert {"camera_topic", "namespace", "config_file", "backend"} <= declared
    used = {c.args[0].value for c in calls if fname(c) == "LaunchConfiguration"}
    assert used <= declared, f"undeclared launch arguments: {used - declared}"

    ours = [c for c in calls if fname(c) in ("Node", "LifecycleNode")
            and isinstance(_kw(c, "package"), ast.Constant) and _kw(c, "package").value == "lgseg_ros"]
    assert len(ours) == 1 and fname(ours[0]) == "LifecycleNode"
    node = ours[0]
    exe = _kw(node, "executable").value
    assert exe in P.EXECUTABLES and _kw(node, "name").value == P.NODE_NAME
    script = REPO / "scripts" / exe
    assert script.is_file() and os.access(script, os.X_OK)
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert re.search(rf"install\(PROGRAMS[^)]*scripts/{exe}\b", cmake), "executable not installed"
    assert re.search(r"install\(DIRECTORY[^)]*\blaunch\b[^)]*\bconfig\b", cmake)
    for remap in _kw(node, "remappings").elts:
        assert remap.elts[0].value in P.INPUT_TOPICS, remap.elts[0].value

    # Every parameter name the launch file sets (dict keys, item assignments) is declared.
    names = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Dict):
            names |= {k.value for k in n.keys if isinstance(k, ast.Constant)}
        if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Store) and isinstance(n.slice, ast.Constant):
            names.add(n.slice.value)
    assert names and names <= set(P.PARAM_BY_NAME), names - set(P.PARAM_BY_NAME)

    # Files it points at in the package share exist in the source tree.
    for c in calls:
        if fname(c) == "PathJoinSubstitution":
            parts = [e.value for e in c.args[0].elts if isinstance(e, ast.Constant)]
            assert (REPO.joinpath(*parts)).is_file(), parts


def test_rviz_config_shows_existing_outputs():
    rviz = yaml.safe_load(RVIZ.read_text())
    displays = rviz["Visualization Manager"]["Displays"]
    outputs = {t.replace("~", f"/{P.NODE_NAME}") for t in P.OUTPUT_TOPICS}
    by_class: dict[str, list[str]] = {}
    for d in displays:
        assert d["Class"].startswith("rviz_default_plugins/")
        if "Topic" in d:
            topic = d["Topic"]["Value"]
            assert topic in outputs, f"RViz shows {topic}, which the node does not publish"
            assert d["Topic"]["Reliability Policy"] in ("Reliable", "Best Effort")
            by_class.setdefault(d["Class"].split("/")[1], []).append(topic)
    # The overlay on the camera view; the Camera display needs camera_info beside the image.
    assert by_class["Camera"] == [f"/{P.NODE_NAME}/overlay"]
    assert f"/{P.NODE_NAME}/camera_info" in outputs
    assert f"/{P.NODE_NAME}/label_mask" in by_class["Image"]
    assert rviz["Visualization Manager"]["Global Options"]["Fixed Frame"]

