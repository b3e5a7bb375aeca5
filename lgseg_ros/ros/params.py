"""The node's parameters, topics and services in one table: the single source of truth.

The node declares exactly these parameters (with these descriptions), the config files
document them, and test/test_launch_config.py checks launch, config and RViz files
against this module. README tables are generated from it (``python -m lgseg_ros.ros.params``).
"""
from __future__ import annotations

from dataclasses import dataclass

from lgseg_ros.labels import CAMVID_CLASSES
from lgseg_ros.viz import COLORMAPS

# The shipped checkpoint was trained and evaluated on these.
DEFAULT_LABELS = list(CAMVID_CLASSES)

# 2560x1600 fits; 4K UHD (8.3 MP) does not. Outputs are always at the input resolution,
# so the limit bounds the cost of conversion and of four full-size outputs per frame.
DEFAULT_MAX_IMAGE_PIXELS = 4_194_304
# The most a user may allow: 8K UHD (7680x4320 = 33.2 MP) fits. Per frame the node holds
# the message, an RGB copy, mask, confidence, colour mask and overlay (about 11 bytes a
# pixel, ~370 MB at 8K), so "no limit" is not offered.
MAX_IMAGE_PIXELS_CAP = 33_554_432
# Network input: the frame path's memory grows with H*W (lite-minilm, ONNX Runtime:
# 1.2 GB at 384x480); 1024x1024 is already far beyond what the model was trained at.
NET_SIZE_RANGE = (32, 1024, 32)
MAX_CAMERAS = 16
# Paths and names; longer strings are refused unread rather than echoed or stat()ed.
MAX_STRING_CHARS = 4096

RELIABILITY = ("best_effort", "reliable", "best_available")
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
PRECISIONS = ("auto", "fp32", "fp16", "int8")

# When a change takes effect: "now" (between two frames), "activate" (next activation),
# "configure" (next configure: cleanup + configure reloads the model), "start" (startup only).
# "start" parameters are read-only once the node runs: those that choose the code and files
# the node loads (checkpoint, model_config, engine_cache_dir) cannot be changed by a peer.
NOW, ACTIVATE, CONFIGURE, START = "now", "activate", "configure", "start"


# rcl_interfaces/ParameterType's number for each kind (written here so this module stays
# free of ROS imports; test_node_worker checks them against the message's constants).
PARAM_TYPE_IDS = {"bool": 1, "int": 2, "double": 3, "string": 4, "string_array": 9}

@dataclass(frozen=True)
class Param:
    name: str
    default: object  # list[str] for string arrays; None: a string array that starts empty
    kind: str        # "string" | "bool" | "int" | "double" | "string_array"
    applies: str
    description: str
    choices: tuple = ()
    # (min, max) or (min, max, step) for int and double parameters: checked whenever the
    # value is set (start-up, `ros2 param set`), and announced in the descriptor so tools
    # such as rqt_reconfigure show the range.
    limits: tuple = ()


