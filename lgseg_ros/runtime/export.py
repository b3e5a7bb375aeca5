"""`lgseg export`: the frame path (network + upsample + softmax + argmax) to ONNX.

Inputs ``image [1,3,H,W]`` float32 in [0,1] (H, W fixed per export) and ``text [K,D]``
(K dynamic); outputs ``ids [1,H,W]`` int32 (K = "none of these") and ``confidence [1,H,W]``
float32. Opset 17 with plain ops that ONNX Runtime and TensorRT 10's parser both take.

The TorchScript-based exporter is used by default: it emits opset 17 as asked, in well
under a second, while the dynamo exporter (torch >= 2.9's default) emits opset 18 at the
least and takes seconds. ``exporter="dynamo"`` remains available.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .frame_path import FramePath

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAMES = ("image", "text")
OUTPUT_NAMES = ("ids", "confidence")
# Ops that the TensorRT 10 ONNX parser supports (onnx-tensorrt docs/operators.md) and that a
# model of this family plausibly produces. An op outside this list is not necessarily
# unsupported; it is a reason to check by hand before shipping an engine.
TRT10_SAFE_OPS = frozenset("""
Abs Add And ArgMax ArgMin AveragePool BatchNormalization Cast Ceil Clip Concat Constant
ConstantOfShape Conv ConvTranspose Cos Div Einsum Equal Erf Exp Expand Flatten Floor Gather
GatherElements Gemm GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual HardSigmoid
HardSwish Identity InstanceNormalization LayerNormalization LeakyRelu Less LessOrEqual Log
MatMul Max MaxPool Min Mod Mul Neg Not Or Pad Pow PRelu Range Reciprocal ReduceL2 ReduceMax
ReduceMean ReduceMin ReduceSum Relu Reshape Resize Shape Sigmoid Sign Sin Slice Softmax Split
Sqrt Squeeze Sub Sum Tanh Tile TopK Transpose Unsqueeze Where
""".split())
# Exported labels: any K in 1..MAX_K; the upper bound only guides the dynamo exporter.
MAX_K = 1024


def export_onnx(net: nn.Module, path: str | os.PathLike, size: tuple[int, int], text_dim: int,
                opset: int = OPSET, exporter: str = "torchscript", check: bool = True) -> Path:
    """Export FramePath(net) for a fixed (H, W) and dynamic K; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = int(size[0]), int(size[1])
    frame = FramePath(_cpu_fp32(net)).eval()
    image = torch.rand(1, 3, h, w)
    # K = 3 for tracing: not 1, so no broadcast-by-size-1 gets baked into the graph.
    text = torch.nn.functional.normalize(torch.randn(3, int(text_dim)), dim=-1)
    start = time.perf_counter()
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings(), torch.no_grad(), _mha_fastpath_disabled():
        # The TorchScript exporter's deprecation and tracer warnings say nothing actionable here.
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(frame, (image, text), str(tmp), input_names=list(INPUT_NAMES),
                              output_names=list(OUTPUT_NAMES), opset_version=opset,
                              dynamic_axes={"text": {0: "K"}}, do_constant_folding=True,
                              dynamo=False)
        elif exporter == "dynamo":
            k = torch.export.Dim("K", min=1, max=MAX_K)
            torch.onnx.export(frame, (image, text), str(tmp), input_names=list(INPUT_NAMES),
                              output_names=list(OUTPUT_NAMES), opset_version=opset,
                              dynamic_shapes={"image": None, "text": {0: k}}, dynamo=True,
                              external_data=False)
        else:
            raise ValueError(f"exporter must be 'torchscript' or 'dynamo', not {exporter!r}")
    os.replace(tmp, path)
    log.info("exported %s (%dx%d, opset %d) in %.1f s", path, h, w, opset, time.perf_counter() - start)
    if check:
        check_onnx(path)
    return path


def _cpu_fp32(net: nn.Module) -> nn.Module:
    # Module.to() works in place; a net living on the GPU or in fp16 is copied instead.
    tensors = list(net.parameters()) + list(net.buffers())
    if all(t.device.type == "cpu" and (t.dtype == torch.float32 or not t.is_floating_point())
           for t in tensors):
        return net
    return copy.deepcopy(net).float().cpu()


@contextlib.contextmanager
def _mha_fastpath_disabled():
    # nn.MultiheadAttention in eval/no-grad mode dispatches to the fused
    # aten::_native_multi_head_attention, which has no ONNX symbolic; the unfused path
    # exports as MatMul/Softmax that every runtime takes.
    mha = getattr(torch.backends, "mha", None)
    if mha is None:
        yield
        return
    previous = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(previous)


def check_onnx(path: str | os.PathLike) -> dict:
    """onnx.checker + the interface contract; returns a summary, raises ValueError if off."""
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != list(INPUT_NAMES) or outputs != list(OUTPUT_NAMES):
        raise ValueError(f"{path}: inputs {inputs} / outputs {outputs}, expected "
                         f"{list(INPUT_NAMES)} / {list(OUTPUT_NAMES)}")
    text_dims = model.graph.input[1].type.tensor_type.shape.dim
    if not text_dims[0].dim_param:
        raise ValueError(f"{path}: K (text dim 0) is not dynamic")
    ops = sorted({n.op_type for n in model.graph.node})
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {"opset": opset, "ops": ops, "unvetted_ops": sorted(set(ops) - TRT10_SAFE_OPS)}


