"""`lgseg_node`: the lifecycle node. Camera images in; label mask, per-class masks, colour
mask, overlay, confidence and the id -> label mapping out; target classes changed by service.

Thin over the ROS-free core: ``Segmenter`` does the model work, ``image_conversion`` the
message <-> numpy work, ``viz`` the colours, ``frames`` the latest-frame slots and stats.
Beside it: ``outputs`` (what is published), ``param_guard`` (the bounded parameter
services), ``service_renewal`` (servers renewed after an oversized request),
``lifecycle_guard`` (~/change_state's label bound), ``frame_checks`` (header
checks), ``wire`` (input frames read and checked from their serialized form: images and
CameraInfo are subscribed ``raw=True``), ``label_worker`` (label encoding off the
executor), ``node_main`` (the process: signals, exit codes). What is here
is the ROS wiring and the rules that make the outputs trustworthy:

* Latest frame only. The subscription callback stores the newest message in its camera's
  slot (a replaced frame counts as dropped) and returns; one worker thread processes the
  slots. Nothing queues up behind the model, so latency never grows with load.
* One worker for all cameras, one model. The backend runs one frame at a time anyway, so
  more threads would only contend for it; the worker serves the frame that has waited
  longest, so cameras share the model fairly.
* Atomic label changes. The service (or parameter) encodes the new labels first, on the
  label worker (off the frame path and off the executor, so no request holds the node),
  then swaps the current LabelSet under the frame lock, i.e. strictly between two frames. The worker reads the LabelSet once per frame, so no output of a frame mixes
  two sets. label_info is republished at once with the node clock, and again with the
  header of the first frame processed under the new set (see msg/LabelInfo.msg), before
  that frame's masks.
* Outputs carry the input header unchanged and the input resolution, always.
* Bad frames are logged (throttled per camera and reason) and skipped; the next good
  frame is served. Bad label sets are rejected with the reason; nothing changes.
* Hostile input is a class, not a list: sizes are bounded before anything is allocated
  (pixel limit before conversion, image headers before decoding, parameter ranges when
  set, request entry and name counts, header.frame_id length and data length read from
  the serialized sample before it is converted), values a peer sent are
  repeated cut short in logs and replies, and no message or request can end the process
  (the parameter services are answered here where rclpy's raise; the executor spins past
  any callback that raises). What the node loads (checkpoint, model_config,
  engine_cache_dir) is chosen at start-up only.
* Spin it in ``RespinExecutor`` (``main`` does): single-threaded, because rclpy's
  MultiThreadedExecutor delayed callbacks by up to seconds, and proof against a race in
  rclpy that ends ``spin()`` when an entity is destroyed mid-wait, as label changes do
  (ros2/rclpy#1284). Details in ``executor.py``.
"""
from __future__ import annotations

import gc
import itertools
import os
import re
import sys
import threading
import time
import traceback
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                 SetParametersResult)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.exceptions import ParameterUninitializedException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import SetBool

from lgseg_ros.labels import LabelSetError, printable, shown, topic_tokens, validate_labels
from lgseg_ros.procinfo import trim_heap
from lgseg_ros.ros import params as P
from lgseg_ros.ros.frame_checks import StampWatch, check_frame, clock_stamp
from lgseg_ros.ros.frame_gate import FrameGate
from lgseg_ros.ros.frames import CameraStats, LatestFrameSlots, Pending, Throttle
from lgseg_ros.ros.group_hygiene import ForgetsDestroyedEntities
from lgseg_ros.ros.image_conversion import ImageConversionError, compressed_to_rgb, image_to_rgb
from lgseg_ros.ros.label_worker import LabelWorker, LabelWorkerBusy, wake_awaiting
from lgseg_ros.ros.outputs import (LABEL_INFO_QOS, LABEL_INFO_TYPE, OUTPUT_QOS, LabelInfo,  # noqa: F401
                                   LabelSetMsg, OutputsMixin)  # LABEL_INFO_TYPE, LabelInfo: re-exported
from lgseg_ros.ros.lifecycle_guard import guard_change_state
from lgseg_ros.ros.type_description_guard import guard_type_description
from lgseg_ros.ros.param_guard import ParameterGuardMixin
from lgseg_ros.ros.service_renewal import watch_node_services
from lgseg_ros.ros.wire import RENEW_INPUT_ABOVE_BYTES, check_camera_info, read_frame
from lgseg_ros.srv import SetLabels
from lgseg_ros.msg import VisionClass as SrvVisionClass  # SetLabels.Response uses ours

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE

_TYPE_NAMES = {t.value: t.name.lower() for t in Parameter.Type}
# The node's own timers run on this clock, never on ROS time: /clock is whatever a peer sends.
STEADY_CLOCK = Clock(clock_type=ClockType.STEADY_TIME)
# How long an active node may see no frame before it says so (and why that may be).
NO_INPUT_WARN_S = 5.0
# At most 10 at-change label announcements a second (_announce_labels).
ANNOUNCE_PERIOD_S = 0.1
# ~/set_labels and ~/enable keep this many unread requests (rclpy's default is 10): a burst
# of 24 from separate clients while the executor made class topics lost 9 to 15 of them,
# dropped by DDS before the node could answer, and their clients waited for ever (audit
# round 15). Not deeper for set_labels: Fast DDS has no receive-side size cap, so each queued
# request may be large.
LABEL_REQUEST_DEPTH = 32
ENABLE_REQUEST_DEPTH = 100
# rclpy's parameter services keep 1,000 unread requests, each with a buffer as large as the
# request: 1,000 requests of 1 MB to one of them kept +570 MB (probe round 16). `ros2 param`
# and the node's tools send one request at a time.
PARAMETER_REQUEST_DEPTH = 32
# Label changes prepared at once (encoding, then class topics a chunk per turn); one more is
# answered "busy" at once, so a deeper request queue does not mean more work in flight.
MAX_LABEL_CHANGES_IN_FLIGHT = 8
# Class-mask publishers made or destroyed per executor turn in a label change (~50 ms of
# DDS entity work at ~0.8 ms each), so frames are taken between chunks.
PUBLISHERS_PER_TURN = 64
# A camera namespace: ROS name tokens (no leading digit), optionally absolute.
_CAMERA_NAME = re.compile(r"/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")

def _request_qos(depth: int) -> QoSProfile:
    """rclpy's service default (reliable, volatile) with a deeper request queue."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


class ConfigError(ValueError):
    """A parameter value the node cannot run with; the message names the parameter."""


def _check_checkpoint_path(path: str) -> None:
    """Say what is wrong with a checkpoint path: missing, a directory, a device, unreadable."""
    import stat

    what = f"checkpoint={shown(path)}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"{what}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{what}: cannot be read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{what} is a directory; give the .safetensors file inside it")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} is not a regular file (a device, pipe or socket); "
                          "give a .safetensors file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{what}: permission denied")


@dataclass(eq=False)
class _Camera:
    key: str                    # "" for the single-camera default, else the namespace
    image_topic: str            # resolved input names
    compressed_topic: str
    info_topic: str
    out: str                    # output prefix: "~" or "~/<cam>"
    stats: CameraStats = field(default_factory=CameraStats)
    pubs: dict[str, Any] = field(default_factory=dict)
    class_pubs: dict[str, Any] = field(default_factory=dict)     # token -> publisher
    class_order: list[str] = field(default_factory=list)         # tokens in id order
    class_set: Any = None       # the LabelSet class_order was built for
    # Tokens a label change being prepared has made publishers for: a swap in the meantime
    # keeps them (token -> number of preparations holding it).
    reserved: Counter = field(default_factory=Counter)
    info_set: Any = None        # the LabelSet last announced with a frame header
    info_header: Header | None = None
    last_mask_stamp: tuple[int, int] | None = None   # (sec, nanosec) of the newest label mask
    reannounced_at: float = 0.0   # monotonic time label_info was last re-sent for a step back
    subs: list[Any] = field(default_factory=list)
    last_frame_at: float = 0.0
    renewed_at: dict[int, float] = field(default_factory=dict)  # subs index -> last _renew_input
    warned_no_input: bool = False
    warned_frame_id: bool = False
    bad_at_last_status: int = 0
    # Its own gate for bad-frame lines, whose keys carry what the camera's peers sent: a
    # flood of distinct reasons on one camera then cannot crowd out another camera's lines,
    # nor the node's request and QoS lines (probe round 13: with one gate for all, they fell
    # silent while it lasted, with no count)
    log_gate: Throttle = field(default_factory=lambda: Throttle(5.0))
    # And the node's own frame errors a gate apart from the reasons its peers choose: with
    # one for both, a peer cycling bad frames took every line the total bound let through,
    # and a real error once a second was logged once in 10 minutes (review of audit 19)
    error_gate: Throttle = field(default_factory=lambda: Throttle(5.0))

    @property
    def name(self) -> str:
        return self.key or "image"


# rmw's topic name limit (RMW_TOPIC_MAX_NAME_LENGTH: 255 minus the 8 the DDS prefix takes)
# and the longest topic token a label can get (64 characters, or a slug of them plus "l_"
# and 16 hex digits: labels.topic_tokens).
MAX_TOPIC_CHARS = 247
MAX_TOKEN_CHARS = 2 + 64 + 1 + 16


def after_last_mask(cam: _Camera, now):
    """The stamp of a label_info announced between frames: the node's clock, but never
    at or before a mask already published. Masks carry the camera's stamps; with a camera
    clock 0.5 s ahead of the node's, a label_info stamped with the node clock came before
    masks of the old set by stamp, so README's rule ("a mask belongs to the newest
    label_info stamped at or before it") gave them the new set (probe round 7)."""
    last = cam.last_mask_stamp
    if last is None or (now.sec, now.nanosec) > last:
        return now
    sec, nanosec = last[0], last[1] + 1
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, 0
    if sec > 2**31 - 1:
        # A mask stamped at the last second a Time holds: nothing later exists, and sec + 1
        # went out as -2**31, before every mask (probe round 10). The same stamp, then.
        sec, nanosec = last
    return type(now)(sec=sec, nanosec=nanosec)


