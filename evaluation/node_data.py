"""The quantization debugger's per-layer error as Model Explorer node data.

Google's Model Explorer (``ai-edge-model-explorer``) draws a TFLite graph
and colours its nodes by the values of a node-data JSON file. The export's
quantization report writes ``MODEL_int8.node_data.json`` beside
``MODEL_int8.tflite``: each int8 op's rmse/scale (``convert/tflite/quant_debug.py``:
the root-mean-square error of its output against the float op on the same
input, in units of the output's quantization step; rounding alone gives
0.29) under the node id Model Explorer's TFLite adapter gives that op, which
is the op's index in the main subgraph. ``ssdkit explore MODEL_DIR`` shows
the graph with the file applied.

The file is Model Explorer's ``GraphNodeData`` (``results`` keyed by node
id, ``{"value": ...}`` each, thresholds for the colours): the web app applies
such a file to the graph on screen, whatever that graph's id. It is written
here without the package, so an export needs no Model Explorer installed.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

from ssdkit.fileio import atomic_path
from ssdkit.runtime.model_files import NODE_DATA_SUFFIX, node_data_path  # noqa: F401 (node_data_path: this module's API)

SUFFIX = NODE_DATA_SUFFIX
NAME = "int8 rmse/scale"  # the overlay's name in Model Explorer's side panel
# Colour bands of rmse/scale (Model Explorer: a value <= a threshold's value gets its colour).
BANDS = ((0.5, "#c8e6c9"),  # rounding-level error (0.29 for a perfect int8 op)
         (1.0, "#fff59d"),  # up to one quantization step
         (2.0, "#ffcc80"))  # up to two
WORST_COLOR = "#ef9a9a"  # more than two steps: the layers --keep-float auto tries first
_QUANTIZED = ("int8", "uint8", "int16")


def op_nodes(model: str | Path) -> dict[str, str]:
    """Output tensor name -> Model Explorer node id, for every op of the
    main subgraph whose output is quantized (int8, uint8, int16).

    Model Explorer's flatbuffer adapter numbers the op nodes by their index
    in the subgraph (tensors without a producer, the constants and the graph
    inputs, get the ids after them); an op's first output names it."""
    from ssdkit.runtime.backends.tflite import interpreter_module

    interpreter = interpreter_module().Interpreter(model_path=str(model))
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    nodes = {}
    for op in interpreter._get_ops_details():  # the interpreter's only view of the op list (private, stable since TF 2.5)
        outputs = [tensors[index] for index in op["outputs"] if index in tensors]
        if outputs and outputs[0]["dtype"].__name__ in _QUANTIZED:
            nodes.setdefault(outputs[0]["name"], str(op["index"]))
    return nodes


def node_data(errors: Mapping[str, float], nodes: Mapping[str, str]) -> dict:
    """Model Explorer ``GraphNodeData``: ``errors`` (output tensor name ->
    rmse/scale) on the node ids ``nodes`` gives; tensors that are no int8
    op of the model (a layer ``--keep-float`` left in float) are left out."""
    results = {nodes[name]: {"value": round(float(value), 4)}
               for name, value in errors.items() if name in nodes and math.isfinite(value)}
    top = max([BANDS[-1][0], *(result["value"] for result in results.values())])
    thresholds = [{"value": value, "bgColor": color} for value, color in BANDS]
    thresholds.append({"value": top, "bgColor": WORST_COLOR})
    return {"name": NAME, "results": results, "thresholds": thresholds}


def write_node_data(model: str | Path, errors: Mapping[str, float]) -> Path | None:
    """Writes ``errors`` (output tensor name -> rmse/scale) as the node data
    of ``model`` (an int8 .tflite) beside it; returns the path, or None when
    no measured layer is an int8 op of ``model`` (nothing to show)."""
    data = node_data(errors, op_nodes(model))
    if not data["results"]:
        return None
    path = node_data_path(model)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")
    return path
