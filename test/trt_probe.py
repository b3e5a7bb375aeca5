"""Runs the TensorRT backend's code against one version's real bindings; prints JSON.

Started by test/test_runtime_tensorrt_api.py in a subprocess per TensorRT version (the
bindings of different versions share a module name, and they only import with stand-in
libnvinfer/libnvonnxparser on LD_LIBRARY_PATH). Usage:
    trt_probe.py api
    trt_probe.py build <fp16.onnx> <fp32.onnx> <text_dim>
    trt_probe.py auto <cache dir>
    trt_probe.py no_build <cache dir>
See trt_standins.py for what is real and what is stood in.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tensorrt_bindings as trt  # noqa: E402  the real pybind module of this version

# A full install exposes the same module as `tensorrt` (the tensorrt meta-package).
sys.modules["tensorrt"] = trt

from trt_standins import StandInModule  # noqa: E402

from lgseg_ros.runtime.backends import tensorrt_backend as tb  # noqa: E402

NET_SIZE = (64, 96)
K_PROFILE = (1, 16, 255)


def _old_weakly_typed_fp16(mod) -> None:
    """What the backend did before TensorRT 11 support: checks that the harness rejects it
    where the real bindings would (platform_has_fast_fp16 / BuilderFlag.FP16 gone in 11)."""
    builder = mod.Builder(trt.Logger(trt.Logger.WARNING))
    config = builder.create_builder_config()
    if builder.platform_has_fast_fp16:
        config.set_flag(mod.BuilderFlag.FP16)


def _attempt(fn) -> str | None:
    try:
        fn()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def api() -> dict:
    flag = trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED
    mod = StandInModule(trt)
    runtime = mod.Runtime(trt.Logger(trt.Logger.WARNING))
    context = runtime.deserialize_cuda_engine(b"x").create_execution_context()
    return {
        "old_fp16_path": _attempt(lambda: _old_weakly_typed_fp16(StandInModule(trt))),
        "bad_argument": _attempt(lambda: context.set_tensor_address("text", "not an address")),
        "version": trt.__version__,
        "missing_features": tb.missing_features(trt),
        "required": [f"{o}.{a}" for o, a in tb.REQUIRED_FEATURES],
        "strongly_typed_enum_value": int(flag),
        "strongly_typed_flags": tb.strongly_typed_flags(trt),
        # What TensorRT 11 removed and this backend must therefore not use:
        "has_BuilderFlag_FP16": hasattr(trt.BuilderFlag, "FP16"),
        "has_platform_has_fast_fp16": hasattr(trt.Builder, "platform_has_fast_fp16"),
        "has_OBEY_PRECISION_CONSTRAINTS": hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS"),
    }


def _good_answers(text_dim: int) -> dict:
    dtypes = tb.expected_dtypes(trt)
    return {
        "ICudaEngine.get_tensor_mode": lambda name: (trt.TensorIOMode.INPUT if name in tb.INPUTS
                                                     else trt.TensorIOMode.OUTPUT),
        "ICudaEngine.get_tensor_dtype": lambda name: dtypes[name],
        "ICudaEngine.get_tensor_profile_shape": lambda name, i: [(k, text_dim) for k in K_PROFILE],
        "ICudaEngine.get_tensor_shape": lambda name: (1, 3, *NET_SIZE),
        "IExecutionContext.get_tensor_shape": lambda name: (1, *NET_SIZE),
    }


def _full_path(mod, onnx_path: str, text_dim: int) -> bytes:
    """Everything the backend does with TensorRT, in its order: build, deserialise, check the
    engine, bind, change labels twice, run."""
    logger = trt.Logger(trt.Logger.WARNING)  # real
    engine_bytes = tb.build_serialized_engine(mod, logger, onnx_path, text_dim, K_PROFILE, 1 << 30)
    _, engine = tb.deserialize_engine(mod, logger, engine_bytes)
    tb.check_engine_io(mod, engine, NET_SIZE, text_dim, K_PROFILE)
    context = tb.create_context(engine)
    for i, name in enumerate(("image", "ids", "confidence")):
        tb.bind_tensor(context, name, 0x7F0000000000 + i * 0x100000)
    for k in (3, 40):
        tb.set_text_input(context, (k, text_dim), 0x7F1000000000 + k, NET_SIZE)
        tb.execute(context, 0x5555)
    return engine_bytes


# Each entry makes TensorRT report one failure; the backend must raise RuntimeError for it.
FAILURES = {
    "parse_from_file False": {"OnnxParser.parse_from_file": False, "OnnxParser.num_errors": 1},
    "get_flag False (not strongly typed)": {"INetworkDefinition.get_flag": False},
    "add_optimization_profile -1": {"IBuilderConfig.add_optimization_profile": -1},
    "build_serialized_network None": {"Builder.build_serialized_network": None},
    "create_execution_context None": {"ICudaEngine.create_execution_context": None},
    "set_tensor_address False": {"IExecutionContext.set_tensor_address": False},
    "set_input_shape False": {"IExecutionContext.set_input_shape": False},
    "infer_shapes unresolved": {"IExecutionContext.infer_shapes": ["ids"]},
    "execute_async_v3 False": {"IExecutionContext.execute_async_v3": False},
    "ids dtype FLOAT": {"ICudaEngine.get_tensor_dtype":
                        lambda name: trt.DataType.FLOAT},
    "confidence dtype HALF": {"ICudaEngine.get_tensor_dtype":
                              lambda name: trt.DataType.HALF if name == "confidence"
                              else tb.expected_dtypes(trt)[name]},
    "image shape wrong": {"ICudaEngine.get_tensor_shape": lambda name: (1, 3, 32, 32)},
    "output shape wrong": {"IExecutionContext.get_tensor_shape": lambda name: (1, 8, 8)},
    "K profile wrong": {"ICudaEngine.get_tensor_profile_shape": lambda name, i: [(1, 4)] * 3},
}


def build(fp16_path: str, fp32_path: str, text_dim: int) -> dict:
    out = {"version": trt.__version__, "runs": {}, "failures": {}}
    for precision, path in (("fp16", fp16_path), ("fp32", fp32_path)):
        mod = StandInModule(trt, _good_answers(text_dim))
        try:
            engine = _full_path(mod, path, text_dim)
            error = None
        except Exception as exc:
            engine, error = b"", f"{type(exc).__name__}: {exc}"
        out["runs"][precision] = {"error": error, "calls": mod.calls, "engine_len": len(engine),
                                  "unchecked_types": sorted(mod.unchecked)}
    for name, answers in FAILURES.items():
        mod = StandInModule(trt, {**_good_answers(text_dim), **answers})
        try:
            _full_path(mod, fp16_path, text_dim)
            out["failures"][name] = None
        except Exception as exc:
            out["failures"][name] = f"{type(exc).__name__}: {exc}"
    # The real module, no stand-ins: Builder() reaches the stand-in libnvinfer, which
    # returns nullptr as a broken driver install would.
    try:
        tb.build_serialized_engine(trt, trt.Logger(trt.Logger.WARNING), fp16_path, text_dim,
                                   K_PROFILE, 1 << 30)
        out["real_builder"] = None
    except Exception as exc:
        out["real_builder"] = f"{type(exc).__name__}: {exc}"
    return out


def _stand_in_cuda_driver() -> None:
    """The CUDA driver's answers (a device, sm_90) where this machine has none."""
    import lgseg_ros.runtime.backends as backends
    from lgseg_ros.runtime.backends import cuda_buffers

    backends.cuda_available = lambda: True
    cuda_buffers.device_info = lambda: ("stand-in GPU", (9, 0))