PARAMETERS: tuple[Param, ...] = (
    Param("labels", DEFAULT_LABELS, "string_array", NOW,
          "Target classes, in id order (labels[0] -> id 0). Validated like ~/set_labels: "
          "a bad set is rejected with the reason and the old set is kept."),
    Param("cameras", None, "string_array", CONFIGURE,
          "Camera namespaces served by this one process and model, e.g. [front, rear]. "
          "Empty: one camera on `image`. Otherwise camera C reads `C/image` and publishes "
          "under `~/C/`. At most 16, each a valid ROS namespace, short enough that "
          "`~/C/class/<label>/mask` fits ROS's 247-character topic names (checked at configure)."),
    Param("model_config", "", "string", START,
          "Model config name (lgseg_ros.model configs, e.g. lite-minilm, test-tiny). Empty: "
          "the config recorded in the checkpoint."),
    Param("checkpoint", "", "string", START,
          "Path to a .safetensors checkpoint, which then answers every label set. Empty: "
          "the shipped models: the street model (default_checkpoint_path()) for a set of "
          "street classes, the rooms model beside it for a set with any other word "
          "(README 'Two shipped models'), unless model_config alone names a config to build "
          "with untrained weights."),
    Param("backend", "auto", "string", CONFIGURE,
          "Inference backend: auto, torch, onnxruntime or tensorrt. torch only from start-up "
          "(-p backend:=torch) where the process has no torch yet: chosen at run time it "
          "would load torch into the node for good.", BACKENDS),
    Param("device", "auto", "string", CONFIGURE,
          "auto, cpu or cuda (the first visible GPU; pick another with CUDA_VISIBLE_DEVICES)."),
    Param("precision", "auto", "string", CONFIGURE,
          "auto (fp16 on CUDA and TensorRT; on CPU the ONNX Runtime default, see README "
          "'int8 on the CPU'), fp32, fp16 or int8 (ONNX Runtime on CPU, calibrated on CamVid "
          "train frames).", PRECISIONS),
    Param("engine_cache_dir", "", "string", START,
          "Directory of cached ONNX exports and TensorRT engines. Empty: the library's default "
          "cache. Must exist and be writable by this user only; what is read from it is "
          "checked against the checkpoint before it is served, and an engine only if this "
          "cache built it (signed with the directory's secret) from the verified ONNX file."),
    Param("force_rebuild", False, "bool", CONFIGURE,
          "Rebuild the TensorRT engine even when a valid cached one exists (at start-up "
          "only: a later configure builds nothing)."),
    Param("net_height", 384, "int", CONFIGURE, "Network input height in pixels. A size "
          "whose model files are not built yet is built at start-up only; at a later "
          "configure it is refused, naming `lgseg artefacts` (README, 'A configure after the "
          "first builds no files').",
          limits=NET_SIZE_RANGE),
    Param("net_width", 480, "int", CONFIGURE, "Network input width in pixels (as net_height).",
          limits=NET_SIZE_RANGE),
    Param("keep_aspect", True, "bool", CONFIGURE,
          "Letterbox to the network size instead of stretching the image."),
    Param("score_threshold", 0.0, "double", CONFIGURE,
          "Pixels whose best softmax score is below this are published as unlabeled "
          "(255 / 65535). Also published as LabelInfo.threshold.", limits=(0.0, 1.0)),
    Param("single_label_margin", 0.0, "double", CONFIGURE,
          "For a label set of one name: a pixel goes to the name where its logit is within "
          "this much of the 'none' logit (0: plain argmax). The models under-claim a name "
          "asked alone; 0.75-1.0 won back most of it on a development split (models/README.md, "
          "stage 22c). A pixel it gives the name has the name's own softmax score as its "
          "confidence (under 0.5), so a score_threshold of 0.5 or more takes it back. Sets of "
          "two or more names are not changed. One margin for both shipped models.",
          limits=(0.0, 4.0)),
    Param("grounding_warn_below", 0.6, "double", CONFIGURE,
          "A label whose text embedding is less similar than this (cosine) to every name the "
          "checkpoint was trained on is reported as not well grounded: a warning in the log, "
          "in the set_labels reply and well_grounded=false on ~/label_set.", limits=(0.0, 1.0)),
    Param("label_anchor", 0.5, "double", CONFIGURE,
          "A label at or above grounding_warn_below enters the model moved this share of the "
          "way from its own text embedding towards its nearest trained name (0: the word as "
          "it is; 1: the trained name). Unseen words for trained classes then work far "
          "better (models/README.md); trained names and words below the line are unchanged.",
          limits=(0.0, 1.0)),
    Param("use_compressed", False, "bool", ACTIVATE,
          "Subscribe to sensor_msgs/CompressedImage on `<image topic>/compressed` instead of "
          "the raw image."),
    Param("qos_reliability", "best_effort", "string", ACTIVATE,
          "Input (image, camera_info) reliability: best_effort (accepts every publisher), "
          "reliable, or best_available (decided at activate from the publishers present then: "
          "reliable if all are, so large frames from a reliable camera arrive even without the "
          "Fast DDS profile, but a best-effort camera started later cannot connect; README, "
          "Troubleshooting). Outputs are always reliable so every subscriber can connect.",
          RELIABILITY),
    Param("qos_depth", 1, "int", ACTIVATE,
          "Input queue depth. 1 keeps only the newest frame; the node never queues frames "
          "behind the model either way.", limits=(1, 10)),
    Param("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS, "int", NOW,
          "Frames with more pixels are skipped with a logged reason (outputs are always at "
          "the input resolution, so the node does not silently downscale). At most "
          "33554432 (8K UHD fits). At run time it can be lowered, or raised back up to its "
          "start-up value, never above: every size bound on input and output scales with it.",
          limits=(1, MAX_IMAGE_PIXELS_CAP)),
    Param("overlay_alpha", 0.5, "double", NOW,
          "Weight of the colour mask in ~/overlay: 0 image only, 1 colours only.",
          limits=(0.0, 1.0)),
    Param("colormap", "hash", "string", NOW,
          "hash: a fixed colour per label name, the same across label sets and runs; "
          "palette: colours distinct within the set, by id.", COLORMAPS),
    Param("status_period", 1.0, "double", ACTIVATE,
          "Seconds between ~/status and /diagnostics messages.", limits=(0.05, 3600.0)),
    Param("autostart", True, "bool", START,
          "Configure and activate at start-up. false: stay unconfigured for a lifecycle "
          "manager to drive (configure / activate through the lifecycle services)."),
)

