"""ONNX Runtime backend: the exported frame path on CPU (or CUDA where that provider exists).

The ONNX file has a fixed image size and a dynamic K, so a label change is only a new input
array; a new frame size exports (or loads from the export cache) another file.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from . import check_embeddings, check_image, text_dim_of

log = logging.getLogger(__name__)

GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "layout", "all")


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, net=None, cfg=None, device: str = "auto", onnx_path=None, net_size=None,
                 intra_op_threads: int | None = None, graph_optimization: str = "all",
                 cache_dir=None, engine_cache_dir=None, precision: str = "fp32", spin: bool = False,
                 onnx_sha256: str | None = None, **_ignored) -> None:
        import onnxruntime as ort

        self._ort = ort
        if net is None and onnx_path is None:
            raise ValueError("onnxruntime backend needs a net to export or an onnx_path")
        if precision == "fp16":
            # An fp16 ONNX graph would be a separate export; the CPU provider gains nothing.
            log.warning("onnxruntime backend runs fp32; precision=fp16 ignored")
        if precision == "int8" and onnx_path is None:
            # Static int8 needs calibration frames: runtime/quantize.py makes the file
            # (Segmenter(precision="int8") and `lgseg artefacts` ask for it).
            raise ValueError("precision=int8 runs a quantised ONNX file: pass onnx_path, or use "
                             "Segmenter(precision='int8'), which builds or finds one")
        self.precision = "int8" if precision == "int8" else "fp32"
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise RuntimeError("device='cuda' but this onnxruntime has no CUDAExecutionProvider "
                               f"(available: {available}); install onnxruntime-gpu")
        self.providers = (["CUDAExecutionProvider", "CPUExecutionProvider"]
                          if device != "cpu" and "CUDAExecutionProvider" in available
                          else ["CPUExecutionProvider"])
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        if graph_optimization not in GRAPH_OPT_LEVELS:
            raise ValueError(f"graph_optimization must be one of {GRAPH_OPT_LEVELS}")
        self.graph_optimization = graph_optimization
        self.intra_op_threads = intra_op_threads
        self.spin = bool(spin)
        self.net = net
        self.cfg = cfg
        self.text_dim = text_dim_of(cfg)
        # Exports live beside the engines when the caller chose a cache directory.
        self.cache_dir = cache_dir or engine_cache_dir
        self._fixed_path = onnx_path
        # A verified artefact's recorded hash: its bytes are read once, checked and handed
        # to ONNX Runtime, never opened again by name (runtime/artefacts.py).
        self._onnx_sha256 = onnx_sha256
        self._sessions: dict[tuple[int, int], object] = {}
        self._shrink_next_run = False
        self._text: np.ndarray | None = None
        if onnx_path is not None:
            self._session_for_file(onnx_path)
        elif net_size is not None:
            self._session_for_size(tuple(net_size))

    def _options(self):
        ort = self._ort
        so = ort.SessionOptions()
        # "all" adds NCHWc conv layouts: about 2x faster than "basic"/"extended" for this
        # model on CPU (p50 69 vs 120-127 ms, lite-minilm 360x480, 2 threads).
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "layout": getattr(ort.GraphOptimizationLevel, "ORT_ENABLE_LAYOUT",
                              ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.graph_optimization]
        if self.intra_op_threads:
            so.intra_op_num_threads = int(self.intra_op_threads)
        # One frame at a time: parallel operator execution only adds scheduling overhead.
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle worker threads sleep instead of spinning: on a robot (or a shared CI box) the
        # cores are shared with other nodes, and spinning threads then steal the very cores
        # the next operator waits for (lite-minilm 360x480 on the shared 2-core development
        # machine: p50 125 ms spinning, 69 ms not).
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spin else "0")
        so.log_severity_level = 3
        return so

    def _session_for_file(self, path):
        from ..onnx_info import declared_precision

        # The interface comes from the session itself: no second parse of the file, and no
        # `import onnx` on the node's start-up path.
        model = os.fspath(path)
        if self._onnx_sha256 and os.fspath(path) == os.fspath(self._fixed_path or ""):
            from ..engine_cache import read_verified_bytes

            model = read_verified_bytes(path, self._onnx_sha256)
        if isinstance(model, bytes):
            from ..ort_session import session_from_bytes

            session = session_from_bytes(self._ort, model, self._options(), self.providers)
        else:
            session = self._ort.InferenceSession(model, sess_options=self._options(),
                                                 providers=self.providers)
        del model   # the verified bytes are not kept by the session (runtime/ort_session.py)
        shapes = {i.name: list(i.shape) for i in session.get_inputs()}
        if "image" not in shapes or "text" not in shapes:
            raise ValueError(f"{path}: not an lgseg frame-path model (inputs {list(shapes)})")
        h, w = shapes["image"][2], shapes["image"][3]
        if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
            raise ValueError(f"{path}: image input must have a fixed H, W (got {h}, {w})")
        if self.text_dim is None and isinstance(shapes["text"][1], int):
            self.text_dim = shapes["text"][1]
        self.precision = declared_precision(path)
        self._sessions[(h, w)] = session
        log.info("onnxruntime session for %s (%dx%d) on %s", path, h, w, self.providers[0])
        return session

    def _session_for_size(self, size: tuple[int, int]):
        session = self._sessions.get(size)
        if session is not None:
            return session
        if self.net is None:
            have = sorted(self._sessions)
            raise ValueError(f"image is {size[0]}x{size[1]} but {self._fixed_path} was exported "
                             f"for {have}; export one for this size")
        from ..export import cached_export

        if self.text_dim is None:
            raise ValueError("cannot export: the config does not say the text width D")
        path = cached_export(self.net, size, self.text_dim, cache_dir=self.cache_dir)
        return self._session_for_file(path)

    def set_labels(self, embeddings: np.ndarray) -> None:
        self._text = check_embeddings(embeddings, self.text_dim)

    def release_memory(self) -> None:
        """Give back, after the next run, the arena memory that run does not use. ONNX
        Runtime's CPU arena keeps its high-water mark for good: without this, one frame
        with K=1024 labels held 3.8 GB after the set was replaced by 3 labels."""
        self._shrink_next_run = True

    def infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = check_image(image)
        if self._text is None:
            raise RuntimeError("set_labels() must be called before infer()")
        session = self._session_for_size((image.shape[2], image.shape[3]))
        run_options = None
        if self._shrink_next_run:
            self._shrink_next_run = False
            run_options = self._ort.RunOptions()
            run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage",
                                             "gpu:0" if self.device == "cuda" else "cpu:0")
        ids, conf = session.run(["ids", "confidence"], {"image": image, "text": self._text},
                                run_options)
        return ids[0], conf[0]