def onnx_io_shapes(path: str | os.PathLike) -> dict[str, list]:
    """Input name -> dims (int, or str for a symbolic dim)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input}


def weights_digest(net: nn.Module) -> str:
    """sha256 over parameter/buffer names, dtypes, shapes and bytes: identifies a net's state."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def code_digest(net: nn.Module) -> str:
    """sha256 of the source that defines the graph: the net's package and the frame path.

    A code change with unchanged weights (a fixed attention mask, a new head option) must
    not be served a stale export."""
    import importlib

    files = {Path(__file__).with_name("frame_path.py"), Path(__file__)}
    module = importlib.import_module(type(net).__module__)
    if getattr(module, "__file__", None):
        files.update(Path(module.__file__).parent.glob("*.py"))
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cached_export(net: nn.Module, size: tuple[int, int], text_dim: int,
                  cache_dir: str | os.PathLike | None = None, opset: int = OPSET) -> Path:
    """Export once per (weights, config, code, size, opset, torch version); later calls reuse
    the file."""
    from .engine_cache import default_cache_dir, mark_used, prune_cache

    base = Path(cache_dir) if cache_dir else default_cache_dir().parent / "onnx"
    cfg = getattr(net, "cfg", None)
    key = json.dumps({"weights": weights_digest(net), "size": [int(s) for s in size],
                      "config": cfg.to_json() if hasattr(cfg, "to_json") else repr(cfg),
                      "code": code_digest(net), "text_dim": int(text_dim), "opset": opset,
                      "torch": torch.__version__, "format": 1}, sort_keys=True)
    name = f"lgseg_{int(size[0])}x{int(size[1])}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"
    path = base / name
    if path.exists():
        try:
            check_onnx(path)
            mark_used(path)
            return path
        except Exception as exc:  # a damaged file is re-exported, never served
            log.warning("re-exporting damaged cached ONNX %s: %s", path, exc)
    exported = export_onnx(net, path, size, text_dim, opset=opset)
    mark_used(exported)
    prune_cache(base, "lgseg_*.onnx", protect=exported)
    return exported


def verify_with_onnxruntime(path: str | os.PathLike, net: nn.Module, size: tuple[int, int],
                            text_dim: int, ks: Sequence[int] = (1, 5), seed: int = 0) -> dict:
    """Run the ONNX file with ONNX Runtime against eager torch on random inputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    frame = FramePath(_cpu_fp32(net)).eval()
    report = {}
    for k in ks:
        image = torch.rand(1, 3, *size, generator=gen)
        text = torch.nn.functional.normalize(torch.randn(k, text_dim, generator=gen), dim=-1)
        ids, conf = session.run(list(OUTPUT_NAMES), {"image": image.numpy(), "text": text.numpy()})
        with torch.inference_mode():
            ref_ids, ref_conf = frame(image, text)
        report[int(k)] = {
            "argmax_agreement": float(np.mean(ids == ref_ids.numpy())),
            "max_confidence_diff": float(np.max(np.abs(conf - ref_conf.numpy()))),
        }
    return report


def _load_net(checkpoint: str | None, config: str | None):
    if checkpoint:
        from lgseg_ros.model import load_checkpoint

        return load_checkpoint(checkpoint)
    from lgseg_ros.model import build_model, get_config

    cfg = get_config(config)
    log.warning("no checkpoint given: exporting config %r with UNTRAINED weights", config)
    return build_model(cfg), cfg


def text_dim_of(cfg) -> int:
    for attr in ("text_dim", "embed_dim", "dim"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(f"cannot find the text embedding width D in config {cfg!r}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lgseg export", description=__doc__.splitlines()[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="safetensors checkpoint to export")
    src.add_argument("--config", help="model config name (untrained weights), e.g. lite-minilm")
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), default=(384, 480),
                        help="network input size (default 384 480)")
    parser.add_argument("-o", "--output", required=True, help="output .onnx path")
    parser.add_argument("--opset", type=int, default=OPSET)
    parser.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    net, cfg = _load_net(args.checkpoint, args.config)
    net.eval()
    d = text_dim_of(cfg)
    path = export_onnx(net, args.output, tuple(args.size), d, opset=args.opset, exporter=args.exporter)
    summary = check_onnx(path)
    result = {"output": str(path), "size": list(args.size), "text_dim": d, **summary}
    if not args.no_verify:
        result["onnxruntime_vs_torch"] = verify_with_onnxruntime(path, net, tuple(args.size), d)
        worst = min(v["argmax_agreement"] for v in result["onnxruntime_vs_torch"].values())
        if worst < 0.999:
            print(json.dumps(result, indent=2))
            print(f"lgseg export: ONNX Runtime disagrees with torch on {100 * (1 - worst):.2f}% "
                  "of pixels", file=sys.stderr)
            return 1
    if summary["unvetted_ops"]:
        log.warning("ops not on the TensorRT-10-vetted list (check before building an engine): %s",
                    summary["unvetted_ops"])
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
