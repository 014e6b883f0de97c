"""Reading and editing a converted TFLite flatbuffer, with TF's schema Object API.

Why edit: TF's converter (2.20 and 2.21 alike) writes every attribute of
``TFLite_Detection_PostProcess`` into the op's custom options except
``detections_per_class``, so regular NMS silently runs with the kernel's
default of 100 per class. ``set_custom_options`` rewrites the op's FlexBuffer
options with the values asked for. Why read: the exporter names the output
tensors from the graph itself, and the Edge TPU report walks the op list.

A model may carry an appended zip (``ssdkit.runtime.model_files``); reading
ignores it, editing must happen before it is appended.
"""
from __future__ import annotations

from dataclasses import dataclass

import flatbuffers
import numpy as np
from flatbuffers import flexbuffers
from tensorflow.lite.python import schema_py_generated as schema

_FILE_IDENTIFIER = b"TFL3"
_OP_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
_TYPE_NAMES = {code: name for name, code in vars(schema.TensorType).items() if not name.startswith("_")}
_ACTIVATIONS = {code: name for name, code in vars(schema.ActivationFunctionType).items() if not name.startswith("_")}


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # the schema's name: "INT8", "UINT8", "FLOAT32", ...
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]  # -1 marks a dynamic dimension
    constant: bool  # holds data in the file (weights, biases, shapes)


@dataclass(frozen=True)
class Op:
    index: int  # position in the subgraph's execution order
    name: str  # builtin name ("CONV_2D") or the custom code
    custom: bool
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    fused_activation: str  # "NONE" when the op has none or no such option


def _load(model_bytes: bytes) -> "schema.ModelT":
    if model_bytes[4:8] != _FILE_IDENTIFIER:
        raise ValueError(f"not a TFLite flatbuffer (file identifier {model_bytes[4:8]!r}, expected {_FILE_IDENTIFIER!r})")
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))


def _op_name(code: "schema.OperatorCodeT") -> str:
    if code.customCode:
        return code.customCode.decode()
    # Codes below 127 live in the deprecated byte field, larger ones in the
    # int32 field; the schema says to take the larger of the two.
    return _OP_NAMES.get(max(code.builtinCode, code.deprecatedBuiltinCode), "UNKNOWN")


def _tensor(model: "schema.ModelT", tensors: list, index: int) -> Tensor:
    t = tensors[index]
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
    signature = tuple(int(d) for d in t.shapeSignature) if t.shapeSignature is not None else shape
    data = model.buffers[t.buffer].data if 0 < t.buffer < len(model.buffers) else None
    return Tensor((t.name or b"").decode(), _TYPE_NAMES.get(t.type, str(t.type)), shape, signature,
                  data is not None and len(data) > 0)


def ops(model_bytes: bytes) -> list[Op]:
    """The main subgraph's ops in execution order."""
    model = _load(model_bytes)
    graph = model.subgraphs[0]
    result = []
    for i, op in enumerate(graph.operators):
        code = model.operatorCodes[op.opcodeIndex]
        inputs = tuple(_tensor(model, graph.tensors, t) for t in (op.inputs if op.inputs is not None else ()) if t >= 0)
        outputs = tuple(_tensor(model, graph.tensors, t) for t in (op.outputs if op.outputs is not None else ()))
        activation = getattr(op.builtinOptions, "fusedActivationFunction", 0)
        result.append(Op(i, _op_name(code), bool(code.customCode), inputs, outputs, _ACTIVATIONS.get(activation, "NONE")))
    return result


def signature_outputs(model_bytes: bytes) -> dict[str, str]:
    """The default signature's output keys -> tensor names."""
    model = _load(model_bytes)
    if not model.signatureDefs:
        raise ValueError("the TFLite model has no signature")
    signature, tensors = model.signatureDefs[0], model.subgraphs[0].tensors
    return {entry.name.decode(): tensors[entry.tensorIndex].name.decode() for entry in signature.outputs}


def _custom_ops(model: "schema.ModelT", op_name: str) -> list:
    return [op for graph in model.subgraphs for op in graph.operators
            if _op_name(model.operatorCodes[op.opcodeIndex]) == op_name]


def read_custom_options(model_bytes: bytes, op_name: str) -> list[dict]:
    """The decoded custom options of every ``op_name`` op in the model."""
    return [flexbuffers.Loads(bytes(op.customOptions)) for op in _custom_ops(_load(model_bytes), op_name)]


def set_custom_options(model_bytes: bytes, op_name: str, values: dict) -> bytes:
    """The model with ``values`` merged into each ``op_name`` op's FlexBuffer options.

    The model is rebuilt with the Object API (TF's ``flatbuffer_utils`` does
    the same); the new options are longer than the old, so an in-place patch
    cannot work.
    """
    model = _load(model_bytes)
    found = _custom_ops(model, op_name)
    if not found:
        raise RuntimeError(f"the converted model has no {op_name} op to configure")
    for op in found:
        options = flexbuffers.Loads(bytes(op.customOptions))
        options.update(values)
        op.customOptions = np.frombuffer(bytes(flexbuffers.Dumps(options)), np.uint8)
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())


def without_custom_op(model_bytes: bytes, op_name: str, output_names: tuple[str, ...]) -> bytes:
    """The model with its one ``op_name`` op removed: the op's first
    ``len(output_names)`` inputs become the graph's outputs, named
    ``output_names`` in the signature.

    Why: an exporter that calibrated the graph with the postprocess op gets its
    raw twin from the same calibrated model (the layers before the op are the
    same ops on the same data, so the same ranges), instead of converting and
    calibrating the raw graph again. Tensors only the op used stay in the
    table; the MLIR quantizer drops them."""
    model = _load(model_bytes)
    graph = model.subgraphs[0]
    found = [i for i, op in enumerate(graph.operators) if _op_name(model.operatorCodes[op.opcodeIndex]) == op_name]
    if len(found) != 1:
        raise ValueError(f"expected one {op_name} op in the model, found {len(found)}")
    op = graph.operators.pop(found[0])
    outputs = [int(t) for t in op.inputs[:len(output_names)]]
    graph.outputs = np.array(outputs, np.int32)
    if model.signatureDefs:
        entries = []
        for name, index in zip(output_names, outputs):
            entry = schema.TensorMapT()
            entry.name, entry.tensorIndex = name.encode(), index
            entries.append(entry)
        model.signatureDefs[0].outputs = entries
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())
