"""TensorRT backend (10.3+ and 11.x): the exported frame path built into an engine, cached.

One code path for both major versions: networks are always built *strongly typed*
(TensorRT 11 knows no other kind; 10.3+ has the flag), so the engine's precision is the
ONNX graph's. fp16 therefore means the fp16 export (``export.HalfBodyFramePath``: fp16
body, fp32 inputs/outputs and fp32 upsample/softmax/confidence tail), never a builder flag:
``BuilderFlag.FP16`` and ``Builder.platform_has_fast_fp16`` are gone in 11. What the
installed TensorRT can do is found by looking for the features this file uses
(``missing_features``), not by parsing version strings.

The engine has a fixed image size and an optimisation profile over K (the number of
labels) for the ``text`` input, so a label change only calls ``set_input_shape``; it never
rebuilds. Builds are slow (minutes), so engines are cached under a key of everything they
depend on (see engine_cache.py), verified on load, and rebuilt when stale or damaged.
Buffers and the stream come from NVIDIA's cuda-bindings (cuda_buffers.py), not torch:
a TensorRT node loads no torch (issue 19).

The module-level functions hold every TensorRT call this backend makes; they take the
``tensorrt`` module (or objects made by it) as an argument so that the API-conformance
tests can run them against the real bindings of each supported version on a machine
without NVIDIA's libraries (test/test_runtime_tensorrt_api.py).
"""
from __future__ import annotations

import logging

import numpy as np

from ..engine_cache import CacheMiss, EngineCache, EngineKey, sha256_file
from . import check_embeddings, check_image, text_dim_of

log = logging.getLogger(__name__)

DEFAULT_K_PROFILE = (1, 16, 255)
INPUTS = ("image", "text")
OUTPUTS = ("ids", "confidence")
# How the engine's precision is obtained; recorded in the engine cache key.
BUILD_MODE = "strongly-typed"

# (owner, attribute) pairs this file uses; an install lacking one is refused with the list
# of what is missing. STRONGLY_TYPED exists from 10.3 on, which is the floor.
REQUIRED_FEATURES = (
    ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"),
    ("MemoryPoolType", "WORKSPACE"),
    ("TensorIOMode", "INPUT"), ("TensorIOMode", "OUTPUT"),
    ("DataType", "FLOAT"), ("DataType", "INT32"),
    ("Builder", "create_network"), ("Builder", "create_builder_config"),
    ("Builder", "create_optimization_profile"), ("Builder", "build_serialized_network"),
    ("INetworkDefinition", "get_flag"),
    ("OnnxParser", "parse_from_file"), ("OnnxParser", "num_errors"), ("OnnxParser", "get_error"),
    ("IBuilderConfig", "set_memory_pool_limit"), ("IBuilderConfig", "add_optimization_profile"),
    ("IOptimizationProfile", "set_shape"),
    ("Runtime", "deserialize_cuda_engine"),
    ("ICudaEngine", "create_execution_context"), ("ICudaEngine", "get_tensor_dtype"),
    ("ICudaEngine", "get_tensor_mode"), ("ICudaEngine", "get_tensor_shape"),
    ("ICudaEngine", "get_tensor_profile_shape"),
    ("IExecutionContext", "set_input_shape"), ("IExecutionContext", "set_tensor_address"),
    ("IExecutionContext", "get_tensor_shape"), ("IExecutionContext", "infer_shapes"),
    ("IExecutionContext", "execute_async_v3"),
)


def missing_features(trt) -> list[str]:
    """What this backend needs and the given tensorrt module lacks (empty: usable)."""
    missing = []
    for owner, attr in REQUIRED_FEATURES:
        holder = getattr(trt, owner, None)
        if holder is None or not hasattr(holder, attr):
            missing.append(f"{owner}.{attr}")
    return missing


def require_features(trt) -> None:
    missing = missing_features(trt)
    if missing:
        raise RuntimeError(f"TensorRT {getattr(trt, '__version__', '?')} lacks what this backend "
                           f"uses ({', '.join(missing)}); it needs TensorRT >= 10.3 "
                           "(strongly typed networks)")


def strongly_typed_flags(trt) -> int:
    # The enum's value moved between versions (1 in 10.x, 0 in 11.x): never a literal.
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def expected_dtypes(trt) -> dict:
    return {"image": trt.DataType.FLOAT, "text": trt.DataType.FLOAT,
            "ids": trt.DataType.INT32, "confidence": trt.DataType.FLOAT}