PARAM_BY_NAME = {p.name: p for p in PARAMETERS}

# Relative to the node (`~/` is the node's private namespace). With `cameras`, each
# camera C gets the same outputs under `~/C/` and reads `C/image`, `C/camera_info`.
INPUT_TOPICS = {
    "image": "sensor_msgs/msg/Image",
    "image/compressed": "sensor_msgs/msg/CompressedImage",
    "camera_info": "sensor_msgs/msg/CameraInfo",
}
OUTPUT_TOPICS = {
    "~/label_mask": "sensor_msgs/msg/Image",
    "~/confidence": "sensor_msgs/msg/Image",
    "~/color_mask": "sensor_msgs/msg/Image",
    "~/overlay": "sensor_msgs/msg/Image",
    "~/label_info": "vision_msgs/msg/LabelInfo | lgseg_ros/msg/LabelInfo",
    "~/camera_info": "sensor_msgs/msg/CameraInfo",
    "~/class/<label>/mask": "sensor_msgs/msg/Image",
}
NODE_TOPICS = {
    "~/status": "diagnostic_msgs/msg/DiagnosticArray",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}
SERVICES = {
    "~/set_labels": "lgseg_ros/srv/SetLabels",
    "~/enable": "std_srvs/srv/SetBool",
}
NODE_NAME = "lgseg_node"
EXECUTABLES = ("lgseg_node",)


def range_text(p: Param) -> str:
    """'32 to 1024, step 32' / 'one of a, b' / '' for the README and refusals."""
    if p.limits:
        step = f", step {p.limits[2]}" if len(p.limits) > 2 else ""
        return f"{p.limits[0]} to {p.limits[1]}{step}"
    if p.choices:
        return "one of " + ", ".join(p.choices)
    return ""


def markdown_table() -> str:
    """The README's parameter table."""
    rows = ["| parameter | type | default | range | applies | meaning |", "|---|---|---|---|---|---|"]
    for p in PARAMETERS:
        default = "[]" if p.default is None else p.default
        if isinstance(default, list):
            default = "[" + ", ".join(default) + "]"
        rows.append(f"| `{p.name}` | {p.kind} | `{default}` | {range_text(p)} | {p.applies} | "
                    f"{p.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
