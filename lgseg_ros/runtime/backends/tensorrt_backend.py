"""TensorRT 10 backend: the exported frame path built into an engine, cached on disk.

The engine has a fixed image size and an optimisation profile over K (the number of
labels) for the ``text`` input, so a label change only calls ``set_input_shape``; it never
rebuilds. Builds are slow (minutes), so engines are cached under a key of everything they
depend on (see engine_cache.py), verified on load, and rebuilt when stale or damaged.
Buffers are torch CUDA tensors: no pycuda / cuda-python dependency.

Not exercised on the development machine (no GPU, no TensorRT wheel); written against the
TensorRT 10 Python API (name-based tensors, execute_async_v3).
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..engine_cache import EngineCache, EngineKey, sha256_file
from . import check_embeddings, check_image, text_dim_of

log = logging.getLogger(__name__)

DEFAULT_K_PROFILE = (1, 16, 255)


def _torch_dtype(trt, dtype):
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
             trt.int8: torch.int8, trt.bool: torch.bool}
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    return table[dtype]


class TensorRTBackend:
    name = "tensorrt"
    device = "cuda"

    def __init__(self, net=None, cfg=None, net_size=(384, 480), precision: str = "fp16",
                 onnx_path=None, engine_cache_dir=None, cache_dir=None, force_rebuild: bool = False,
                 k_profile=DEFAULT_K_PROFILE, workspace_gib: float = 4.0, **_ignored) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise RuntimeError(f"tensorrt backend: `import tensorrt` failed ({exc}); install the "
                               "TensorRT 10 wheel matching your CUDA, or use backend torch") from exc
        if not torch.cuda.is_available():
            raise RuntimeError("tensorrt backend needs a CUDA device; torch sees none")
        if precision == "auto":
            precision = "fp16"
        if precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be 'fp16' or 'fp32', not {precision!r}")
        self.trt = trt
        self.precision = precision
        self.k_profile = tuple(int(k) for k in k_profile)
        self.max_labels = self.k_profile[2]  # Segmenter.prepare_labels rejects larger sets early
        if not 1 <= self.k_profile[0] <= self.k_profile[1] <= self.k_profile[2]:
            raise ValueError(f"k_profile must be (min, opt, max) with 1 <= min <= opt <= max, got {k_profile}")
        self.workspace_bytes = int(workspace_gib * (1 << 30))
        self.force_rebuild = bool(force_rebuild)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.cache = EngineCache(engine_cache_dir)
        self.text_dim = text_dim_of(cfg)
        h, w = int(net_size[0]), int(net_size[1])
        if onnx_path is None:
            if net is None:
                raise ValueError("tensorrt backend needs a net to export or an onnx_path")
            from ..export import cached_export

            if self.text_dim is None:
                raise ValueError("cannot export: the config does not say the text width D")
            onnx_path = cached_export(net, (h, w), self.text_dim, cache_dir=cache_dir or engine_cache_dir)
        else:
            from ..export import onnx_io_shapes

            shapes = onnx_io_shapes(onnx_path)
            h, w = int(shapes["image"][2]), int(shapes["image"][3])
            self.text_dim = self.text_dim or int(shapes["text"][1])
        self.onnx_path = str(onnx_path)
        self.net_size = (h, w)
        dev = torch.cuda.current_device()
        self.key = EngineKey(
            onnx_sha256=sha256_file(self.onnx_path),
            trt_version=trt.__version__,
            gpu_name=torch.cuda.get_device_name(dev),
            compute_capability=torch.cuda.get_device_capability(dev),
            precision=precision,
            input_shape=(1, 3, h, w),
            k_profile=self.k_profile,
            text_dim=int(self.text_dim),
        )
        self._load_engine()
        self._stream = torch.cuda.Stream()
        self._image = torch.empty((1, 3, h, w), dtype=torch.float32, device="cuda")
        self._host_image = torch.empty((1, 3, h, w), dtype=torch.float32, pin_memory=True)
        out_shape = (1, h, w)
        self._outputs = {
            name: torch.empty(out_shape, dtype=_torch_dtype(trt, self.engine.get_tensor_dtype(name)),
                              device="cuda")
            for name in ("ids", "confidence")
        }
        self._host_out = {name: torch.empty(out_shape, dtype=t.dtype, pin_memory=True)
                          for name, t in self._outputs.items()}
        self._text: torch.Tensor | None = None
        self.context.set_tensor_address("image", self._image.data_ptr())
        for name, tensor in self._outputs.items():
            self.context.set_tensor_address(name, tensor.data_ptr())

    # -- engine -----------------------------------------------------------------------
    def _build(self) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(self.onnx_path):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {self.onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        if self.precision == "fp16":
            if not builder.platform_has_fast_fp16:
                log.warning("this GPU has no fast fp16; building fp16 anyway as requested")
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        kmin, kopt, kmax = self.k_profile
        d = int(self.text_dim)
        profile.set_shape("text", (kmin, d), (kopt, d), (kmax, d))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT engine build failed for {self.onnx_path} (see log above)")
        return bytes(serialized)

    def _load_engine(self) -> None:
        trt = self.trt
        engine_bytes, built = self.cache.get_or_build(self.key, self._build, self.force_rebuild)
        runtime = trt.Runtime(self.logger)
        engine = runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None and not built:
            # Verified bytes that still do not deserialise (e.g. a TensorRT patch release
            # that kept the version string): rebuild rather than fail.
            log.warning("cached engine %s did not deserialise; rebuilding", self.cache.path_for(self.key))
            engine_bytes, _ = self.cache.get_or_build(self.key, self._build, force_rebuild=True)
            engine = runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None:
            raise RuntimeError("TensorRT could not deserialise a freshly built engine")
        self.runtime, self.engine = runtime, engine
        self.context = engine.create_execution_context()
        self.engine_path = str(self.cache.path_for(self.key))
        self.built_now = built

    # -- labels and frames ------------------------------------------------------------
    def set_labels(self, embeddings: np.ndarray) -> None:
        emb = check_embeddings(embeddings, self.text_dim)
        k = emb.shape[0]
        kmin, _, kmax = self.k_profile
        if not kmin <= k <= kmax:
            raise ValueError(f"{k} labels is outside this engine's profile K in [{kmin}, {kmax}]; "
                             "rebuild with a wider k_profile")
        text = torch.tensor(emb, device="cuda")  # copies: LabelSet rows are read-only
        torch.cuda.current_stream().synchronize()
        self._text = text  # keep a reference: TensorRT holds only the raw pointer
        self.context.set_input_shape("text", tuple(text.shape))
        self.context.set_tensor_address("text", text.data_ptr())

    def infer(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = check_image(image)
        if self._text is None:
            raise RuntimeError("set_labels() must be called before infer()")
        if tuple(image.shape[2:]) != self.net_size:
            raise ValueError(f"image is {image.shape[2]}x{image.shape[3]}, this engine was built "
                             f"for {self.net_size[0]}x{self.net_size[1]}")
        self._host_image.numpy()[...] = image
        with torch.cuda.stream(self._stream):
            self._image.copy_(self._host_image, non_blocking=True)
            if not self.context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            for name, tensor in self._outputs.items():
                self._host_out[name].copy_(tensor, non_blocking=True)
        self._stream.synchronize()
        ids = self._host_out["ids"][0].numpy()
        if ids.dtype != np.int32:
            ids = ids.astype(np.int32)
        else:
            ids = ids.copy()
        return ids, self._host_out["confidence"][0].numpy().astype(np.float32, copy=True)
