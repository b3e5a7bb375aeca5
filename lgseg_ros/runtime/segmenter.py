"""`Segmenter`: the high-level API the node, the demo and evaluation use.

Two paths at two rates (DeOP's lesson): ``prepare_labels`` runs the text encoder once per
label change, off the frame thread, and returns an immutable ``LabelSet``; ``segment`` runs
the image network per frame with that set's cached embeddings. A label set is loaded into
the backend by ``segment`` itself, under the same lock as inference, so a change lands
between two frames and every result matches exactly one label set.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import sys
import threading
import time
import weakref
from typing import Sequence

import cv2
import numpy as np

from lgseg_ros.labels import MAX_LABELS, LabelSetError, shown, unlabeled_value, validate_labels
from lgseg_ros.procinfo import trim_heap
from lgseg_ros.resources import package_path

from . import preprocess as pp
from .backends import create_backend, text_dim_of
from .grounding import (DEFAULT_ANCHOR, DEFAULT_WARN_BELOW, GroundingReporter,
                        vocabulary_from_metadata)

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT_NAME = "lgseg_lite_minilm.safetensors"
# The logits come out at stride 8; sizes that are multiples of 8 keep every logit cell
# aligned with an 8x8 pixel block (the decoder copes with sizes that are not multiples of 32).
NET_STRIDE = 8
# The routed pair: an idle model gives back its arena (one extra run) only when its largest
# set was above this many labels (about 3 MB a label at 384x480), and only once it has been
# idle this long: released on every switch, sets that alternate between the models made
# each switch pay that run and the arena's regrowth (256 words switched at 10 Hz: masks 4.8
# -> 2.8 a second and 400 MB more at peak, audit round 15).
IDLE_RELEASE_ABOVE_K = 32
IDLE_RELEASE_AFTER_S = 10.0

# After a rooms-model load failure that may pass, the next attempt waits this long.
ROOMS_RETRY_S = 30


def _no_build_now(exc: BaseException) -> bool:
    """A failure because the caller allowed no build (artefacts.NO_BUILD_NOW), at any depth."""
    from .artefacts import NO_BUILD_NOW

    while exc is not None:
        if NO_BUILD_NOW in str(exc):
            return True
        exc = exc.__cause__
    return False


def _lasting_failure(exc: BaseException) -> bool:
    """A rooms model that will not load however often it is tried: its files missing, its
    artefacts not buildable here (no torch), its checkpoint unreadable. An export that
    failed (a full disk while it wrote) may pass, and so may a checkpoint that changed while
    it was read (CheckpointChanged: a deploy replacing it). Judged by the root cause: backend auto
    wraps what its last candidate raised."""
    from lgseg_ros.model.checkpoint import CheckpointError

    from .artefacts import ArtefactError, CheckpointChanged

    while exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, CheckpointChanged):
        # replaced while it was read (a deploy): the next read finds the new file whole
        return False
    if isinstance(exc, ArtefactError):
        return "needs torch" in str(exc) or "needs a trained" in str(exc)
    return isinstance(exc, (CheckpointError, ImportError, FileNotFoundError, ValueError))


_generations = itertools.count(1)
_generation_lock = threading.Lock()


def _next_generation() -> int:
    with _generation_lock:
        return next(_generations)


@dataclasses.dataclass(frozen=True, eq=False)
class LabelSet:
    """An encoded label set. Immutable; ``generation`` is unique per prepare_labels call."""

    names: tuple[str, ...]
    embeddings: np.ndarray          # [K, D] float32, read-only
    generation: int
    encoder: str = ""
    # per label, what the model's training makes of the word (runtime/grounding.py)
    grounding: tuple = ()
    # the checkpoint file that runs this set, and why (runtime/routing.py: the default
    # Segmenter runs each set on the street or the rooms model)
    model: str = ""
    route: str = ""
    # a weak reference to the Segmenter that prepared it: a set kept by a publisher must not
    # keep a released model (and its ONNX Runtime session) alive
    served_by: object = dataclasses.field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def unlabeled(self) -> int:
        return unlabeled_value(len(self.names))

    @property
    def id_dtype(self) -> type:
        return np.uint8 if self.unlabeled == 255 else np.uint16


@dataclasses.dataclass
class SegmentResult:
    ids: np.ndarray                 # HxW uint8 / uint16 at the input resolution
    confidence: np.ndarray          # HxW uint8, 0..255 = max softmax probability
    label_set: LabelSet
    timings: dict[str, float]       # stage -> seconds

    @property
    def unlabeled(self) -> int:
        return self.label_set.unlabeled


def default_checkpoint_path() -> str | None:
    """models/lgseg_lite_minilm.safetensors from the source tree, else from the installed
    package's share directory (ament_index), else None."""
    path = package_path(f"models/{DEFAULT_CHECKPOINT_NAME}")
    return str(path) if path is not None and path.is_file() else None


