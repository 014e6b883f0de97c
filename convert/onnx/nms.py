"""Raw ONNX graph -> the same graph ending in box decoding and ONNX's own
``NonMaxSuppression``, with the TF OD API's four outputs.

Outputs: ``detection_boxes`` [N, D, 4] (ymin, xmin, ymax, xmax, normalized,
clipped to [0, 1]), ``detection_classes`` [N, D] (0-based label index as
float), ``detection_scores`` [N, D], ``num_detections`` [N] (float), best
first, rows past the count zero: the SavedModel's ``serving_default`` layout
with TFLite's 0-based classes. D is the spec's ``max_detections``.

The nodes are appended with ``onnx.helper`` to the converted raw graph rather
than converted from a TF NMS by tf2onnx: the semantics are spelled out here
(per class NMS as the runtime's ``batched_nms``, then the best D over all
classes), no second TF conversion is needed, and the same function finishes
the int8 raw graph. Every op exists from opset 13, the lowest ssdkit exports.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ssdkit.runtime.roles import DETECTION_ROLES, OutputRoles
from ssdkit.runtime.spec import ModelSpec, PostProcessing

from .files import write_onnx

_INT64_MAX = np.iinfo(np.int64).max


def nms_file_name(raw_path: Path) -> str:
    """``<model>_raw[_int8].onnx`` -> ``<model>_nms[_int8].onnx``."""
    stem, raw, rest = raw_path.name.rpartition("_raw")
    if not raw:
        raise ValueError(f"{raw_path.name}: expected a raw ONNX file named <model>_raw[...].onnx")
    return f"{stem}_nms{rest}"


class _Graph:
    """Appends nodes and constants to a graph under fresh ``nms/`` names."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self._count = 0

    def const(self, value, dtype=np.float32, name: str | None = None) -> str:
        name = name or self._name("const")
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None, **attributes) -> str | list[str]:
        names = [name] if name else [self._name(op_type.lower()) for _ in range(outputs)]
        self.graph.node.append(helper.make_node(op_type, list(inputs), names, name=self._name(op_type), **attributes))
        return names[0] if outputs == 1 else names

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"nms/{kind}_{self._count}"


def add_nms(raw: onnx.ModelProto, spec: ModelSpec, post: PostProcessing) -> onnx.ModelProto:
    """A copy of ``raw`` (outputs ``box_encodings`` [N, A, 4] and
    ``class_predictions`` [N, A, C+1] logits) ending in NMS with ``post``'s settings."""
    model = onnx.ModelProto()
    model.CopyFrom(raw)
    outputs = [o.name for o in model.graph.output]
    if outputs != ["box_encodings", "class_predictions"]:
        raise ValueError(f"expected a raw graph with outputs box_encodings and class_predictions, got {outputs}")
    g = _Graph(model.graph)
    boxes = _decode(g, "box_encodings", spec)
    scores = _scores(g, "class_predictions", post)  # [N, C, A]
    selected = g.op("NonMaxSuppression", boxes, scores, g.const([post.detections_per_class], np.int64),
                    g.const([post.iou_threshold]), g.const([post.score_threshold]))  # [K, 3]: batch, class, anchor
    count = min(post.max_detections, spec.num_anchors * spec.num_classes)
    _detections(g, boxes, scores, selected, spec.num_anchors, count)
    del model.graph.output[:]
    batch = raw.graph.input[0].type.tensor_type.shape.dim[0]
    shapes = {"detection_boxes": [count, 4], "detection_classes": [count], "detection_scores": [count],
              "num_detections": []}
    for name in DETECTION_ROLES:
        info = helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, *shapes[name]])
        info.type.tensor_type.shape.dim[0].CopyFrom(batch)
        model.graph.output.append(info)
    return model


def _decode(g: _Graph, encodings: str, spec: ModelSpec) -> str:
    """[N, A, 4] (ty, tx, th, tw) -> corners, against the spec's anchors (one initializer).
    ``box_coder.decode_center_size``'s formula in graph ops (rounding is the runtime's, not the kernel's)."""
    anchors = g.const(spec.anchors_center_size(), name="nms/anchors")  # [A, 4] yc, xc, h, w
    pairs = g.const([2, 2], np.int64)
    scaled = g.op("Div", encodings, g.const(spec.box_coder.scales))
    offsets, log_sizes = g.op("Split", scaled, pairs, axis=2, outputs=2)
    anchor_centers, anchor_sizes = g.op("Split", anchors, pairs, axis=1, outputs=2)
    centers = g.op("Add", g.op("Mul", offsets, anchor_sizes), anchor_centers)
    half_sizes = g.op("Mul", g.op("Mul", g.op("Exp", log_sizes), g.const(0.5)), anchor_sizes)
    return g.op("Concat", g.op("Sub", centers, half_sizes), g.op("Add", centers, half_sizes), axis=2)


def _scores(g: _Graph, logits: str, post: PostProcessing) -> str:
    """[N, A, C+1] logits -> [N, C, A] foreground scores, NonMaxSuppression's layout
    (``decoder.activate`` in graph ops)."""
    activation = "Softmax" if post.score_activation == "softmax" else "Sigmoid"
    scores = g.op(activation, logits, **({"axis": -1} if activation == "Softmax" else {}))
    foreground = g.op("Slice", scores, g.const([1], np.int64), g.const([_INT64_MAX], np.int64), g.const([2], np.int64))
    return g.op("Transpose", foreground, perm=[0, 2, 1])


def _detections(g: _Graph, boxes: str, scores: str, selected: str, anchors: int, count: int) -> None:
    """Selected (batch, class, anchor) triples -> the best ``count`` per
    image: the kept scores are scattered into a [N, C * A] map (-1
    elsewhere) whose TopK gives class and anchor of each detection."""
    kept = g.op("ScatterND", g.op("ConstantOfShape", g.op("Shape", scores),
                                  value=numpy_helper.from_array(np.array([-1], np.float32))),
                selected, g.op("GatherND", scores, selected))
    flat = g.op("Reshape", kept, g.const([0, -1], np.int64))
    top, index = g.op("TopK", flat, g.const([count], np.int64), axis=1, outputs=2)
    valid = g.op("GreaterOrEqual", top, g.const(0.0))
    zero = g.const(0.0)
    anchor = g.op("Unsqueeze", g.op("Mod", index, g.const(anchors, np.int64)), g.const([2], np.int64))
    corners = g.op("Clip", g.op("GatherND", boxes, anchor, batch_dims=1), zero, g.const(1.0))
    g.op("Where", g.op("Unsqueeze", valid, g.const([2], np.int64)), corners, zero, name="detection_boxes")
    classes = g.op("Cast", g.op("Div", index, g.const(anchors, np.int64)), to=TensorProto.FLOAT)
    g.op("Where", valid, classes, zero, name="detection_classes")
    g.op("Where", valid, top, zero, name="detection_scores")
    g.op("ReduceSum", g.op("Cast", valid, to=TensorProto.FLOAT), g.const([1], np.int64), keepdims=0,
         name="num_detections")


def export_onnx_nms(raw_path: Path, spec: ModelSpec, post: PostProcessing) -> Path:
    """Writes ``<model>_nms[_int8].onnx`` beside the raw file it finishes; its
    spec says "detections" so ``Detector`` reads the four outputs directly."""
    file_spec = dataclasses.replace(spec, postprocessing=post, outputs=OutputRoles.named_as_roles("detections"))
    model = add_nms(onnx.load(str(raw_path)), spec, post)
    return write_onnx(model, file_spec, raw_path.with_name(nms_file_name(raw_path)))
