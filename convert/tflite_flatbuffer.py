"""Edits of a converted TFLite flatbuffer that the converter gets wrong.

TF's converter (2.20 included) writes every attribute of
``TFLite_Detection_PostProcess`` into the op's custom options except
``detections_per_class``, so regular NMS silently runs with the kernel's
default of 100 per class. ``set_custom_options`` rewrites a custom op's
FlexBuffer options with the values we asked for.
"""
from __future__ import annotations

import flatbuffers
from flatbuffers import flexbuffers
from tensorflow.lite.python import schema_py_generated as schema

_FILE_IDENTIFIER = b"TFL3"


def _custom_ops(model: "schema.ModelT", op_name: str):
    names = {i: (code.customCode or b"").decode() for i, code in enumerate(model.operatorCodes)}
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            if names.get(op.opcodeIndex) == op_name:
                yield op


def read_custom_options(model_bytes: bytes, op_name: str) -> list[dict]:
    """The decoded custom options of every ``op_name`` op in the model."""
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    return [flexbuffers.Loads(bytes(op.customOptions)) for op in _custom_ops(model, op_name)]


def set_custom_options(model_bytes: bytes, op_name: str, values: dict) -> bytes:
    """Returns the model with ``values`` merged into each ``op_name`` op's options."""
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    ops = list(_custom_ops(model, op_name))
    if not ops:
        raise RuntimeError(f"the converted model has no {op_name} op to configure")
    for op in ops:
        options = flexbuffers.Loads(bytes(op.customOptions))
        options.update(values)
        op.customOptions = list(flexbuffers.Dumps(options))
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())