def build_serialized_engine(trt, logger, onnx_path: str, text_dim: int, k_profile,
                            workspace_bytes: int) -> bytes:
    """Parse the ONNX file into a strongly typed network and build it; raises with the
    reason on every failure TensorRT reports (None, False or a negative index)."""
    try:
        builder = trt.Builder(logger)
    except TypeError as exc:  # the binding's way of saying createInferBuilder gave nullptr
        raise RuntimeError(f"TensorRT could not create a builder ({exc}): libnvinfer did not "
                           "initialise (driver / CUDA / TensorRT library mismatch?)") from exc
    flag = trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED
    network = builder.create_network(strongly_typed_flags(trt))
    if network is None or not network.get_flag(flag):
        raise RuntimeError("TensorRT did not create a strongly typed network")
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors or 'no error reported'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    profile = builder.create_optimization_profile()
    kmin, kopt, kmax = (int(k) for k in k_profile)
    d = int(text_dim)
    profile.set_shape("text", (kmin, d), (kopt, d), (kmax, d))
    if config.add_optimization_profile(profile) < 0:
        raise RuntimeError(f"TensorRT rejected the optimisation profile K in [{kmin}, {kmax}], D={d}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT engine build failed for {onnx_path} (see the TensorRT log above)")
    engine = bytes(serialized)
    if not engine:
        raise RuntimeError(f"TensorRT built an empty engine for {onnx_path}")
    return engine


def deserialize_engine(trt, logger, engine_bytes: bytes):
    """(runtime, engine); engine is None when the bytes do not deserialise."""
    try:
        runtime = trt.Runtime(logger)
    except TypeError as exc:
        raise RuntimeError(f"TensorRT could not create a runtime ({exc})") from exc
    return runtime, runtime.deserialize_cuda_engine(engine_bytes)


def check_engine_io(trt, engine, net_size, text_dim: int, k_profile) -> None:
    """The engine's tensors are the frame path's contract: names, directions, dtypes, the
    image shape and the K profile. A mismatch here would otherwise be garbage at run time."""
    dtypes = expected_dtypes(trt)
    for name, want in dtypes.items():
        mode = engine.get_tensor_mode(name)
        want_mode = trt.TensorIOMode.INPUT if name in INPUTS else trt.TensorIOMode.OUTPUT
        if mode != want_mode:
            raise RuntimeError(f"engine tensor {name!r} is {mode}, expected {want_mode}")
        got = engine.get_tensor_dtype(name)
        if got != want:
            raise RuntimeError(f"engine tensor {name!r} has dtype {got}, expected {want}")
    h, w = (int(v) for v in net_size)
    image = tuple(engine.get_tensor_shape("image"))
    if image != (1, 3, h, w):
        raise RuntimeError(f"engine image input is {image}, expected {(1, 3, h, w)}")
    d = int(text_dim)
    shapes = [tuple(s) for s in engine.get_tensor_profile_shape("text", 0)]
    want = [(int(k), d) for k in k_profile]
    if shapes != want:
        raise RuntimeError(f"engine K profile for 'text' is {shapes}, expected {want}")


def create_context(engine):
    context = engine.create_execution_context()
    if context is None:
        raise RuntimeError("TensorRT could not create an execution context (out of GPU memory?)")
    return context


def bind_tensor(context, name: str, address: int) -> None:
    if not context.set_tensor_address(name, int(address)):
        raise RuntimeError(f"TensorRT refused the address of tensor {name!r}")


def set_text_input(context, shape: tuple[int, int], address: int, net_size) -> None:
    """Point the engine at a new [K, D] label buffer and check the shapes it implies."""
    if not context.set_input_shape("text", tuple(int(v) for v in shape)):
        raise RuntimeError(f"TensorRT refused text shape {tuple(shape)} (outside the K profile?)")
    bind_tensor(context, "text", address)
    unresolved = context.infer_shapes()
    if unresolved:
        raise RuntimeError(f"TensorRT cannot infer shapes for {list(unresolved)}")
    h, w = (int(v) for v in net_size)
    for name in OUTPUTS:
        got = tuple(context.get_tensor_shape(name))
        if got != (1, h, w):
            raise RuntimeError(f"engine output {name!r} has shape {got}, expected {(1, h, w)}")


