"""``Decoder``: one image's raw SSD outputs -> detections, as a ``DetectorSpec`` says.

Built once per model from its spec (the anchors are generated then). Each
``decode`` runs, in this order:

1. candidate rows: the anchors whose class output can reach the score
   threshold, found on the raw (possibly quantized) values, so only those
   rows are dequantized, activated and decoded;
2. scores: dequantize, clip, activate (sigmoid, softmax or none); a spec
   without a background column gets a zero one, so class ``i`` is column ``i + 1``;
3. per-class thresholds (when the threshold is a vector): a class's scores
   below its threshold are removed before NMS, and a class whose threshold
   is above 1 (``np.inf``) is removed altogether;
4. boxes and NMS as ``spec.nms.kind`` says: TFLite's op, bit for bit
   (``tflite_postprocess``), hard per-class NMS or MediaPipe's weighted NMS (``nms``).

The ``Detector`` runs it on every raw-output model (TFLite ``_nonms``,
ONNX, SavedModel); training's validation runs it on the Keras outputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from .box_coder import decode_center_size, decode_pixel_scaled
from .detector_spec import DetectorSpec
from .nms import batched_nms, weighted_nms
from .tflite_postprocess import detection_postprocess

Quantization = tuple[float, int]  # (scale, zero_point) of an integer tensor; scale 0: not quantized
NOT_QUANTIZED: Quantization = (0.0, 0)
Threshold = Union[float, Sequence[float], np.ndarray]  # one for all classes, or one per class
_REMOVED = np.float32(-np.inf)  # a score below every threshold: the class is out before NMS


@dataclass(frozen=True)
class Decoded:
    """One image's detections, best first: ``boxes`` [N, 4] float32 (ymin,
    xmin, ymax, xmax) normalized to the model input, unclipped; ``classes``
    [N] int64 (0-based, background excluded); ``scores`` [N] float32."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