def _kept_log_lines() -> list[str]:
    """lgseg_ros's log lines from now on, as "LEVEL logger: message", for the JSON."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(f"{record.levelname} {record.name}: {record.getMessage()}")

    logging.getLogger("lgseg_ros").addHandler(Keep())
    logging.getLogger("lgseg_ros").setLevel(logging.INFO)
    return records


def auto(cache_dir: str) -> dict:
    """backend auto on a machine that claims CUDA and has this TensorRT, whose build fails.

    Stood in: the driver's and torch's answers to "is there a CUDA device, which one" (so that auto tries
    TensorRT at all). Real: the tensorrt module, the export, the engine cache, the build
    call (which fails in the real Builder()), torch's failure to move a net to CUDA, and
    ONNX Runtime on CPU."""
    import torch

    torch.cuda.is_available = lambda: True
    torch.cuda.current_device = lambda: 0
    torch.cuda.get_device_name = lambda dev=None: "stand-in GPU"
    torch.cuda.get_device_capability = lambda dev=None: (9, 0)
    # auto asks the CUDA driver (libcuda) whether a device exists, not torch (issue 19: no
    # torch import on a CPU-only path); stood in the same way.
    _stand_in_cuda_driver()
    records = _kept_log_lines()
    from lgseg_ros.model import build_model, get_config
    from lgseg_ros.runtime.backends import create_backend, resolve_auto

    torch.manual_seed(0)
    cfg = get_config("test-tiny")
    net = build_model(cfg).eval()
    out = {"version": trt.__version__, "resolve_auto": resolve_auto("auto")}
    backend = create_backend("auto", net, cfg, net_size=NET_SIZE, precision="auto",
                             engine_cache_dir=cache_dir)
    out["chosen"] = [backend.name, backend.device]
    out["attempts"] = backend.auto_attempts
    import numpy as np

    rng = np.random.default_rng(0)
    text = rng.standard_normal((4, cfg.text_dim)).astype(np.float32)
    backend.set_labels(text / np.linalg.norm(text, axis=1, keepdims=True))
    ids, conf = backend.infer(rng.random((1, 3, *NET_SIZE), dtype=np.float32))
    out["frame"] = [list(ids.shape), str(ids.dtype), str(conf.dtype)]
    try:
        create_backend("tensorrt", net, cfg, net_size=NET_SIZE, engine_cache_dir=cache_dir)
        out["explicit"] = None
    except Exception as exc:
        out["explicit"] = f"{type(exc).__name__}: {exc}"
    out["log"] = records
    return out


def no_build(cache_dir: str) -> dict:
    """The node's later configures build nothing (allow_build=False): on a cache miss, and
    on a cached engine that does not deserialise, the backend raises NO_BUILD_NOW. Stood in:
    the driver's answers (as in auto()) and, for the second case, the runtime's None for the
    cached bytes. Real: the tensorrt module, the export, the engine cache, the backend."""
    _stand_in_cuda_driver()
    records = _kept_log_lines()
    import torch

    from lgseg_ros.model import build_model, get_config

    torch.manual_seed(0)
    cfg = get_config("test-tiny")
    net = build_model(cfg).eval()

    def attempt(**kwargs) -> dict:
        start = len(records)
        try:
            tb.TensorRTBackend(net, cfg, net_size=NET_SIZE, precision="fp16",
                               engine_cache_dir=cache_dir, k_profile=K_PROFILE, **kwargs)
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        return {"error": error, "log": records[start:]}

    out = {"version": trt.__version__, "miss": attempt(allow_build=False)}
    # An engine in the cache that the runtime cannot deserialise: built (by the stand-in
    # builder, a build really started) and cached, then refused by the runtime.
    sys.modules["tensorrt"] = StandInModule(trt, {**_good_answers(cfg.text_dim),
                                                  "Runtime.deserialize_cuda_engine": None})
    out["first_build"] = attempt()
    out["engines"] = len(list(Path(cache_dir).glob("*.engine")))
    out["undeserialisable"] = attempt(allow_build=False)
    return out


def main(argv: list[str]) -> int:
    mode = argv[0]
    if mode == "api":
        result = api()
    elif mode == "build":
        result = build(argv[1], argv[2], int(argv[3]))
    elif mode == "auto":
        result = auto(argv[1])
    elif mode == "no_build":
        result = no_build(argv[1])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print("PROBE-JSON " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