def _check_net_size(net_size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in net_size)
    except (TypeError, ValueError):
        raise ValueError(f"net_size must be (H, W), got {net_size!r}") from None
    if h <= 0 or w <= 0 or h % NET_STRIDE or w % NET_STRIDE:
        raise ValueError(f"net_size {h}x{w} must be positive multiples of {NET_STRIDE}")
    return h, w


def _set_torch_threads(n: int) -> None:
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


class Segmenter:
    def __init__(self, checkpoint: str | None = None, config: str | None = None,
                 backend: str = "auto", device: str = "auto", precision: str = "fp32",
                 net_size=(384, 480), keep_aspect: bool = True, score_threshold: float = 0.0,
                 engine_cache_dir: str | None = None, force_rebuild: bool = False,
                 text_encoder=None, torch_threads: int | str | None = None,
                 grounding_warn_below: float = DEFAULT_WARN_BELOW,
                 label_anchor: float = DEFAULT_ANCHOR, text_runtime: str = "auto",
                 calibration: str | None = None, route: bool | str = "auto",
                 single_label_margin: float = 0.0, **backend_opts) -> None:
        """checkpoint None and config None: the shipped models as the node runs them: the
        street model (default_checkpoint_path()), and for a label set with any word the
        street model has no class for, the rooms model beside it (runtime/routing.py; built on
        the first such set; ``route=False`` keeps the street model alone); config alone: that
        config with untrained weights.

        torch_threads: an int sets torch's (process-wide) intra-op pool; "auto" sets 1
        when torch is loaded and the frame path is not torch on CPU, so that label encoding
        does not fight the frame path's own thread pool for the cores; None leaves torch alone.

        text_runtime: "auto" runs MiniLM in ONNX Runtime (no torch) unless the frame path is
        the torch backend; "torch" or "onnxruntime" force one. precision: "fp32", "fp16",
        "int8" (ONNX Runtime on the CPU, runtime/quantize.py; ``calibration`` is the folder
        of CamVid *train* frames used when the int8 file must be built) or "auto".

        single_label_margin: for a label set of one name, a pixel goes to the name where its
        logit is within this much (logit units) of the "none" logit, instead of only where
        it is above it; 0 (the default) is plain argmax. The models under-claim a name asked
        alone (models/README.md, stage 22), and a margin of 0.75-1.0 won back 0.03-0.04 of the
        single-label ratio on a development split; larger sets are never changed.

        With ONNX Runtime (or TensorRT) and a checkpoint, nothing here imports torch: the
        config and vocabulary come from the checkpoint's header and the frame path from
        its verified ONNX artefact (runtime/artefacts.py), exported on first use only where
        torch is installed."""
        if torch_threads not in (None, "auto"):
            _set_torch_threads(int(torch_threads))
        self.net_size = _check_net_size(net_size)
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        self.keep_aspect = bool(keep_aspect)
        self.score_threshold = float(score_threshold)
        try:
            margin = float(single_label_margin)
        except (TypeError, ValueError):
            margin = float("nan")
        if not 0.0 <= margin <= MAX_SINGLE_LABEL_MARGIN:
            raise ValueError(f"single_label_margin must be in [0, {MAX_SINGLE_LABEL_MARGIN:g}], "
                             f"got {single_label_margin!r}")
        self.single_label_margin = margin
        # With two channels the confidence is the winner's softmax share, sigmoid of the
        # logit gap: "none" won by no more than the margin exactly where its share is at most
        # this (a tie goes to the name, as in lgseg eval's argmax).
        self._none_share_within_margin = 1.0 / (1.0 + math.exp(-margin))
        if not 0.0 <= float(label_anchor) <= 1.0:
            raise ValueError(f"label_anchor must be in [0, 1], got {label_anchor}")
        self.label_anchor = float(label_anchor)
        if text_runtime not in ("auto", "torch", "onnxruntime"):
            raise ValueError(f"text_runtime must be 'auto', 'torch' or 'onnxruntime', not {text_runtime!r}")
        from .artefacts import model_source

        shipped_default = not checkpoint and not config
        if shipped_default:
            checkpoint = default_checkpoint_path()
            if checkpoint is None:
                log.warning("no checkpoint given and the shipped %s is not installed",
                            DEFAULT_CHECKPOINT_NAME)
        self.source, self.untrained = model_source(checkpoint, config, calibration)
        if self.untrained:
            log.warning("!!! NO CHECKPOINT: model %r runs with its default initialisation; its "
                        "masks are meaningless until you pass a trained checkpoint !!!",
                        self.source.cfg.name)
        cfg = self.source.cfg
        meta = self.source.meta
        self.cfg = cfg
        self.checkpoint = str(checkpoint) if checkpoint else None
        self.text_dim = text_dim_of(cfg)
        # Only a trained checkpoint has artefacts; random weights come from torch anyway.
        net = self.source if not self.untrained else self.source.net
        self.backend = create_backend(backend, net, cfg, device=device, precision=precision,
                                      net_size=self.net_size, engine_cache_dir=engine_cache_dir,
                                      force_rebuild=force_rebuild, **backend_opts)
        if text_runtime == "auto":
            text_runtime = "torch" if self.backend.name == "torch" else "onnxruntime"
        self.text_encoder = self._make_text_encoder(text_encoder, cfg, text_runtime)
        vocab, distractors = vocabulary_from_metadata(meta)
        self.grounding = GroundingReporter(vocab, self.text_encoder, distractors,
                                           warn_below=grounding_warn_below)
        if not self.untrained:
            from .artefacts import preload_vocabulary

            log.info("grounding vocabulary: %s", preload_vocabulary(
                self.grounding, self.text_encoder.encoder, self.source.checkpoint_sha256))
        if torch_threads == "auto" and "torch" in sys.modules and not (
                self.backend.name == "torch" and str(getattr(self.backend, "device", "cpu")) == "cpu"):
            # Measured on a loaded 2-core CPU: MiniLM K=10 cold encode ~24 ms on 1 thread,
            # ~0.5 s stalls on 2 while ONNX Runtime runs a frame.
            _set_torch_threads(1)
        log.info("segmenter: model %s, backend %s on %s (%s), net size %dx%d, text encoder on %s",
                 cfg.name, self.backend.name, getattr(self.backend, "device", "?"),
                 getattr(self.backend, "precision", "?"), *self.net_size,
                 getattr(self.text_encoder.encoder, "runtime", "torch"))
        self._router = None
        self._rooms: Segmenter | None = None
        self._rooms_lock = threading.Lock()
        self._rooms_retry_at = 0.0   # after a failure that may pass (time.monotonic())
        self._rooms_sha: str | None = None   # the rooms file the router's vocabulary came from
        if shipped_default and route not in (False, "off") and self.checkpoint and not self.untrained:
            # Not allow_build: the rooms model loads on the first set that needs it, on the
            # label worker, off the executor; a caller on it says so per call (prepare_labels).
            self._setup_router(dict(
                backend=backend, device=device, precision=precision, net_size=net_size,
                keep_aspect=keep_aspect, score_threshold=score_threshold,
                single_label_margin=single_label_margin,
                engine_cache_dir=engine_cache_dir, force_rebuild=force_rebuild,
                grounding_warn_below=grounding_warn_below, label_anchor=label_anchor,
                text_runtime=text_runtime, calibration=calibration,
                **{k: v for k, v in backend_opts.items() if k != "allow_build"}))
        self._frame_lock = threading.Lock()
        self._loaded_generation: int | None = None
        # the last frame size's plan only: a dict keyed by size grew by one entry per new
        # size a peer sent (1xN frames, N = 1, 2, 3, ...), and a plan costs microseconds
        self._geometry: pp.Geometry | None = None
        self._buffer = np.zeros((1, 3, *self.net_size), np.float32)
        self._peak_k = 0  # largest K run since memory was last released
        self._last_run = 0.0  # time.monotonic() of this model's last frame

    @property
    def net(self):
        """The eager fp32 model (parity checks, FLOP counts, re-export); loads torch on first
        use when the backend runs from ONNX files."""
        return self.source.net

    def _make_text_encoder(self, text_encoder, cfg, runtime: str = "torch"):
        from lgseg_ros.text import CachedTextEncoder, build_text_encoder

        if text_encoder is None:
            text_encoder = cfg.text_encoder
        if isinstance(text_encoder, str):
            if runtime == "onnxruntime" and not text_encoder.startswith("minilm"):
                runtime = "torch"   # only MiniLM has an ONNX export (text/onnx_minilm.py)
            text_encoder = build_text_encoder(text_encoder, template=getattr(cfg, "prompt_template", None),
                                              runtime=runtime)
        if not isinstance(text_encoder, CachedTextEncoder):
            text_encoder = CachedTextEncoder(text_encoder)
        if self.text_dim is not None and text_encoder.dim != self.text_dim:
            raise ValueError(f"text encoder {text_encoder.name!r} makes {text_encoder.dim}-d "
                             f"embeddings; model {cfg.name!r} expects {self.text_dim}")
        # Same width is not the same embedding space: a model only understands the encoder
        # (and prompt template) it was trained with.
        want_template = getattr(cfg, "prompt_template", None)
        if text_encoder.name != cfg.text_encoder or text_encoder.template != want_template:
            log.warning("text encoder %r (template %r) differs from the model's %r (template %r); "
                        "labels may be misread", text_encoder.name, text_encoder.template,
                        cfg.text_encoder, want_template)
        return text_encoder

    @property
    def backend_name(self) -> str:
        return self.backend.name

    # -- the rooms model beside the street one (runtime/routing.py) ----------------------
    def _setup_router(self, rooms_kwargs: dict) -> None:
        from .artefacts import model_source
        from .routing import rooms_checkpoint_path

        rooms = rooms_checkpoint_path()
        if rooms is None:
            log.info("the rooms model is not installed: the street model answers every label set")
            return
        source, untrained = model_source(rooms)
        if untrained or not self._shares_text_encoder(source.cfg):
            log.warning("%s does not share the street model's text encoder: not routing", rooms)
            return
        self._route_by(source)
        self._rooms_args = dict(rooms_kwargs, checkpoint=rooms, route=False,
                                text_encoder=self.text_encoder)

    def _shares_text_encoder(self, cfg) -> bool:
        return text_dim_of(cfg) == self.text_dim and cfg.text_encoder == self.cfg.text_encoder

    def _route_by(self, rooms_source) -> None:
        from .artefacts import preload_vocabulary
        from .routing import ModelRouter

        router = ModelRouter.from_metadata(self.source.meta, rooms_source.meta, self.text_encoder,
                                           warn_below=self.grounding.warn_below)
        if not self.untrained:
            preload_vocabulary(router.reporter, self.text_encoder.encoder,
                               rooms_source.checkpoint_sha256)
        self._router = router
        self._rooms_sha = rooms_source.checkpoint_sha256

    @property
    def routes(self) -> bool:
        """True when label sets are routed between the street and the rooms model."""
        return self._router is not None

    def _rooms_segmenter(self, allow_build: bool = True) -> "Segmenter | None":
        # Built on the first set that needs it, on the label path (the node's label worker),
        # never on the frame path; the text encoder and its cache are shared. If it cannot
        # be built (its ONNX artefacts missing on a torch-free install, say), the street
        # model keeps answering every set rather than refusing room words.
        # allow_build=False (the node's reconfigure, on its executor): only files already
        # built are loaded; without them the street model answers this set, and the next set
        # that needs the rooms model (on the label worker) builds and loads it.
        with self._rooms_lock:
            if self._rooms is None and self._router is not None:
                if time.monotonic() < self._rooms_retry_at:
                    return None
                t0 = time.perf_counter()
                try:
                    self._rooms = Segmenter(**self._rooms_args,
                                            **({} if allow_build else {"allow_build": False}))
                except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors are plain Exceptions
                    if not allow_build and _no_build_now(exc):
                        log.warning("rooms model not loaded here: its files for %dx%d are not "
                                    "built, and a configure after the first builds none; the "
                                    "street model answers this set, and the next label set "
                                    "that needs the rooms model builds and loads it off the "
                                    "executor (set_labels the same words again)",
                                    *self.net_size)
                        return None
                    if _lasting_failure(exc):
                        log.warning("rooms model unavailable, the street model answers every "
                                    "label set: %s: %s", type(exc).__name__, str(exc)[:300])
                        self._router = None
                    else:
                        # A full disk, a memory spike, too many open files: try again later
                        # rather than serve room words "none" until the next configure.
                        self._rooms_retry_at = time.monotonic() + ROOMS_RETRY_S
                        log.warning("rooms model could not load (%s: %s); the street model "
                                    "answers this set, the rooms model is tried again in %d s",
                                    type(exc).__name__, str(exc)[:300], ROOMS_RETRY_S)
                    return None
                log.info("rooms model loaded for routed label sets in %.2f s",
                         time.perf_counter() - t0)
                if self._rooms.source.checkpoint_sha256 != self._rooms_sha:
                    # The file was replaced (a deploy) between the configure that read it for
                    # the router and this load, maybe hours later: sets would be routed by the
                    # old file's concepts and answered by the new one's (audit round 20).
                    log.warning("%s changed since the configure read it; label sets are now "
                                "routed by the file loaded", str(self._rooms_args["checkpoint"])[:300])
                    new = self._rooms.source
                    try:
                        if not self._shares_text_encoder(new.cfg):
                            raise ValueError("it does not share the street model's text encoder")
                        self._route_by(new)
                    except Exception as exc:  # noqa: BLE001 - no routes for a file they do not describe
                        log.warning("rooms model unavailable, the street model answers every "
                                    "label set: routes not rebuilt from the new rooms file "
                                    "(%s: %s)", type(exc).__name__, str(exc)[:300])
                        self._rooms = None
                        self._router = None
                        return None
            return self._rooms

    # -- label path ---------------------------------------------------------------------
    def prepare_labels(self, labels: Sequence[object], allow_build: bool = True) -> LabelSet:
        """Validate and encode; thread-safe, never touches the frame path. allow_build=False:
        a rooms model this set needs is loaded only from files already built."""
        # A backend with a bounded K (a TensorRT profile) refuses bigger sets here, on the
        # label path, where the caller can keep its old set, not on the next frame.
        limit = min(MAX_LABELS, getattr(self.backend, "max_labels", None) or MAX_LABELS)
        names = validate_labels(labels, max_labels=limit)
        num_classes = getattr(self.cfg, "num_classes", 0)
        if getattr(self.cfg, "head", None) == "closed" and len(names) != num_classes:
            raise LabelSetError(f"closed-set model {self.cfg.name!r} has {num_classes} fixed "
                                f"classes; got {len(names)} labels")
        emb = self.text_encoder.encode(list(names))
        if not isinstance(emb, np.ndarray):   # a torch encoder
            emb = emb.detach().cpu().numpy()
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        if getattr(self.cfg, "head", None) != "closed":   # a closed head reads no text
            _refuse_labels_the_encoder_cannot_tell_apart(names, emb)
        router = self._router   # once: a lasting failure on another thread may clear it
        if router is not None:
            route = router.route(names, emb)
            rooms = self._rooms_segmenter(allow_build) if route.rooms else None
            rebuilt = self._router
            if rooms is not None and rebuilt is not router and rebuilt is not None:
                # The load found the rooms file changed since configure and rebuilt the
                # routes from it: this set is routed again by the file it would run on.
                route = rebuilt.route(names, emb)
                rooms = rooms if route.rooms else None
            if rooms is not None:
                return rooms._encoded_label_set(names, emb, route.describe())
            return self._encoded_label_set(names, emb, route.describe() if not route.rooms else "")
        return self._encoded_label_set(names, emb)

    def _encoded_label_set(self, names: tuple[str, ...], emb: np.ndarray, route: str = "") -> LabelSet:
        grounding, emb = self.grounding.ground(names, emb, self.label_anchor)
        if getattr(self.cfg, "head", None) != "closed":
            # Grounding can make two labels one vector too: an alias ('sedan' is WordNet's
            # kind of car) or a full anchor reads a label as its trained name, and 'car'
            # beside 'sedan' left sedan's mask always empty (review of audit round 18).
            _refuse_labels_the_encoder_cannot_tell_apart(names, emb, grounding)
        emb = np.ascontiguousarray(emb)
        emb.setflags(write=False)
        return LabelSet(names=names, embeddings=emb, generation=_next_generation(),
                        encoder=self.text_encoder.name, grounding=grounding,
                        model=os.path.basename(self.checkpoint or self.cfg.name), route=route,
                        served_by=weakref.ref(self))

    # -- frame path ---------------------------------------------------------------------
    def segment(self, rgb: np.ndarray, label_set: LabelSet) -> SegmentResult:
        rgb = pp.validate_rgb(rgb)
        if not isinstance(label_set, LabelSet):
            raise ValueError(f"label_set must be a LabelSet from prepare_labels(), got "
                             f"{type(label_set).__name__}")
        rooms = self._rooms
        if rooms is not None and label_set.served_by is not None and label_set.served_by() is rooms:
            result = rooms.segment(rgb, label_set)
            self._release_idle()
            return result
        if rooms is not None:
            rooms._release_idle()
        with self._frame_lock:
            t0 = time.perf_counter()
            self._last_run = time.monotonic()
            release = False
            if label_set.generation != self._loaded_generation:
                self.backend.set_labels(label_set.embeddings)
                self._loaded_generation = label_set.generation
                # A smaller set than one run before: let the backend give back what the big
                # one needed (about 3 MB a label), or it stays until the process ends.
                release = len(label_set) < self._peak_k and hasattr(self.backend, "release_memory")
                if release:
                    self.backend.release_memory()
                self._peak_k = len(label_set) if release else max(self._peak_k, len(label_set))
            t1 = time.perf_counter()
            src = (rgb.shape[0], rgb.shape[1])
            geom = self._geometry
            if geom is None or (geom.src_h, geom.src_w) != src:
                geom = self._geometry = pp.plan(src, self.net_size, self.keep_aspect)
            image = pp.preprocess(rgb, geom, out=self._buffer)
            t2 = time.perf_counter()
            ids, conf = self.backend.infer(image)
            if release:
                trim_heap()
            t3 = time.perf_counter()
            out_ids, out_conf = self._postprocess(ids, conf, len(label_set), geom)
            t4 = time.perf_counter()
        return SegmentResult(ids=out_ids, confidence=out_conf, label_set=label_set,
                             timings={"set_labels": t1 - t0, "preprocess": t2 - t1,
                                      "model": t3 - t2, "postprocess": t4 - t3})

    def _release_idle(self) -> None:
        """The routed pair: the model the sets have moved away from gives back what its
        largest set needed. ONNX Runtime shrinks a session's arena only at the end of one of
        its runs, and the idle model had none, so a 250-word set on the street model kept
        about 780 MB while the rooms model served three words (probe round 14). One run
        with a single label does it, only above IDLE_RELEASE_ABOVE_K and after
        IDLE_RELEASE_AFTER_S without a frame of its own."""
        if self._peak_k <= IDLE_RELEASE_ABOVE_K or not hasattr(self.backend, "release_memory"):
            return
        if time.monotonic() - self._last_run < IDLE_RELEASE_AFTER_S:
            return
        with self._frame_lock:
            one = np.zeros((1, int(self.cfg.text_dim)), np.float32)
            one[0, 0] = 1.0
            self.backend.set_labels(one)
            self._loaded_generation = None     # its next frame loads its own set again
            self.backend.release_memory()
            self.backend.infer(self._buffer)
            self._peak_k = 1
        trim_heap()

    def _postprocess(self, ids: np.ndarray, conf: np.ndarray, k: int, geom: pp.Geometry):
        unlabeled = unlabeled_value(k)
        dtype = np.uint8 if unlabeled == 255 else np.uint16
        if k == 1 and self.single_label_margin > 0.0:
            close = (ids == 1) & (conf <= self._none_share_within_margin)
            ids = np.where(close, 0, ids)
            conf = np.where(close, 1.0 - conf, conf).astype(conf.dtype, copy=False)
        # Channel K is "none of these"; a low-confidence pixel is unlabeled too.
        reject = ids >= k
        if self.score_threshold > 0.0:
            reject |= conf < self.score_threshold
        out = ids.astype(dtype)
        out[reject] = unlabeled
        # Rounded and saturated to 0..255 in one native pass.
        conf8 = cv2.convertScaleAbs(conf, alpha=255.0)
        return pp.unletterbox(out, geom), pp.unletterbox(conf8, geom)