class Decoder:
    """Decodes raw SSD outputs (box encodings [A, >=4], class predictions
    [A, C(+1)]) of one image into ``Decoded`` detections.

    Args:
      spec: the model's spec: anchors, box coding, score coding, NMS.
      scores_activated: the class outputs are scores already (TFLite raw
        exports), whatever activation the spec names for the network.

    Raises:
      ValueError: the spec has no anchors.
    """

    def __init__(self, spec: DetectorSpec, scores_activated: bool = False):
        if spec.anchors is None:
            raise ValueError(f"the spec '{spec.name}' has no anchors to decode raw boxes with")
        self.spec = spec
        self.anchors = spec.anchors.center_size()  # [A, 4] ycenter, xcenter, h, w
        self.activation = "none" if scores_activated else spec.scores.activation

    @property
    def num_anchors(self) -> int:
        return len(self.anchors)

    def shape_problem(self, box_shape: Sequence[int], class_shape: Sequence[int]) -> str | None:
        """What is wrong with raw outputs of these shapes ([batch,] anchors, values;
        -1 dynamic) for this spec, or None."""
        anchors = self.num_anchors
        if (box_shape[-2] not in (-1, anchors) or box_shape[-1] < 4 or class_shape[-2] not in (-1, anchors)):
            return (f"raw outputs {list(box_shape)} and {list(class_shape)}, expected [1, {anchors}, 4] and "
                    f"[1, {anchors}, classes] for the spec's {anchors} anchors")
        labels, background = self.spec.labels, self.spec.scores.background
        expected = len(labels) + (1 if background else 0)
        if labels and class_shape[-1] not in (-1, expected):
            return (f"{class_shape[-1]} class columns, expected {expected} for {len(labels)} labels"
                    + (" plus background" if background else ""))
        return None

    def activate(self, class_predictions: np.ndarray, quantization: Quantization = NOT_QUANTIZED) -> np.ndarray:
        """Raw class outputs [..., C(+1)] -> float32 scores, as the spec's
        activation makes them (columns as they are: what parity checks compare)."""
        return activate(dequantize(class_predictions, *quantization), self.activation, self.spec.scores.clip)

    def decode(self, box_encodings: np.ndarray, class_predictions: np.ndarray, score_threshold: Threshold = 0.0,
               box_quantization: Quantization = NOT_QUANTIZED,
               class_quantization: Quantization = NOT_QUANTIZED) -> Decoded:
        """Detections scoring at least ``score_threshold`` (one number, or one
        per class: see the module's step 3) in one image's raw outputs:
        ``box_encodings`` [A, >=4] and ``class_predictions`` [A, C(+1)], as the
        model gave them (quantized ones with their ``(scale, zero_point)``)."""
        spec, nms = self.spec, self.spec.nms
        values = np.asarray(class_predictions)
        if values.ndim != 2 or len(values) != self.num_anchors or len(box_encodings) != self.num_anchors:
            raise ValueError(f"raw outputs of shapes {list(np.shape(box_encodings))} and {list(values.shape)}, "
                             f"expected [{self.num_anchors}, 4] and [{self.num_anchors}, classes] (one image)")
        thresholds = self._class_thresholds(score_threshold, values.shape[-1])
        lowest = float(thresholds.min(initial=np.inf)) if thresholds is not None else float(score_threshold)
        # Raising the NMS threshold to the caller's changes nothing above it
        # (lower scores never suppress higher ones) but skips most anchors.
        # Weighted NMS averages every candidate, so it keeps its own.
        threshold = nms.score_threshold if nms.kind == "weighted" else max(nms.score_threshold, lowest)
        rows = candidate_rows(values, class_quantization, self.activation, threshold, spec.scores.background)
        scores = activate(dequantize(values[rows], *class_quantization), self.activation, spec.scores.clip)
        if not spec.scores.background:
            scores = np.concatenate([np.zeros((len(scores), 1), np.float32), scores], axis=1)
        if thresholds is not None:
            scores[:, 1:] = np.where(scores[:, 1:] >= thresholds, scores[:, 1:], _REMOVED)
        encodings = dequantize(np.asarray(box_encodings)[rows, :4], *box_quantization)
        if spec.box_coding.order == "xywh":
            encodings = encodings[:, [1, 0, 3, 2]]
        anchors = self.anchors[rows]
        if nms.kind in ("tflite", "tflite_regular"):
            boxes, classes, out_scores, count = detection_postprocess(
                encodings, scores, anchors, max_detections=nms.max_detections,
                detections_per_class=nms.detections_per_class, use_regular_nms=nms.kind == "tflite_regular",
                nms_score_threshold=threshold, nms_iou_threshold=nms.iou_threshold, scales=spec.box_coding.scales)
            boxes, classes, out_scores = boxes[:count], classes[:count].astype(np.int64), out_scores[:count]
        elif nms.kind == "weighted":
            decoded = self._boxes(encodings, anchors)
            best = scores[:, 1:].argmax(axis=1)
            best_scores = scores[np.arange(len(scores)), best + 1]
            candidates = np.flatnonzero(best_scores >= threshold)
            boxes, out_scores, index = weighted_nms(decoded[candidates], best_scores[candidates], nms.iou_threshold)
            n = nms.max_detections
            boxes, classes, out_scores = boxes[:n], best[candidates][index][:n], out_scores[:n]
        else:
            decoded = self._boxes(encodings, anchors)
            anchor_ids, class_ids = np.nonzero(scores[:, 1:] >= np.float32(threshold))
            pair_scores = scores[anchor_ids, class_ids + 1]
            kept = batched_nms(decoded[anchor_ids], pair_scores, class_ids, nms.iou_threshold, threshold,
                               nms.max_detections, nms.class_agnostic)
            boxes, classes, out_scores = decoded[anchor_ids[kept]], class_ids[kept], pair_scores[kept]
        keep = out_scores >= (thresholds[classes] if thresholds is not None else np.float32(lowest))
        return Decoded(boxes[keep], classes[keep].astype(np.int64), out_scores[keep])

    def _class_thresholds(self, threshold: Threshold, columns: int) -> np.ndarray | None:
        """None for one threshold, else the [C] float32 vector, checked against the class columns."""
        if np.ndim(threshold) == 0:
            return None
        thresholds = np.asarray(threshold, np.float32).reshape(-1)
        classes = columns - (1 if self.spec.scores.background else 0)
        if len(thresholds) != classes:
            raise ValueError(f"{len(thresholds)} per-class score thresholds, expected {classes} (one per class)")
        return thresholds

    def _boxes(self, encodings: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        coding = self.spec.box_coding
        if coding.kind == "faster_rcnn":
            return decode_center_size(encodings, anchors, coding.scales)
        return decode_pixel_scaled(encodings, anchors, coding.scales, reverse_output_order=False,
                                   apply_exponential_on_box_size=coding.exponential_size, fixed_anchor_size=False)


def candidate_rows(values: np.ndarray, quantization: Quantization, activation: str, threshold: float,
                   background: bool) -> np.ndarray | slice:
    """Anchors (rows of the raw [A, C] class output) whose activated score can
    reach ``threshold`` in a foreground column: a superset, found on the raw
    (possibly quantized) values, so only those rows are dequantized and
    activated. Sigmoid and the identity are monotonic; the 1e-6 margin covers
    float32 activation error. Softmax depends on the whole row: all rows."""
    low = threshold - 1e-6
    if activation == "softmax" or low <= 0:
        return slice(None)
    if activation == "sigmoid":
        if low >= 1:
            return np.empty(0, np.int64)
        low = math.log(low / (1 - low))
    foreground = values[:, 1:] if background else values
    scale, zero_point = quantization
    if scale and values.dtype.kind in "iu":
        bound = math.floor(low / scale + zero_point) - 1
        limits = np.iinfo(values.dtype)
        if bound <= limits.min:
            return slice(None)
        mask = foreground >= min(bound, limits.max)
    else:
        mask = foreground >= low
    return np.flatnonzero(mask.any(axis=1))

def sigmoid(x: np.ndarray) -> np.ndarray:
    """float32 logistic function, overflow-free for any |x|."""
    x = np.asarray(x, np.float32)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """float32 softmax along ``axis`` (max-shifted so large logits do not overflow)."""
    x = np.asarray(x, np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def activate(scores: np.ndarray, activation: str, clip: float | None = None) -> np.ndarray:
    """Raw class outputs [..., C] -> float32 scores: ``sigmoid``, ``softmax`` or ``none``.

    ``clip`` bounds raw values to [-clip, clip] before the activation, as
    MediaPipe's ``score_clipping_thresh`` does (which it only applies with
    its sigmoid; here it applies to any activation).
    """
    scores = np.asarray(scores, np.float32)
    if clip is not None:
        scores = np.clip(scores, -clip, clip)
    if activation == "sigmoid":
        return sigmoid(scores)
    if activation == "softmax":
        return softmax(scores)
    if activation == "none":
        return scores
    raise ValueError(f"unknown score activation {activation!r}, expected sigmoid, softmax or none")


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """int8/uint8 tensor -> float32 ``(q - zero_point) * scale``, as TFLite
    (float32 arithmetic). A scale of 0 means "not quantized": values pass through."""
    if not scale:
        return np.asarray(values, np.float32)
    return (np.asarray(values, np.float32) - np.float32(zero_point)) * np.float32(scale)