def execute(context, stream_handle: int) -> None:
    if not context.execute_async_v3(int(stream_handle)):
        raise RuntimeError("TensorRT execute_async_v3 failed")


def import_tensorrt():
    """The tensorrt module, checked for the features used here; RuntimeError with the reason."""
    try:
        import tensorrt as trt
    except Exception as exc:  # a partial install can raise more than ImportError (OSError)
        raise RuntimeError(f"`import tensorrt` failed ({type(exc).__name__}: {exc}); install "
                           "TensorRT >= 10.3 matching your CUDA, or use backend torch") from exc
    require_features(trt)
    return trt


class TensorRTBackend:
    name = "tensorrt"
    device = "cuda"

    def __init__(self, net=None, cfg=None, net_size=(384, 480), precision: str = "fp16",
                 onnx_path=None, engine_cache_dir=None, cache_dir=None, force_rebuild: bool = False,
                 k_profile=DEFAULT_K_PROFILE, workspace_gib: float = 4.0,
                 allow_build: bool = True, **_ignored) -> None:
        trt = import_tensorrt()
        from . import cuda_available, cuda_buffers

        if not cuda_available():
            raise RuntimeError("tensorrt backend needs a CUDA device; the driver reports none")
        self._cuda = cuda_buffers
        if precision == "auto":
            precision = "fp16"
        if precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be 'fp16' or 'fp32', not {precision!r}")
        self.trt = trt
        self.k_profile = tuple(int(k) for k in k_profile)
        self.max_labels = self.k_profile[2]  # Segmenter.prepare_labels rejects larger sets early
        if not 1 <= self.k_profile[0] <= self.k_profile[1] <= self.k_profile[2]:
            raise ValueError(f"k_profile must be (min, opt, max) with 1 <= min <= opt <= max, got {k_profile}")
        self.workspace_bytes = int(workspace_gib * (1 << 30))
        self.force_rebuild = bool(force_rebuild)
        self.allow_build = bool(allow_build)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.cache = EngineCache(engine_cache_dir)
        self.text_dim = text_dim_of(cfg)
        h, w = int(net_size[0]), int(net_size[1])
        from ..onnx_info import onnx_io_shapes, onnx_precision

        if onnx_path is None:
            if net is None:
                raise ValueError("tensorrt backend needs a net to export or an onnx_path")
            from ..export import cached_export

            if self.text_dim is None:
                raise ValueError("cannot export: the config does not say the text width D")
            onnx_path = cached_export(net, (h, w), self.text_dim, precision=precision,
                                      cache_dir=cache_dir or engine_cache_dir)
        else:
            shapes = onnx_io_shapes(onnx_path)
            h, w = int(shapes["image"][2]), int(shapes["image"][3])
            self.text_dim = self.text_dim or int(shapes["text"][1])
        # Strongly typed: the engine computes in whatever precision the graph is.
        built_precision = onnx_precision(onnx_path)
        if built_precision != precision:
            raise ValueError(f"precision={precision} asked for, but {onnx_path} is an "
                             f"{built_precision} graph (export it with --precision {precision})")
        self.precision = built_precision
        self.onnx_path = str(onnx_path)
        self.net_size = (h, w)
        gpu_name, capability = cuda_buffers.device_info()
        self.key = EngineKey(
            onnx_sha256=sha256_file(self.onnx_path),
            trt_version=trt.__version__,
            gpu_name=gpu_name,
            compute_capability=capability,
            precision=self.precision,
            input_shape=(1, 3, h, w),
            k_profile=self.k_profile,
            text_dim=int(self.text_dim),
            build_mode=BUILD_MODE,
        )
        self._load_engine()
        cb = cuda_buffers
        self._stream = cb.Stream()
        self._image = cb.DeviceArray((1, 3, h, w), np.float32)
        self._host_image = cb.PinnedArray((1, 3, h, w), np.float32)
        out_shape = (1, h, w)
        # check_engine_io has verified these dtypes; the buffers match them by construction.
        self._outputs = {"ids": cb.DeviceArray(out_shape, np.int32),
                         "confidence": cb.DeviceArray(out_shape, np.float32)}
        self._host_out = {name: cb.PinnedArray(out_shape, buf.dtype)
                          for name, buf in self._outputs.items()}
        self._text = None
        bind_tensor(self.context, "image", self._image.ptr)
        for name, buf in self._outputs.items():
            bind_tensor(self.context, name, buf.ptr)

    # -- engine -----------------------------------------------------------------------
    def _build(self) -> bytes:
        return build_serialized_engine(self.trt, self.logger, self.onnx_path, self.text_dim,
                                       self.k_profile, self.workspace_bytes)

    def _no_build_now(self, why: str) -> RuntimeError:
        from ..artefacts import NO_BUILD_NOW

        return RuntimeError(f"no usable cached TensorRT engine for {self.onnx_path} at "
                            f"{self.net_size[0]}x{self.net_size[1]} ({why}); {NO_BUILD_NOW} a "
                            "start of the node with these parameters")

    def _load_engine(self) -> None:
        # The cache serves only an engine it wrote itself for exactly this key (the sha256 of
        # the verified ONNX file, TensorRT version, GPU, build options; engine_cache.py), and
        # re-hashes the ONNX file after a build so a file swapped meanwhile is not cached.
        # No builder for the node's reconfigure (a build takes minutes): a miss is its error.
        try:
            engine_bytes, built = self.cache.get_or_build(
                self.key, self._build if self.allow_build else None, self.force_rebuild,
                source=self.onnx_path)
        except CacheMiss as miss:
            raise self._no_build_now(str(miss)) from None
        runtime, engine = deserialize_engine(self.trt, self.logger, engine_bytes)
        if engine is None and not built:
            if not self.allow_build:
                raise self._no_build_now("the cached one did not deserialise")
            # Verified bytes that still do not deserialise (e.g. a TensorRT patch release
            # that kept the version string): rebuild rather than fail.
            log.warning("cached engine %s did not deserialise; rebuilding", self.cache.path_for(self.key))
            engine_bytes, _ = self.cache.get_or_build(self.key, self._build, force_rebuild=True,
                                                      source=self.onnx_path)
            runtime, engine = deserialize_engine(self.trt, self.logger, engine_bytes)
        if engine is None:
            raise RuntimeError("TensorRT could not deserialise a freshly built engine")
        check_engine_io(self.trt, engine, self.net_size, self.text_dim, self.k_profile)
        self.runtime, self.engine = runtime, engine
        self.context = create_context(engine)
        self.engine_path = str(self.cache.path_for(self.key))
        self.built_now = built

    # -- labels and frames ------------------------------------------------------------
    def set_labels(self, embeddings: np.ndarray) -> None:
        cb = self._cuda
        emb = check_embeddings(embeddings, self.text_dim)
        k = emb.shape[0]
        kmin, _, kmax = self.k_profile
        if not kmin <= k <= kmax:
            raise ValueError(f"{k} labels is outside this engine's profile K in [{kmin}, {kmax}]; "
                             "rebuild with a wider k_profile")
        # A new device buffer per label set (LabelSet rows are read-only and the previous
        # buffer may still be read by a frame in flight on the stream until it synchronises).
        text = cb.DeviceArray(emb.shape, np.float32)
        host = cb.PinnedArray(emb.shape, np.float32)
        host.array[...] = emb
        self._stream.synchronize()
        cb.copy_async(text.ptr, host.ptr, text.nbytes, True, self._stream)
        self._stream.synchronize()
        set_text_input(self.context, tuple(emb.shape), text.ptr, self.net_size)
        self._text = text  # keep a reference: TensorRT holds only the raw pointer

    def infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = check_image(image)
        if self._text is None:
            raise RuntimeError("set_labels() must be called before infer()")
        if tuple(image.shape[2:]) != self.net_size:
            raise ValueError(f"image is {image.shape[2]}x{image.shape[3]}, this engine was built "
                             f"for {self.net_size[0]}x{self.net_size[1]}")
        cb = self._cuda
        self._host_image.array[...] = image
        cb.copy_async(self._image.ptr, self._host_image.ptr, self._image.nbytes, True, self._stream)
        execute(self.context, self._stream.ptr)
        for name, buf in self._outputs.items():
            cb.copy_async(self._host_out[name].ptr, buf.ptr, buf.nbytes, False, self._stream)
        self._stream.synchronize()
        return (self._host_out["ids"].array[0].copy(),
                self._host_out["confidence"].array[0].copy())