# The largest single_label_margin taken: at 4 logit units "none" would need 98 % of the
# softmax to keep a pixel from a name asked alone; stage 22c found 1.0 already past the best.
MAX_SINGLE_LABEL_MARGIN = 4.0

# Cosine above which two labels are one input to the model: identical token ids give
# 0.9999996-1.0 (float rounding of the fp16 tables); distinct words stay below about 0.991
# ('a' and 'an': 0.9905).
SAME_TEXT_COSINE = 0.99999


def _refuse_labels_the_encoder_cannot_tell_apart(names: Sequence[str], emb: np.ndarray,
                                                 grounding=None) -> None:
    """MiniLM's uncased tokenizer strips accents, so 'road' and 'röad' are the same input:
    both were served, the second's id never won a pixel and its mask stayed empty (audit
    round 18). Refused naming both, as look-alike duplicates are. With ``grounding``, the
    vectors are the grounded ones and the message says what the labels are read as."""
    if len(names) < 2:
        return
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    gram = np.triu(unit @ unit.T, k=1)
    i, j = np.unravel_index(int(np.argmax(gram)), gram.shape)
    if gram[i, j] < SAME_TEXT_COSINE:
        return
    if grounding is None:
        why = ("to the text encoder (its tokenizer drops accents and case, and reads letters "
               "it does not know as one unknown token)")
    else:
        read = grounding[j].nearest_class or grounding[j].nearest_name
        how = "by the WordNet table" if grounding[j].alias else "by its grounding"
        why = f"to the model: it is read as {shown(read)} {how}"
    raise LabelSetError(f"label {j} {shown(names[j])} is the same as label {i} "
                        f"{shown(names[i])} {why} (cosine {gram[i, j]:.6f}); give one of them")