class _Reservation(list):
    """A label change's hold on its class topics, (camera, tokens) pairs; ``holds_frames``
    while it also holds the frame worker for its swap (released with the tokens)."""
    holds_frames = False
    gap_granted = False   # the worker waits for this change's swap however long it takes


def _capped(text: str, limit: int = 2000) -> str:
    """An error's text for the log, head and tail kept: a checkpoint whose config held a
    10 MB value made one 10 MB "configure failed" line per configure request (audit round 17)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit // 3]}\n... ({len(text)} characters) ...\n{text[-(limit - limit // 3):]}"


def _camera_prefix(key: str) -> str:
    return "~/" + key.strip("/") if key else "~"


class LgsegNode(ForgetsDestroyedEntities, ParameterGuardMixin, OutputsMixin, LifecycleNode):
    """The lifecycle node; see the module docstring for the rules it keeps."""

    def __init__(self, node_name: str = P.NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._guard_parameter_services()
        # Lock order: _labels_lock, then the gate's lock. The worker takes only the latter.
        self._labels_lock = threading.RLock()
        # The worker holds the gate's lock for a whole frame; a swap awaits the gap between
        # two frames through the gate instead of waiting for the lock on the executor.
        self._gate = FrameGate()
        self._syncing_labels = False
        self._configured_once = False   # see _may_load_torch
        self._segmenter = None
        self._label_set = None
        self._cameras: list[_Camera] = []
        self._fixed_topics: dict[str, str] = {}   # inputs and outputs as remapped: what each is
        self._slots = LatestFrameSlots()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._worker_faults = 0   # errors inside the frame worker's own error handling
        self._enabled = True
        self._active = False
        self._activated_at = 0.0
        self._status_timer = None
        self._status_pubs: list[Any] = []
        self._throttle = Throttle(5.0)        # lines a peer's request causes (a few fixed kinds)
        self._qos_throttle = Throttle(5.0)    # QoS mismatch warnings, one key per topic
        self._failure_throttle = Throttle(5.0)   # failed transitions, one key per reason
        # At-change announcements (label_info, ~/label_set for every camera) at most once per
        # ANNOUNCE_PERIOD_S; a change inside that window is announced when it ends, if it is
        # still in force and no frame has announced it (see _announce_labels).
        self._announce_gate = Throttle(ANNOUNCE_PERIOD_S)
        self._announce_timer = None
        guard_change_state(self, self._throttle)
        guard_type_description(self, self._throttle)
        # The slow half of a label change (encoding) runs here, off the executor thread;
        # _prepared carries its result to the synchronous swap (see _set_labels).
        self._label_worker = LabelWorker()
        self._prepared = None
        self._reply_parts_cache = None   # see _set_labels_reply_parts
        # Label changes are numbered as they arrive; a swap older than the last one swapped
        # in is refused: a large set still encoding overwrote a small one sent after it and
        # already in force, both answered "in force" (audit round 15).
        self._label_arrivals = itertools.count(1)
        self._swapped_seq = 0   # the arrival number of the set in force
        self._changes_in_flight = 0
        # A set stored while unconfigured is encoded only at configure, where the model can
        # refuse it (words the encoder reads as one, a bounded K): that failed the configure,
        # and every later one, since the set had replaced the `labels` parameter. Configure
        # then serves the labels it replaced and reports why (log, ~/status).
        self._stored_labels = None        # the set stored, until a configure takes it
        self._replaced_labels: tuple[str, ...] = ()   # `labels` before the first store
        self._stored_refusal = None       # why configure refused it, until the next change
        # Class-mask publishers of labels that left, destroyed a chunk at a time (_retire).
        self._retiring: list[Any] = []
        self._stamps: dict[str, StampWatch] = {}
        # Everything after the state above may raise (a refused start-up value, a stop
        # signal during the autostart configure): the half-built node is then taken down
        # here, in order (its label thread, then its rcl entities), not left to garbage
        # collection at some moment around rclpy's context shutdown; a CI run saw the
        # net_height refusal printed, then SIGSEGV instead of exit 2.
        try:
            self._build()
        except BaseException:
            self.destroy_node()
            raise

    def _build(self) -> None:
        self._declare_parameters()
        self._dyn = self._read_dynamic()
        self._pixel_ceiling = int(self._dyn["max_image_pixels"])   # the operator's start-up value
        # Image callbacks only fill slots: never blocked by a service that waits for the
        # frame lock, nor by the status timer.
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        # Reentrant: a set_labels request awaiting its encoding holds back nothing else.
        self.create_service(SetLabels, "~/set_labels", self._on_set_labels,
                            qos_profile=_request_qos(LABEL_REQUEST_DEPTH),
                            callback_group=ReentrantCallbackGroup())
        self.create_service(SetBool, "~/enable", self._on_enable,
                            qos_profile=_request_qos(ENABLE_REQUEST_DEPTH),
                            callback_group=self._service_group)
        self._service_renewal = watch_node_services(self)
        self._service_renewal.set_request_depth(
            PARAMETER_REQUEST_DEPTH, lambda srv: srv.srv_type.__module__.startswith("rcl_interfaces"))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if self.get_parameter("autostart").value:
            if self.trigger_configure() == SUCCESS:
                self.trigger_activate()

    # -- parameters ------------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        for p in P.PARAMETERS:
            choices = f" One of: {', '.join(p.choices)}." if p.choices else ""
            desc = ParameterDescriptor(
                description=f"{p.description}{choices} (applies: {p.applies})",
                type=P.PARAM_TYPE_IDS[p.kind], read_only=p.applies == P.START)
            if p.limits and p.kind == "int":
                desc.integer_range = [IntegerRange(from_value=p.limits[0], to_value=p.limits[1],
                                                   step=p.limits[2] if len(p.limits) > 2 else 0)]
            elif p.limits and p.kind == "double":
                desc.floating_point_range = [FloatingPointRange(from_value=float(p.limits[0]),
                                                                to_value=float(p.limits[1]))]
            # An empty string array cannot be declared with a value (rclpy would infer a
            # byte array): declared by type, then given an explicit empty value, because a
            # parameter without a value is missing from GetParameters replies, and one such
            # parameter empties the reply to a request for all of them (ros2 param dump,
            # rqt_reconfigure).
            value = Parameter.Type.STRING_ARRAY if p.default is None else p.default
            declared = self.declare_parameter(p.name, value, desc)
            if declared.type_ == Parameter.Type.NOT_SET:
                self.set_parameters([Parameter(p.name, Parameter.Type.STRING_ARRAY, [])])
            # Start-up values get the same checks as run-time ones (the ranges are already
            # enforced by the descriptor): a bad value stops the node with the reason.
            if p.name != "labels":
                self._check_value(p.name, self._param(p.name))

    def _apply_descriptor(self, parameter, descriptor=None, check_read_only=True):
        # rclpy's own refusals name types by number on Python 3.11 ("expected '2' got '4'")
        # and print the whole value; ours name the parameter, the types and the range.
        result = super()._apply_descriptor(parameter, descriptor, check_read_only)
        spec = P.PARAM_BY_NAME.get(parameter.name)
        if result.successful or spec is None:
            return result
        if result.reason.startswith("Trying to set a read-only parameter"):
            result.reason = (f"{spec.name} is read-only once the node runs (it chooses what the "
                             f"node loads); give it at start-up: -p {spec.name}:=VALUE")
        elif result.reason.startswith("Wrong parameter type"):  # rclpy tests this prefix
            result.reason = (f"Wrong parameter type: {spec.name} takes {spec.kind}, got "
                             f"{_TYPE_NAMES.get(parameter.type_.value, parameter.type_)} "
                             f"{shown(parameter.value)}")
        else:
            try:
                self._check_value(spec.name, parameter.value)
            except ConfigError as e:
                result.reason = str(e)
        return result

    def _param(self, name: str) -> Any:
        try:
            value = self.get_parameter(name).value
        except ParameterUninitializedException:
            return []
        return [] if value is None and P.PARAM_BY_NAME[name].kind == "string_array" else value

    @staticmethod
    def _check_value(name: str, value: Any) -> None:
        """Raise ConfigError for a value the node cannot use (the labels have their own path).
        Messages name the parameter, the value (cut short) and what would be accepted."""
        spec = P.PARAM_BY_NAME.get(name)
        if spec is None:
            return
        if isinstance(value, str) and len(value) > P.MAX_STRING_CHARS:
            raise ConfigError(f"{name}={shown(value)}: longer than {P.MAX_STRING_CHARS} characters")
        if spec.choices and value not in spec.choices:
            raise ConfigError(f"{name}={shown(value)}: choose one of {', '.join(spec.choices)}")
        if spec.limits and isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = spec.limits[:2]
            step = spec.limits[2] if len(spec.limits) > 2 else 0
            # `not lo <= v <= hi` also refuses NaN
            if not lo <= value <= hi or (step and (value - lo) % step):
                raise ConfigError(f"{name}={value}: out of range, accepted: {P.range_text(spec)}")
        if name == "device" and value not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device={shown(value)}: use auto, cpu or cuda (select a GPU with "
                              "CUDA_VISIBLE_DEVICES)")
        if name == "cameras":
            if len(value) > P.MAX_CAMERAS:
                raise ConfigError(f"cameras: {len(value)} namespaces, at most {P.MAX_CAMERAS}")
            keys = [str(c).strip("/") for c in value]
            for raw, key in zip(value, keys):
                if not key:
                    raise ConfigError(f"cameras: namespace {shown(raw)} is empty")
                if not _CAMERA_NAME.fullmatch(str(raw)) or len(raw) > 200:
                    raise ConfigError(
                        f"cameras: {shown(raw)} is not a valid ROS namespace (letters, digits and "
                        "_, separated by /, not starting with a digit)")
            if len(set(keys)) != len(keys):
                raise ConfigError(f"cameras: duplicate namespace in {shown(list(value), 8)}")

    def _read_config(self) -> dict[str, Any]:
        cfg = {p.name: self._param(p.name) for p in P.PARAMETERS}
        for name, value in cfg.items():
            self._check_value(name, value)
        return cfg

    def _read_dynamic(self) -> dict[str, Any]:
        return {n: self._param(n) for n in ("max_image_pixels", "overlay_alpha", "colormap")}

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            if p.name == "use_sim_time" and p.value != self.get_parameter("use_sim_time").value:
                # A peer switching it stopped the node's ROS clock until a /clock arrived,
                # and ~/status and /diagnostics with it (probe round 9).
                return SetParametersResult(successful=False, reason=(
                    "use_sim_time is set at start-up only (-p use_sim_time:=true): switched "
                    "at run time it would stop the node's clock, and its status, until a "
                    "/clock arrives"))
            if (p.name == "backend" and p.value == "torch" and "torch" not in sys.modules
                    and p.value != self.get_parameter("backend").value):
                # Taken at the next configure, it loaded torch into the process for good: a
                # peer's cycle to torch and back left RSS at 1,148 MB from 313 (probe round 17).
                return SetParametersResult(successful=False, reason=(
                    "backend=torch is chosen at start-up only (-p backend:=torch): switched at "
                    "run time it would load torch into this process for the rest of its life "
                    "(~0.8 GB that switching back does not return)"))
        try:
            for p in params:
                if p.name != "labels":
                    self._check_value(p.name, p.value)
                if (p.name == "max_image_pixels" and isinstance(p.value, int)
                        and p.value > self._pixel_ceiling):
                    # Every size bound scales with it (pixels, compressed bytes, the class-mask
                    # budget): a peer's raise to 8K let one 525 KB JPEG make 643 MB of output
                    # and hold 937 MB (audit round 19). The start-up value is the ceiling.
                    raise ConfigError(
                        f"max_image_pixels={p.value}: above the {self._pixel_ceiling} this node "
                        "was started with; at run time it can only be lowered or restored "
                        "(raise it at start-up: -p max_image_pixels:=N)")
            # A request that sets the cameras too: the stored set's topics are checked
            # against those, not the cameras it replaces. Atomic, they are in ``params``;
            # non-atomic (one entry per call, in the request's order), the guard holds them.
            cameras = next((p.value for p in params if p.name == "cameras"), None)
            if cameras is None:
                cameras = self._scoped_request_cameras()
            for p in params:
                if p.name == "labels":
                    self._set_labels(p.value, from_parameter=True, cameras=cameras)
        except (ConfigError, LabelSetError) as e:
            return SetParametersResult(successful=False, reason=str(e))
        except Exception as e:  # encoder failure: keep the old set, say why
            return SetParametersResult(successful=False, reason=f"label encoding failed: {shown(str(e), 300)}")
        later = {}
        for p in params:
            if p.name in self._dyn:
                self._dyn[p.name] = p.value
            spec = P.PARAM_BY_NAME.get(p.name)
            if spec and spec.applies in (P.CONFIGURE, P.ACTIVATE) and self._segmenter is not None:
                later.setdefault(spec.applies, []).append(p.name)
        if later:
            # One line per request, not per entry: 100 requests of 64 entries wrote 6,400.
            self._request_line("parameters", "; ".join(
                f"{', '.join(dict.fromkeys(names))} changed, taking effect at the next {when}"
                for when, names in later.items()))
        return SetParametersResult(successful=True)

    def _failure_line(self, line: str) -> None:
        """A failed transition's reason: the change_state reply says only "failed", so each
        distinct reason is logged (a throttle of their own, keyed by the reason's head: at
        most 20 lines per 5 s), and a peer repeating one is counted, not logged each time.
        Also a set_labels request's unexpected error, with its traceback."""
        suppressed = self._failure_throttle(line[:200])
        if suppressed is not None:
            more = f" ({suppressed} more since the last such line)" if suppressed else ""
            self.get_logger().error(line + more + self._failure_throttle.dropped_note("failure lines"))

    def _request_line(self, kind: str, line: str, level: str = "info", extra: list[str] = ()) -> None:
        """A log line that a peer's request causes: one per kind every 5 s (the node's
        Throttle), with the count held back. Requests were the one path peers could still
        fill the log by (probe round 9: 640 KB in 7 s of parameter sets)."""
        suppressed = self._throttle(("request", kind))
        if suppressed is None:
            return
        more = f" ({suppressed} more since the last such line)" if suppressed else ""
        more += self._throttle.dropped_note("request lines")
        # One call site per severity: rclpy refuses a call site whose severity changes.
        if level == "warning":
            self.get_logger().warning(line + more)
        else:
            self.get_logger().info(line + more)
        for x in extra:
            self.get_logger().warning(x)

    # -- labels -----------------------------------------------------------------------------
    def _current_names(self) -> tuple[str, ...]:
        if self._label_set is not None:
            return tuple(self._label_set.names)
        return tuple(self._param("labels"))

    def _set_labels(self, labels: Any, from_parameter: bool, cameras=None) -> tuple[str, ...]:
        """The one path for a label change (service and parameter). Raises LabelSetError.
        ``cameras``: the value a parameter request sets along with the labels, which the
        check of a set stored while unconfigured uses (the parameter is not set yet)."""
        with self._labels_lock:
            if from_parameter and self._syncing_labels:
                return self._current_names()  # our own write-back from the service
            # Taken before any return: a prepared set left behind (two identical changes at
            # once) held a model that cleanup had released (probe round 14).
            prepared, self._prepared = self._prepared, None
            return self._swap_labels(labels, from_parameter, prepared, cameras)

    def _swap_labels(self, labels: Any, from_parameter: bool, prepared, cameras=None) -> tuple[str, ...]:
        """_set_labels under the labels lock: validate, then swap in the prepared set (or
        store it, unconfigured)."""
        if isinstance(labels, (list, tuple)):
            labels = list(labels)
        names = validate_labels(labels)
        if self._segmenter is None:
            # Unconfigured: validated now, encoded at configure (from the parameter). The
            # remaps are fixed at start-up: a mask topic they put on an input is refused now.
            self._check_stored_topics(names, cameras)
            if self._stored_labels is None:
                self._replaced_labels = self._current_names()
            self._stored_labels, self._stored_refusal = names, None
            if not from_parameter:
                self._write_back(names)
            return names
        if names == tuple(self._label_set.names):
            self._stored_refusal = None   # the operator has chosen again, if the same set
            return names
        if (prepared is not None and prepared[0] is self._segmenter
                and tuple(prepared[1].names) == names):
            new, seq = prepared[1], prepared[3]  # encoded on the label worker
            if seq < self._swapped_seq:
                raise LabelSetError("superseded: a label change sent after this one is in "
                                    "force already (class_map shows it)")
        else:  # a set from inside the process (tests, an embedding application): now
            new, seq = self._segmenter.prepare_labels(names), next(self._label_arrivals)
            self._check_class_topics(new.names)   # a prepared set was checked as it was made
        tokens = topic_tokens(new.names)
        for cam in self._cameras:  # the slow DDS part, before the frame lock
            self._create_class_pubs(cam, tokens)
        stale = []
        with self._gate.swap():
            self._label_set = new
            self._swapped_seq = seq
            for cam in self._cameras:
                stale += self._reconcile_class_pubs(cam, new, destroy=False)
            self._announce_labels()
        if prepared is not None:
            self._end_frame_hold(prepared[2])   # frames go on while the rest is done
        self._retire(stale)
        self._stored_refusal = None   # superseded: the operator has chosen again
        if not from_parameter:
            self._write_back(new.names)
        more = f", ... {len(new.names)} in all" if len(new.names) > 16 else ""
        self._request_line("labels", f"labels ({len(new.names)}): {', '.join(new.names[:16])}{more}"
                           f"{_route_note(new)}", extra=self._grounding_warnings(new))
        return tuple(new.names)

    def _announce_labels(self, deferred: bool = False) -> None:
        """label_info and ~/label_set for the set in force, on every camera, stamped after
        its last mask (a frame under the set announces it again with its own header).

        Bounded: a peer changing cached labels as fast as it can got 72 changes a second
        answered, each announced on every camera (up to 16 x 2 messages of 256 entries), so
        the node published without limit. At most one announcement per ANNOUNCE_PERIOD_S
        now; a change inside that window is announced when it ends, unless a frame or a
        newer change did it meanwhile. Every set that masks are made with is still
        announced by its first frame; only announcements of sets no frame ever used merge."""
        timer = self._announce_timer
        if deferred and timer is not None:
            timer.cancel()
        if self._label_set is None or not self._cameras:
            return
        if self._announce_gate("announce") is None:
            if timer is not None and timer.is_canceled():
                timer.reset()   # one timer per configure, armed and disarmed: rclpy's callback
            return              # groups keep an entry for every timer ever created
        now = clock_stamp(self.get_clock())
        for cam in self._cameras:
            if deferred and cam.info_set is self._label_set:
                continue   # a frame under this set announced it already
            self._publish_label_info(cam, self._label_set, Header(stamp=after_last_mask(cam, now)))

    def _deferred_announce(self) -> None:
        with self._labels_lock:
            # Not waiting for a frame in progress on the executor (up to seconds for large
            # frames, probe round 17): the timer stays armed and fires again.
            if not self._gate.try_swap():
                return
            try:
                self._announce_labels(deferred=True)
            finally:
                self._gate.end_swap()

    def _make_announce_timer(self) -> None:
        self._announce_timer = self.create_timer(ANNOUNCE_PERIOD_S, self._deferred_announce,
                                                 clock=STEADY_CLOCK)
        self._announce_timer.cancel()

    def _destroy_announce_timer(self) -> None:
        if self._announce_timer is not None:
            self.destroy_timer(self._announce_timer)
            self._announce_timer = None

    @staticmethod
    def _grounding_warnings(label_set, limit: int = 16) -> list[str]:
        lines = [w for w in (g.warning() for g in getattr(label_set, "grounding", ())) if w]
        if len(lines) > limit:  # a 255-label set must not write 255 log lines
            lines = lines[:limit] + [f"... and {len(lines) - limit} more weakly grounded labels"]
        return lines

    def _write_back(self, names: tuple[str, ...]) -> None:
        # Keeps `ros2 param get labels` truthful after a service change.
        self._syncing_labels = True
        try:
            self.set_parameters([Parameter("labels", Parameter.Type.STRING_ARRAY, list(names))])
        finally:
            self._syncing_labels = False

    async def _prepare_labels_off_executor(self, labels: Any) -> list | None:
        """Validate ``labels`` here and encode them on the label worker, awaiting the result
        without holding the executor; the synchronous _set_labels that follows (on the
        executor thread, before anything else runs) finds them in _prepared and only swaps.
        Returns the reservation of their class topics, for release_class_tokens once the
        swap is done. Raises LabelSetError (bad set, worker busy, node reconfigured)."""
        seq = next(self._label_arrivals)
        names = validate_labels(list(labels) if isinstance(labels, (list, tuple)) else labels)
        segmenter = self._segmenter
        if segmenter is None or (self._label_set is not None and names == tuple(self._label_set.names)):
            # Nothing to prepare, but still the latest change sent: changes sent before it
            # and still being prepared must not be swapped in over it (the last sent wins).
            self._swapped_seq = max(self._swapped_seq, seq)
            return None
        if self._changes_in_flight >= MAX_LABEL_CHANGES_IN_FLIGHT:
            raise LabelSetError(f"busy: {self._changes_in_flight} label changes are being prepared; "
                                "send this one again when one of them is answered")
        self._changes_in_flight += 1
        try:
            return await self._prepare_counted(segmenter, names, seq)
        finally:
            self._changes_in_flight -= 1

    async def _prepare_counted(self, segmenter, names: tuple[str, ...], seq: int) -> list:
        try:
            future = self._label_worker.submit(lambda: segmenter.prepare_labels(names),
                                               executor=self.executor)
        except LabelWorkerBusy as e:
            raise LabelSetError(str(e)) from None
        new = await future
        # Their class-mask publishers too, a chunk per executor turn: 16 cameras x 256 new
        # labels are 4,096 DDS entities, 3.3 s made in one go, during which no frame was
        # taken (probe round 5). The swap then finds them made. Reserved meanwhile: a small
        # change swapped in between chunks retired every publisher outside its own set,
        # these too, and this change's swap then made all 4,096 again in one go (8 s
        # without a mask; probe round 9).
        if self._segmenter is not segmenter:
            raise LabelSetError("the node was reconfigured while the labels were encoded; send them again")
        self._check_class_topics(new.names)
        tokens = topic_tokens(new.names)
        reservation = self._reserve_class_tokens(tokens)
        try:
            chunks = [(cam, missing[i:i + PUBLISHERS_PER_TURN]) for cam in list(self._cameras)
                      for missing in [[t for t in tokens if t not in cam.class_pubs]]
                      for i in range(0, len(missing), PUBLISHERS_PER_TURN)]
            for n, (cam, chunk) in enumerate(chunks):
                if self._segmenter is not segmenter:
                    break
                self._create_class_pubs(cam, chunk)
                if n + 1 < len(chunks):   # one camera's usual change is one chunk: no wait added
                    await self._next_turn()
            if self._segmenter is not segmenter:
                raise LabelSetError("the node was reconfigured while the labels were encoded; send them again")
            # The swap that follows (synchronous, on the executor) takes the frame lock:
            # wait here, not there, for the frame in progress to end; the worker starts no
            # other until the swap is done (release_class_tokens ends the hold).
            self._gate.hold()
            reservation.holds_frames = True
            await self._frame_gap(reservation)
            if self._segmenter is not segmenter:
                raise LabelSetError("the node was reconfigured while the labels were encoded; send them again")
        except BaseException:
            self.release_class_tokens(reservation)
            raise
        self._prepared = (segmenter, new, reservation, seq)
        return reservation

    async def _frame_gap(self, reservation: "_Reservation") -> None:
        """Return when no frame holds the frame lock, giving the executor to everything
        else meanwhile (the worker calls back when its frame ends)."""
        while True:
            future, executor = Future(executor=self.executor), self.executor

            def done(future=future) -> None:
                if not future.done():
                    future.set_result(None)
                wake_awaiting(executor)

            if self._gate.grant_or_notify(done):
                reservation.gap_granted = True
                return
            await future

    def _reserve_class_tokens(self, tokens: list[str]) -> "_Reservation":
        reservation = _Reservation((cam, list(tokens)) for cam in self._cameras)
        for cam, held in reservation:
            cam.reserved.update(held)
        return reservation

    def _end_frame_hold(self, reservation) -> None:
        """Let the frame worker go on, if this change holds it (once; after the swap, or
        when the change failed)."""
        if getattr(reservation, "holds_frames", False):
            reservation.holds_frames = False
            self._gate.release_hold(granted=reservation.gap_granted)
            reservation.gap_granted = False

    def release_class_tokens(self, reservation) -> None:
        """End a preparation's hold on its tokens (after its swap, or when it failed); the
        publishers it made that no set uses are retired; a hold on the frame worker ends."""
        self._end_frame_hold(reservation)
        stale = []
        for cam, held in reservation or ():
            cam.reserved.subtract(held)
            for t in set(held):
                if cam.reserved[t] <= 0:
                    del cam.reserved[t]
                    if t not in cam.class_order and t in cam.class_pubs:
                        stale.append(cam.class_pubs.pop(t))
        self._retire(stale)

    async def _next_turn(self) -> None:
        """Give the executor a turn (frames, other requests) before going on."""
        # Done a few ms later, not at once: a task that is ready again at once is resumed
        # before the executor waits for frames (measured: no frame taken in 4 s of chunks).
        future, executor = Future(executor=self.executor), self.executor

        def done() -> None:
            future.set_result(None)
            wake_awaiting(executor)

        threading.Timer(0.005, done).start()
        await future

    def _retire(self, publishers: list) -> None:
        """Destroy these publishers, at most PUBLISHERS_PER_TURN now; the rest follow in
        _drain_retiring (after a label change) or one chunk per ~/status tick."""
        self._retiring.extend(publishers)
        self._destroy_retiring(PUBLISHERS_PER_TURN)

    def _destroy_retiring(self, count: int) -> None:
        chunk, self._retiring = self._retiring[:count], self._retiring[count:]
        for pub in chunk:
            self.destroy_lifecycle_publisher(pub)

    async def _drain_retiring(self) -> None:
        while self._retiring:
            await self._next_turn()
            self._destroy_retiring(PUBLISHERS_PER_TURN)

    async def _on_set_labels(self, req: SetLabels.Request, resp: SetLabels.Response) -> SetLabels.Response:
        try:
            if self.lifecycle_state == "finalized":
                raise LabelSetError("the node is shut down (finalized); nothing will use a label set")
            reservation = await self._prepare_labels_off_executor(list(req.labels))
            try:
                names = self._set_labels(list(req.labels), from_parameter=False)
            finally:
                self.release_class_tokens(reservation)
            await self._drain_retiring()
            resp.success = True
            if self._segmenter is None:
                resp.message = (f"{len(names)} labels stored; the node is unconfigured, they "
                                "take effect at the next configure")
            else:
                resp.message = f"{len(names)} labels in force" + _route_note(self._label_set)
        except LabelSetError as e:
            resp.success, resp.message = False, f"rejected, old set kept: {e}"
        except Exception as e:
            resp.success, resp.message = False, f"label encoding failed, old set kept: {shown(str(e), 300)}"
            # Through the failure throttle: 30 requests that failed so wrote 52 KB of
            # tracebacks in 0.2 s (review of audit round 19).
            self._failure_line(f"set_labels: {shown(str(e), 300)}\n{traceback.format_exc()[-2000:]}")
        if not resp.success:
            # At most 8 labels of SHOWN_CHARS each: a request of 8 labels of 1 MB once wrote 8 MB.
            labels = [shown(x) for x in req.labels[:8]]
            more = f" ... {len(req.labels)} in all" if len(req.labels) > 8 else ""
            self._request_line("set_labels refused", f"set_labels [{', '.join(labels)}{more}]: "
                               f"{shown(resp.message, 400)}", level="warning")
        resp.class_map, resp.labels, resp.warnings = self._set_labels_reply_parts()
        return resp

    def _set_labels_reply_parts(self) -> tuple[list, list, list]:
        """The set in force as a set_labels reply carries it (class map, label entries,
        grounding warnings), built once per set: with 256 labels each reply took 256 topic
        resolutions, and a flood of refused requests (8 bytes each, 70 KB replies) cut masks
        from 7 to 2.5 a second (probe round 16). The lists are shared by every reply until
        the set changes: read them, never change them."""
        # Unconfigured, the set is only stored: no encoder has read it yet, so no grounding.
        label_set = self._label_set if self._segmenter is not None else None
        cam = self._cameras[0] if self._cameras else None
        names = self._current_names()
        cached = self._reply_parts_cache
        if cached is not None and cached[0] is label_set and cached[1]() is cam and cached[2] == names:
            return cached[3]
        parts = ([SrvVisionClass(class_id=i, class_name=n) for i, n in enumerate(names)],
                 self._label_entries(cam, label_set),
                 self._grounding_warnings(label_set) if label_set is not None else [])
        # The camera weakly: a reconfigure retires it, and this must not keep it.
        self._reply_parts_cache = (label_set, weakref.ref(cam) if cam is not None else lambda: None,
                                   names, parts)
        return parts

    def _on_enable(self, req: SetBool.Request, resp: SetBool.Response) -> SetBool.Response:
        self._enabled = bool(req.data)
        if not self._enabled:
            self._slots.clear()
        resp.success = True
        resp.message = "processing enabled" if self._enabled else "processing disabled"
        self._request_line("enable", resp.message)
        return resp

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def lifecycle_state(self) -> str:
        """'unconfigured', 'inactive', 'active' or 'finalized'."""
        return self._state_machine.current_state[1]

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        t0 = time.perf_counter()
        with self._labels_lock:
            try:
                cfg = self._read_config()
                segmenter = self._build_segmenter(cfg)
                had_stored = stored = self._stored_labels
                # Why the stored set is not served: kept here, written to ~/status (and
                # logged) only once this configure has succeeded with the labels it replaced.
                refusal = None
                try:
                    label_set = segmenter.prepare_labels(cfg["labels"], allow_build=self._may_build())
                except LabelSetError as e:   # only a refusal: anything else fails the configure
                    if stored is None:
                        raise
                    refusal = printable(str(e), 400)
                    label_set = self._replaced_set(segmenter, stored, refusal)
                    stored = None
            except Exception as e:  # the transition fails; the node stays unconfigured
                # Errors the library raises on purpose carry their own explanation; anything
                # else is a bug whose traceback the report needs.
                expected = isinstance(e, (ValueError, KeyError, OSError, RuntimeError, ImportError))
                self._failure_line("configure failed: " + _capped(str(e)) +
                                   ("" if expected else "\n" + _capped(traceback.format_exc(), 3000)))
                if expected:
                    self.get_logger().debug(_capped(traceback.format_exc(), 3000))
                return FAILURE
            self._segmenter, self._label_set = segmenter, label_set
            self._configured_once = True
            self._dyn = self._read_dynamic()
            try:
                keys = [str(c) for c in cfg["cameras"]] or [""]
                for key in keys:
                    self._cameras.append(self._make_camera(key))
                self._refuse_own_outputs_as_input()
                self._check_class_topic_room()
                try:
                    self._check_class_topics(label_set.names)
                except LabelSetError as e:   # a camera named after the set was stored
                    if stored is None:
                        if refusal is not None:
                            # The labels fallen back to clash with such a camera: both
                            # refusals, not this one alone, which hid the stored set's.
                            raise self._both_refused(had_stored, refusal, e) from None
                        raise
                    refusal = printable(str(e), 400)
                    label_set = self._replaced_set(segmenter, stored, refusal, self._check_class_topics)
                    self._label_set = label_set
                for cam in self._cameras:
                    self._reconcile_class_pubs(cam, label_set)
                self._status_pubs = [
                    self.create_lifecycle_publisher(DiagnosticArray, t, OUTPUT_QOS,
                                                    event_callbacks=self._output_events(t))
                    for t in ("~/status", "/diagnostics")]
                self._make_announce_timer()
            except Exception as e:  # e.g. a camera namespace that is not a valid ROS name
                self._failure_line(f"configure failed: {_capped(str(e))}")
                self._release()
                return FAILURE
            if had_stored is not None:
                if tuple(label_set.names) != had_stored:
                    self._write_back(label_set.names)   # `labels` says what is in force
                # None when the stored set is served: a refusal by an earlier configure that
                # failed (the labels it fell back to refused too) is not left standing.
                self._stored_refusal = refusal
                if refusal is not None:
                    # The failure lines' throttle, keyed by the reason: one line per kind
                    # every 5 s hid a second refusal for another reason.
                    self._failure_line(
                        f"labels stored while unconfigured {shown(list(had_stored), 200)} refused "
                        f"at configure: {refusal}; configured with the labels they replaced, "
                        f"{shown(list(label_set.names), 200)}")
            self._stored_labels = None
        routing = ("; a label set with a word it has no class for runs on the rooms model"
                   if getattr(segmenter, "routes", False) else "")
        # Transition lines are request lines: a peer cycling ~/change_state wrote 480 KB of
        # "active" / "inactive" in 61 s (probe round 14); one per kind every 5 s, with the count.
        self._request_line(
            "lifecycle configure",
            f"configured in {time.perf_counter() - t0:.1f} s: model {segmenter.cfg.name} "
            f"({segmenter.checkpoint or 'untrained'}{routing}), backend {segmenter.backend_name}, "
            f"net {segmenter.net_size[0]}x{segmenter.net_size[1]}, {len(label_set.names)} labels, "
            f"cameras: {', '.join(c.image_topic for c in self._cameras)}")
        return super().on_configure(state)

    def _replaced_set(self, segmenter, stored, refusal: str, check=None):
        """The label set for a configure that cannot serve the set stored while unconfigured
        (``refusal`` says why): the labels that set replaced, prepared and passed to
        ``check``. Their own refusal fails the configure, naming both; any other error fails
        it as it would have anyway."""
        replaced = self._replaced_labels
        try:
            label_set = segmenter.prepare_labels(replaced, allow_build=self._may_build())
            if check is not None:
                check(label_set.names)
        except LabelSetError as e:
            raise self._both_refused(stored, refusal, e) from None
        return label_set

    def _both_refused(self, stored, refusal: str, error: Exception) -> LabelSetError:
        """The error of a configure where the stored set was refused (``refusal``) and the
        labels it replaced were refused too (``error``): it names both."""
        return LabelSetError(
            f"labels stored while unconfigured {shown(list(stored), 200)} refused: {refusal}; "
            f"the labels they replaced, {shown(list(self._replaced_labels), 200)}, refused too: "
            f"{printable(str(error), 400)}")

    def _may_load_torch(self) -> bool:
        """Only the first configure may bring torch into the process (the start-up choice of
        backend, or auto falling back to torch on CUDA): a later one, after a peer changed
        backend or device, kept it there for good (313 -> 1,148 MB; probe round 17)."""
        return "torch" in sys.modules or not self._configured_once

    def _may_build(self) -> bool:
        """Only the first configure (the start-up) exports, quantises or builds an engine on a
        cache miss: a later one did it on the executor for 19 s per new net size a peer set
        (audit round 18)."""
        return not self._configured_once

    def _build_segmenter(self, cfg: dict[str, Any]):
        from lgseg_ros.runtime.segmenter import Segmenter, default_checkpoint_path

        checkpoint = cfg["checkpoint"] or None
        # The shipped default goes to Segmenter as None: it then routes each label set to the
        # street or the rooms model (runtime/routing.py); a named checkpoint runs alone.
        shipped = checkpoint is None and not cfg["model_config"]
        if shipped:
            checkpoint = default_checkpoint_path()
            if checkpoint is None:
                raise ConfigError(
                    "no checkpoint: the default models/lgseg_lite_minilm.safetensors is in "
                    "neither the source tree nor the installed package; set `checkpoint` to a "
                    "trained model (`lgseg train` writes one), or `model_config` to run a "
                    "config with untrained weights")
        if checkpoint is not None:
            _check_checkpoint_path(checkpoint)
        cache_dir = cfg["engine_cache_dir"] or None
        if cache_dir is not None:
            from lgseg_ros.runtime.engine_cache import check_private_dir
            check_private_dir(cache_dir)
        try:
            return Segmenter(
                checkpoint=None if shipped else checkpoint, config=cfg["model_config"] or None,
                backend=cfg["backend"],
                device=cfg["device"], precision=cfg["precision"],
                net_size=(cfg["net_height"], cfg["net_width"]), keep_aspect=cfg["keep_aspect"],
                score_threshold=cfg["score_threshold"],
                single_label_margin=cfg["single_label_margin"],
                engine_cache_dir=cache_dir,
                # a rebuild is a build: at start-up only (a later configure that asked for
                # one failed every time)
                force_rebuild=cfg["force_rebuild"] and self._may_build(),
                grounding_warn_below=cfg["grounding_warn_below"], label_anchor=cfg["label_anchor"],
                torch_threads="auto", allow_torch=self._may_load_torch(),
                allow_build=self._may_build())
        except OSError as e:
            # "[Errno 28] No space left on device" alone named neither the parameter nor the
            # file; the cache is the one place configure writes.
            where = f" ({shown(e.filename, 200)})" if e.filename else ""
            what = f"engine_cache_dir={shown(cache_dir, 200)}" if cache_dir else "the export cache"
            raise ConfigError(f"{what}: {e.strerror or e}{where}") from None

    def _make_camera(self, key: str) -> _Camera:
        cam = self._camera_topics(key)
        o = cam.out
        for name, msg_type, qos in (("label_mask", Image, OUTPUT_QOS), ("confidence", Image, OUTPUT_QOS),
                                    ("color_mask", Image, OUTPUT_QOS), ("overlay", Image, OUTPUT_QOS),
                                    ("label_info", LabelInfo, LABEL_INFO_QOS),
                                    ("label_set", LabelSetMsg, LABEL_INFO_QOS),
                                    ("camera_info", CameraInfo, OUTPUT_QOS)):
            topic = f"{o}/{name}"
            cam.pubs[name] = self.create_lifecycle_publisher(msg_type, topic, qos,
                                                             event_callbacks=self._output_events(topic))
        return cam

    def _camera_topics(self, key: str) -> _Camera:
        """A camera's resolved input and output names, without its publishers."""
        base = f"{key.strip('/')}/" if key else ""
        if key.startswith("/"):
            base = "/" + base
        image_topic = self.resolve_topic_name(base + "image")
        # image_transport's conventions, so one remap of `image` moves all three: the
        # compressed stream is `<image>/compressed`, camera_info is the image's sibling.
        # An explicit remap of either still wins.
        compressed = self._remapped(base + "image/compressed") or image_topic + "/compressed"
        info = self._remapped(base + "camera_info") or image_topic.rsplit("/", 1)[0] + "/camera_info"
        return _Camera(key=key.strip("/"), image_topic=image_topic, compressed_topic=compressed,
                       info_topic=info, out=_camera_prefix(key))

    def _refuse_own_outputs_as_input(self) -> None:
        """An input remapped onto one of the node's own outputs (`-r image:=.../overlay`) fed
        every published frame back in: one frame became 59 overlays a second for ever, a
        whole core busy and nothing in the log (probe round 6). Keeps the node's fixed
        topics (inputs and outputs, as remapped) for _check_class_topics."""
        self._fixed_topics = self._fixed_topics_of(self._cameras)

    def _fixed_topics_of(self, cameras: list[_Camera]) -> dict[str, str]:
        names = ("label_mask", "confidence", "color_mask", "overlay", "label_info", "label_set",
                 "camera_info")
        outputs = {self.resolve_topic_name("~/status"): "the node's ~/status",
                   self.resolve_topic_name("~/transition_event"): "the node's ~/transition_event",
                   "/diagnostics": "/diagnostics", "/rosout": "/rosout",
                   "/parameter_events": "/parameter_events"}
        class_prefixes = []
        for cam in cameras:
            outputs.update((self.resolve_topic_name(f"{cam.out}/{n}"), f"the output {n}")
                           for n in names)
            class_prefixes.append(self.resolve_topic_name(f"{cam.out}/class") + "/")
        fixed = dict(outputs)
        for cam in cameras:
            for what, topic in (("image", cam.image_topic), ("image/compressed", cam.compressed_topic),
                                ("camera_info", cam.info_topic)):
                if topic in outputs or topic.startswith(tuple(class_prefixes)):
                    raise ConfigError(f"input `{what}` resolves to {shown(topic, 120)}, one of this "
                                      "node's own outputs: every published frame would come back "
                                      "as input; remap it to the camera's topic")
                fixed[topic] = f"the input {what}"
        return fixed

    def _check_stored_topics(self, names, cameras=None) -> None:
        """_check_class_topics while unconfigured, for the cameras set now (``cameras``: those
        of the parameter request that carries the labels too, which are not set yet):
        configure checks again, for the cameras it finds then. Only a clash is a refusal;
        cameras that configure refuses by themselves (an invalid name, too little room for
        class-mask topics) are left to it, which names them."""
        keys = self._param("cameras") if cameras is None else cameras
        try:
            cams = [self._camera_topics(str(key)) for key in keys or [""]]
            fixed = self._fixed_topics_of(cams)
            self._check_class_topic_room(cams)
        except Exception:   # a camera configure refuses by itself, naming it
            return
        try:
            self._check_class_topics(names, cams, fixed)
        except LabelSetError:
            raise
        except Exception:   # not a clash (rcl refusing a name, say): configure checks again
            return

    def _check_class_topics(self, names, cameras=None, fixed=None) -> None:
        """Raise LabelSetError where a label's class-mask topic, as remapped, is one of the
        node's inputs or outputs or another label's: `-r ~/class/road/mask:=<the camera's
        image>` took every road mask back in as a frame, for ever (267 masks from one frame in
        10 s), and a remap onto label_mask or another label's topic published wrong masks
        there (audit round 19). The prefix check at configure cannot see a per-topic remap,
        and a peer's set_labels can bring in the remapped label at any time."""
        seen: dict[str, str] = {}
        tokens = topic_tokens(names)
        fixed = self._fixed_topics if fixed is None else fixed
        for cam in self._cameras if cameras is None else cameras:
            for name, token in zip(names, tokens):
                # Remaps applied; before any publisher is made, since rcl refuses one on a
                # topic of another type (label_info, ~/status) with a bare type error.
                topic = self.resolve_topic_name(f"{cam.out}/class/{token}/mask")
                clash = fixed.get(topic) or seen.get(topic)
                if clash:
                    raise LabelSetError(
                        f"label {shown(name)}: its mask topic resolves to {shown(topic, 120)}, "
                        f"which is {clash}; remove the remap that puts it there or use "
                        "another word")
                seen[topic] = f"the mask topic of label {shown(name)}"

    def _check_class_topic_room(self, cameras=None) -> None:
        """Every label must be able to get its class-mask topic: a 200-character camera name
        (or a long node namespace) with a 30-character label made a topic over ROS's limit,
        and the label change failed as "label encoding failed" with a traceback (probe
        round 7). Refused here, naming the camera, instead."""
        for cam in self._cameras if cameras is None else cameras:
            prefix = self.resolve_topic_name(f"{cam.out}/class")   # rcl refuses the full one
            longest = len(prefix) + len(f"/{'x' * MAX_TOKEN_CHARS}/mask")
            if longest > MAX_TOPIC_CHARS:
                which = f"camera {shown(cam.key, 60)}" if cam.key else "the node's namespace"
                raise ConfigError(
                    f"cameras: {which} leaves too little room for class-mask topics: "
                    f"{shown(prefix, 80)}/<label>/mask can reach {longest} characters, over "
                    f"the {MAX_TOPIC_CHARS} ROS allows; use a camera name or namespace "
                    f"{longest - MAX_TOPIC_CHARS} characters shorter")

    def _remapped(self, name: str) -> str | None:
        resolved = self.resolve_topic_name(name)
        return resolved if resolved != self.resolve_topic_name(name, only_expand=True) else None

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        # Under the labels lock: a label change cannot create a class publisher between
        # enabling the publishers and setting _active (it would stay disabled).
        with self._labels_lock:
            ret = super().on_activate(state)  # enables the lifecycle publishers
            if ret != SUCCESS:
                return ret
            self._active = True
            try:
                self._subscribe()
            except Exception as e:
                self._failure_line(f"activate failed: {_capped(str(e))}")
                self._active = False
                self._unsubscribe()
                super().on_deactivate(state)
                return FAILURE
            with self._gate.swap():
                for cam in self._cameras:
                    header = cam.info_header if cam.info_set is self._label_set else None
                    self._publish_label_info(cam, self._label_set, header or Header(
                        stamp=after_last_mask(cam, clock_stamp(self.get_clock()))))
            self._stop.clear()
            self._slots.reopen()
            self._worker = threading.Thread(target=self._work, name="lgseg-worker", daemon=True)
            self._worker.start()
            self._activated_at = time.monotonic()
        # On the steady clock: with use_sim_time every /clock message a period ahead fired a
        # node-clock timer (1,921 such messages made 1,431 ~/status and /diagnostics each).
        self._status_timer = self.create_timer(float(self._param("status_period")), self._publish_status,
                                               callback_group=self._timer_group, clock=STEADY_CLOCK)
        self._request_line("lifecycle activate", "active")
        return SUCCESS

    def _subscribe(self) -> None:
        reliability = {"reliable": ReliabilityPolicy.RELIABLE,
                       "best_available": ReliabilityPolicy.BEST_AVAILABLE}.get(
                           self._param("qos_reliability"), ReliabilityPolicy.BEST_EFFORT)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(self._param("qos_depth")),
                         reliability=reliability, durability=DurabilityPolicy.VOLATILE)
        # Kept for _renew_input: a renewal must not pick up a use_compressed set since then.
        self._input_qos, self._input_compressed = qos, bool(self._param("use_compressed"))
        for cam in self._cameras:
            cam.subs.append(self._image_subscription(cam))
            cam.subs.append(self._info_subscription(cam))

    def _image_subscription(self, cam: _Camera):
        # raw=True: the serialized sample, checked by wire.read_frame before any conversion
        # (rclpy's own conversion held four copies of a 200 MB data field; issue 20, item 9).
        compressed = self._input_compressed
        topic = cam.compressed_topic if compressed else cam.image_topic
        events = SubscriptionEventCallbacks(
            incompatible_qos=lambda info, t=topic: self._on_incompatible_qos(t, info))
        return self.create_subscription(
            CompressedImage if compressed else Image, topic,
            lambda raw, c=cam, z=compressed: self._on_image(c, z, raw), self._input_qos,
            callback_group=self._input_group, event_callbacks=events, raw=True)

    def _info_subscription(self, cam: _Camera):
        # raw=True: passed through as the bytes received, after a size check, never converted.
        # The image's throttled QoS warning: rclpy's default logged one line per publisher.
        events = SubscriptionEventCallbacks(
            incompatible_qos=lambda info, t=cam.info_topic: self._on_incompatible_qos(t, info))
        return self.create_subscription(CameraInfo, cam.info_topic, lambda raw, c=cam: self._on_info(c, raw),
                                        self._input_qos, callback_group=self._input_group,
                                        event_callbacks=events, raw=True)

    def _on_info(self, cam: _Camera, raw: bytes) -> None:
        try:
            check_camera_info(raw)
        except ImageConversionError as e:
            cam.stats.count("camera_info_rejected")
            self._log_throttled(cam, "skipped camera_info", e)
            if len(raw) > RENEW_INPUT_ABOVE_BYTES:
                self._renew_input(cam, 1)
            return
        cam.pubs["camera_info"].publish(raw)

    def _renew_input(self, cam: _Camera, index: int = 0) -> None:
        """A new subscription (0: image, 1: camera_info) in place of the old one: Fast DDS
        gives back the receive buffer an oversized sample left in the old reader's payload
        pool. Throttled per subscription."""
        now = time.monotonic()
        if now - cam.renewed_at.get(index, -1e9) < 5.0 or len(cam.subs) <= index:
            return
        cam.renewed_at[index] = now
        self.destroy_subscription(cam.subs[index])
        cam.subs[index] = (self._image_subscription, self._info_subscription)[index](cam)

    def _on_incompatible_qos(self, topic: str, info) -> None:
        # The most common "no output" report of camera nodes: say what to change. Throttled
        # per topic: 200 best-effort publishers coming and going wrote 200 lines (57 KB).
        self._warn_throttled(
            ("incompatible_qos", topic),
            f"a publisher on {topic} has QoS incompatible with this node's subscription "
            f"(policy {info.last_policy_kind}); with qos_reliability=reliable a best-effort "
            "camera cannot connect: set qos_reliability to best_effort")

    def _unsubscribe(self) -> None:
        for cam in self._cameras:
            for sub in cam.subs:
                self.destroy_subscription(sub)
            cam.subs.clear()

    def _stop_worker(self) -> None:
        self._stop.set()
        self._gate.wake_worker()   # one waiting before a frame for a swap's hold
        self._slots.close()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join()
        self._worker = None
        self._gate.wake_waiters()

    def _go_inactive(self) -> None:
        self._active = False
        if self._status_timer is not None:
            self.destroy_timer(self._status_timer)
            self._status_timer = None
        self._unsubscribe()
        self._stop_worker()

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._labels_lock:
            self._go_inactive()
            self._request_line("lifecycle deactivate", "inactive")
            return super().on_deactivate(state)

    def _release(self) -> None:
        with self._labels_lock:
            self._destroy_announce_timer()
            for cam in self._cameras:
                for pub in [*cam.pubs.values(), *cam.class_pubs.values()]:
                    self.destroy_lifecycle_publisher(pub)
            self._cameras = []
            self._reply_parts_cache = None   # its label set and entries belong to the model gone
            self._destroy_retiring(len(self._retiring))
            for pub in self._status_pubs:
                self.destroy_lifecycle_publisher(pub)
            self._status_pubs = []
            self._segmenter = None
            self._label_set = None
            self._prepared = None   # it holds a segmenter too
            self._stamps.clear()    # keyed by camera: a reconfigure may drop cameras
            # A fallback's reason belongs to the configure that made it: kept past cleanup,
            # a later configure with nothing stored showed it in ~/status again. (Storing a
            # set clears it too, so none is pending with one stored.)
            self._stored_refusal = None
        gc.collect()
        trim_heap()   # the released model's heap back to the system, not kept for the next
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()  # give the GPU back to other processes

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._request_line("lifecycle cleanup", "cleaned up: model released")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._go_inactive()
        self._release()
        self.get_logger().info("shut down")
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._go_inactive()
        self._release()
        return SUCCESS

    def destroy_node(self) -> None:
        self._go_inactive()
        # At most 1 s for an encoding in progress (256 long words take seconds): a stop must
        # end the process well within `ros2 launch`'s 5 s; node_main then exits without
        # interpreter teardown if the worker is still inside the encoder.
        self._label_worker.close(timeout_s=1.0)
        super().destroy_node()

    # -- frame path -------------------------------------------------------------------------
    def _on_image(self, cam: _Camera, compressed: bool, raw: bytes) -> None:
        cam.stats.count("frames_in")
        cam.last_frame_at = time.monotonic()
        if not self._enabled or not self._active:
            if len(raw) > RENEW_INPUT_ABOVE_BYTES:
                # Not served, but a sample the node would refuse still has its receive
                # buffer freed: while disabled, a 200 MB one kept Fast DDS's pool at that
                # size (probe round 14). A large frame it would serve keeps it, as when enabled.
                try:
                    read_frame(raw, compressed, int(self._dyn["max_image_pixels"]))
                except ImageConversionError:
                    self._renew_input(cam)
            return
        try:  # size and header checks first: a refused frame is not even held in the slot
            msg = read_frame(raw, compressed, int(self._dyn["max_image_pixels"]))
            check_frame(msg)
        except ImageConversionError as e:
            cam.stats.count("frames_rejected")
            self._log_throttled(cam, "skipped frame", e)
            if len(raw) > RENEW_INPUT_ABOVE_BYTES:
                self._renew_input(cam)
            return
        if self._slots.put(Pending(cam, msg, time.perf_counter(), compressed)):
            cam.stats.count("frames_dropped")

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._serve_next()
                except Exception:  # noqa: BLE001 - the worker must outlive its own error handling
                    # Reached only if a handler in _serve_next raised (probe round 14: a logging
                    # call that raised ended this thread, and masks stopped for good while the
                    # node looked healthy). Counted; nothing logged, since logging is what failed.
                    self._worker_faults += 1
        finally:
            self._gate.wake_waiters()   # a swap awaiting a gap must not wait for a frame never made

    def _serve_next(self) -> None:
        item = self._slots.take(timeout=0.5)
        if item is None or not self._enabled:
            return
        cam: _Camera = item.key
        try:
            self._process(cam, item)
        except ImageConversionError as e:
            cam.stats.count("frames_rejected")
            self._log_throttled(cam, "skipped frame", e)
        except Exception as e:  # the node keeps serving; the reason goes to the log
            cam.stats.count("frames_failed")
            self._log_throttled(cam, "frame failed", f"{e}\n{traceback.format_exc()}", level="error")

    def _log_throttled(self, cam: _Camera, what: str, err: Any, level: str = "warning") -> None:
        text = str(err)
        if len(text) > 3000:  # a traceback's head and tail say enough
            text = f"{text[:1000]}\n... ({len(text)} characters) ...\n{text[-2000:]}"
        gate = cam.error_gate if level == "error" else cam.log_gate
        suppressed = gate((what, re.sub(r"\d+", "N", text.split("\n")[0][:160])))
        if suppressed is not None:
            more = f" ({suppressed} more like it since the last report)" if suppressed else ""
            more += gate.dropped_note("such lines of this camera")
            line = f"{cam.image_topic}: {what}: {text}{more}"
            # One call site per severity: rclpy raises when a call site's severity changes,
            # and a warning then an error through one call ended the frame worker (round 14).
            if level == "error":
                self.get_logger().error(line)
            else:
                self.get_logger().warning(line)

    def _process(self, cam: _Camera, item: Pending) -> None:
        t0 = time.perf_counter()
        max_pixels = int(self._dyn["max_image_pixels"])
        msg = item.msg
        rgb = (compressed_to_rgb(msg, max_pixels) if item.compressed
               else image_to_rgb(msg, max_pixels))
        t1 = time.perf_counter()
        stamp_warning = self._stamps.setdefault(cam.key, StampWatch()).check(msg.header)
        if stamp_warning:
            self._log_throttled(cam, "stamp", stamp_warning)
        self._gate.enter_frame(self._stop)   # after a swap that awaits this gap
        try:
            if self._stop.is_set() or self._segmenter is None:
                return
            label_set = self._label_set  # read once: this frame's set, whatever happens next
            result = self._segmenter.segment(rgb, label_set)
            t2 = time.perf_counter()
            self._publish_outputs(cam, msg.header, rgb, result)
            t3 = time.perf_counter()
        finally:
            self._gate.leave_frame()
        timings = {"queue": t0 - item.received, "decode": t1 - t0, "publish": t3 - t2,
                   "total": t3 - item.received}
        timings.update(result.timings)
        cam.stats.add_frame(timings)

    # -- status -----------------------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, float | int]]:
        """Per camera (by input topic): counters and per-stage latency, as in ~/status."""
        return {cam.image_topic: cam.stats.snapshot() for cam in self._cameras}

    def _publish_status(self) -> None:
        self._destroy_retiring(PUBLISHERS_PER_TURN)   # what a label change left, if any
        seg = self._segmenter
        if seg is None:
            return
        arr = DiagnosticArray()
        arr.header.stamp = clock_stamp(self.get_clock())
        now = time.monotonic()
        for cam in self._cameras:
            snap = cam.stats.snapshot()
            st = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: {cam.name}",
                                  hardware_id=str(getattr(seg.backend, "device", seg.backend_name)))
            idle = now - max(cam.last_frame_at, self._activated_at)
            worker = self._worker
            if not self._enabled:
                st.level, st.message = DiagnosticStatus.OK, "disabled (~/enable)"
            elif self._active and (worker is None or not worker.is_alive()):
                # Never expected (_work outlives its handlers); said plainly if it happens,
                # where a stale rate would read as healthy.
                st.level, st.message = DiagnosticStatus.ERROR, "frame worker stopped: no masks"
            elif idle > NO_INPUT_WARN_S:
                st.level = DiagnosticStatus.WARN
                st.message = f"no image for {idle:.0f} s on {cam.image_topic}"
                if not cam.warned_no_input:
                    cam.warned_no_input = True
                    n = self.count_publishers(cam.compressed_topic if self._param("use_compressed")
                                              else cam.image_topic)
                    self.get_logger().warning(
                        f"{st.message} ({n} publishers): check the remapping of `image`, and "
                        "that qos_reliability matches the camera (best_effort accepts all). "
                        "With publishers but no frames: frames larger than Fast DDS's shared-"
                        "memory segment (512 KB by default; a 640x480 bgr8 frame is 900 KB) "
                        "fall back to fragmented UDP, where best effort drops them; start "
                        "the camera with FASTDDS_DEFAULT_PROFILES_FILE set to this package's "
                        "config/fastdds_large_frames.xml (see README, Troubleshooting)")
            else:
                cam.warned_no_input = False
                bad = snap["frames_rejected"] + snap["frames_failed"] - cam.bad_at_last_status
                st.level = DiagnosticStatus.WARN if bad else DiagnosticStatus.OK
                st.message = f"{snap['rate_hz']:.1f} Hz, {len(self._label_set.names)} labels"
                if bad:
                    st.message += f", {bad} frames skipped since the last status (reasons in the log)"
            cam.bad_at_last_status = snap["frames_rejected"] + snap["frames_failed"]
            values = {"input": cam.image_topic, "outputs": cam.out, "labels": len(self._label_set.names),
                      "label_generation": self._label_set.generation, "backend": seg.backend_name,
                      "model": getattr(self._label_set, "model", ""),
                      "enabled": self._enabled, "worker_faults": self._worker_faults, **snap}
            if self._stored_refusal is not None:
                # Until the next label change: the set a lifecycle manager stored is not served.
                values["stored_labels_refused"] = self._stored_refusal
                if st.level == DiagnosticStatus.OK:
                    st.level = DiagnosticStatus.WARN
                    st.message += "; the labels stored while unconfigured were refused at configure"
            st.values = [KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v))
                         for k, v in values.items()]
            arr.status.append(st)
        for pub in self._status_pubs:
            pub.publish(arr)



def _route_note(label_set) -> str:
    """Which shipped model runs the set and why, where the default routes (runtime/routing.py)."""
    route = getattr(label_set, "route", "")
    return f"; {route}" if route else ""


def main(argv: list[str] | None = None) -> int:
    """`ros2 run lgseg_ros lgseg_node` and `lgseg node`: see node_main.py (signals, exit codes)."""
    from lgseg_ros.ros.node_main import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
