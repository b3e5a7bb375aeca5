"""What an ONNX file declares (interface shapes, compute precision), read without torch:
the ONNX Runtime backend and the torch-free run-time install use these on every start."""
from __future__ import annotations

import os


def graph_precision(model) -> str:
    """The graph's compute precision: int8 if it holds quantisation nodes, fp16 if it holds
    fp16 weights or casts to fp16, else fp32.

    With strongly typed TensorRT builds this is the precision the engine is built in."""
    from onnx import TensorProto

    if any(n.op_type in ("QuantizeLinear", "QLinearConv", "DynamicQuantizeLinear")
           for n in model.graph.node):
        return "int8"   # runtime/quantize.py's static int8 graph
    if any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    for node in model.graph.node:
        if node.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.FLOAT16
                                          for a in node.attribute):
            return "fp16"
        if node.op_type == "Constant" and any(a.t.data_type == TensorProto.FLOAT16
                                              for a in node.attribute if a.type == a.TENSOR):
            return "fp16"
    return "fp32"


def onnx_precision(path: str | os.PathLike) -> str:
    import onnx

    return graph_precision(onnx.load(str(path), load_external_data=False))


def onnx_io_shapes(path: str | os.PathLike) -> dict[str, list]:
    """Input name -> dims (int, or str for a symbolic dim)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input}


def onnx_summary(path: str | os.PathLike) -> tuple[dict[str, list], str]:
    """(input shapes, compute precision) from one read of the file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    shapes = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in model.graph.input}
    return shapes, graph_precision(model)


def declared_precision(path: str | os.PathLike) -> str:
    """The precision an artefact's manifest (runtime/artefacts.py, verified by the caller)
    records, else the graph's own. Reading the manifest spares the node `import onnx`
    (0.9 s of start-up on the 2-core CPU, most of it ml_dtypes)."""
    import json
    from pathlib import Path

    manifest = Path(path).with_suffix(".json")
    try:
        if manifest.stat().st_size < 1 << 16:
            value = json.loads(manifest.read_text()).get("precision")
            if value in ("fp32", "fp16", "int8"):
                return value
    except (OSError, ValueError, AttributeError, RecursionError):
        pass
    return onnx_precision(path)
