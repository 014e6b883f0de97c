"""TFLite's ``TFLite_Detection_PostProcess`` custom op, emitted from TensorFlow.

TensorFlow has no such op. The TFLite converter replaces any ``tf.function``
whose ``experimental_implements`` attribute names it with the custom op,
reading the op's options from the attribute (see the MLIR converter's
``nms_utils.cc``). The function's body is a placeholder: the graph only
computes detections after conversion, in the TFLite kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from ssdkit.runtime.box_coder import SSD_SCALES

OP_NAME = "TFLite_Detection_PostProcess"


@dataclass(frozen=True)
class DetectionPostProcessOptions:
    """The op's attributes (the kernel's names)."""

    max_detections: int
    num_classes: int
    nms_score_threshold: float
    nms_iou_threshold: float
    max_classes_per_detection: int = 1
    detections_per_class: int = 100
    use_regular_nms: bool = False
    y_scale: float = SSD_SCALES[0]
    x_scale: float = SSD_SCALES[1]
    h_scale: float = SSD_SCALES[2]
    w_scale: float = SSD_SCALES[3]

    def implements_signature(self) -> str:
        """The ``experimental_implements`` text: a NameAttrList in proto text format."""
        ints = ("max_detections", "max_classes_per_detection", "detections_per_class", "num_classes")
        floats = ("nms_score_threshold", "nms_iou_threshold", "y_scale", "x_scale", "h_scale", "w_scale")
        attrs = [f'attr {{ key: "{k}" value {{ i: {int(getattr(self, k))} }} }}' for k in ints]
        # repr keeps every digit; "%f" would turn a 1e-8 threshold into 0.
        attrs += [f'attr {{ key: "{k}" value {{ f: {float(getattr(self, k))!r} }} }}' for k in floats]
        attrs.append(f'attr {{ key: "use_regular_nms" value {{ b: {str(self.use_regular_nms).lower()} }} }}')
        return " ".join([f'name: "{OP_NAME}"', *attrs])


def detection_postprocess(box_encodings, class_scores, anchors, options: DetectionPostProcessOptions):
    """Graph node for the op: box_encodings [1, A, 4], activated class_scores
    [1, A, C+1], anchors [A, 4] (yc, xc, h, w) -> (boxes, classes, scores,
    num_detections) once converted to TFLite."""

    @tf.function(experimental_implements=options.implements_signature())
    def postprocess(boxes, scores, anchor_boxes):  # noqa: ARG001 - replaced by the converter
        placeholder = tf.constant(0.0, tf.float32)
        return placeholder, placeholder, placeholder, placeholder

    return postprocess(box_encodings, class_scores, anchors)
