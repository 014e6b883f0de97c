"""The shared postprocessing for every backend: decode, activate, NMS. numpy only.

``detection_postprocess`` reproduces TFLite's ``TFLite_Detection_PostProcess``
custom op (tensorflow/lite/kernels/detection_postprocess.cc) exactly, so a
model exported without the op gives the same detections through this module
as with it. The kernel's rules it follows:

- boxes decode in double precision and are stored as float32, never clipped;
- a score passes when ``score >= nms_score_threshold``; a candidate is
  suppressed when ``IoU > nms_iou_threshold`` (strictly), and the IoU with a
  box of zero or negative area is 0;
- candidates are visited in stable descending score order (ties: lower anchor
  index first); per anchor the top class is the first maximum;
- fast mode runs one NMS over each anchor's best class score and reports the
  top ``max_classes_per_detection`` classes of each kept anchor; regular mode
  runs NMS per class (at most ``detections_per_class`` each) and keeps the
  ``max_detections`` best over all classes;
- class ids exclude the background column; unused output slots are zeros.

Boxes are (ymin, xmin, ymax, xmax) and, for SSD models, normalized to [0, 1].
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .boxes import iou_one_to_many

DEFAULT_SCALES = (10.0, 10.0, 5.0, 5.0)


def decode_boxes(box_encodings: np.ndarray, anchors: np.ndarray, scales: Sequence[float] = DEFAULT_SCALES) -> np.ndarray:
    """[A, 4] (ty, tx, th, tw) against [A, 4] (yc, xc, h, w) anchors -> float32 corners.

    The op computes centres and half sizes in double and rounds each to float32
    before the final subtraction; so does this, to give identical bits.
    """
    codes = np.asarray(box_encodings, np.float32)[:, :4].astype(np.float64)
    anc = np.asarray(anchors, np.float32).astype(np.float64)
    sy, sx, sh, sw = (float(np.float32(s)) for s in scales)
    yc = (codes[:, 0] / sy * anc[:, 2] + anc[:, 0]).astype(np.float32)
    xc = (codes[:, 1] / sx * anc[:, 3] + anc[:, 1]).astype(np.float32)
    half_h = (0.5 * np.exp(codes[:, 2] / sh) * anc[:, 2]).astype(np.float32)
    half_w = (0.5 * np.exp(codes[:, 3] / sw) * anc[:, 3]).astype(np.float32)
    return np.stack([yc - half_h, xc - half_w, yc + half_h, xc + half_w], axis=1)


def nms_single_class(
    boxes: np.ndarray, scores: np.ndarray, max_output: int, score_threshold: float, iou_threshold: float
) -> np.ndarray:
    """The op's greedy NMS: indices into ``boxes`` of the kept candidates, best first.

    ``boxes`` [N, 4] float32 corners, ``scores`` [N].
    """
    scores = np.asarray(scores, np.float32)
    candidates = np.flatnonzero(scores >= np.float32(score_threshold))
    if max_output <= 0 or candidates.size == 0:
        return np.empty(0, np.int64)
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    ordered = boxes[order]
    active = np.ones(order.size, bool)
    threshold = np.float32(iou_threshold)
    kept = []
    i = 0
    while True:
        kept.append(order[i])
        if len(kept) >= max_output:
            break
        rest = ordered[i + 1:]
        active[i + 1:] &= ~(iou_one_to_many(ordered[i], rest) > threshold)
        remaining = np.flatnonzero(active[i + 1:])
        if remaining.size == 0:
            break
        i = i + 1 + remaining[0]
    return np.asarray(kept, np.int64)


def _top_classes(class_scores: np.ndarray, k: int) -> np.ndarray:
    """[A, k] indices of each row's k best classes; ties keep the lower index."""
    if k == 1:
        return np.argmax(class_scores, axis=1)[:, None]
    return np.argsort(-class_scores, axis=1, kind="stable")[:, :k]


def detection_postprocess(
    box_encodings: np.ndarray,
    class_scores: np.ndarray,
    anchors: np.ndarray,
    *,
    max_detections: int,
    max_classes_per_detection: int = 1,
    detections_per_class: int = 100,
    use_regular_nms: bool = False,
    nms_score_threshold: float,
    nms_iou_threshold: float,
    scales: Sequence[float] = DEFAULT_SCALES,
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """TFLite's ``TFLite_Detection_PostProcess`` in numpy.

    Args:
      box_encodings: [A, 4] (ty, tx, th, tw).
      class_scores: [A, C+1] activated scores, column 0 the background (or
        [A, C] without one, with ``num_classes=C``).
      anchors: [A, 4] (ycenter, xcenter, h, w), normalized.
    Returns:
      boxes [N, 4] float32 (ymin, xmin, ymax, xmax), classes [N] float32 (0-based,
      background excluded), scores [N] float32, and the number of valid
      detections; N = max_detections * max_classes_per_detection in fast mode
      and max_detections in regular mode, as the op's output tensors.
    """
    scores = np.asarray(class_scores, np.float32)
    num_classes = scores.shape[1] - 1 if num_classes is None else num_classes
    label_offset = scores.shape[1] - num_classes
    if label_offset not in (0, 1):
        raise ValueError(f"class_scores has {scores.shape[1]} columns, expected num_classes={num_classes} (+1 background)")
    if not 0.0 < nms_iou_threshold <= 1.0:
        raise ValueError(f"nms_iou_threshold {nms_iou_threshold} must be in (0, 1]")
    scores = scores[:, label_offset:]
    boxes = decode_boxes(box_encodings, anchors, scales)
    if use_regular_nms:
        return _regular(boxes, scores, max_detections, detections_per_class, nms_score_threshold, nms_iou_threshold)
    return _fast(boxes, scores, max_detections, max_classes_per_detection, nms_score_threshold, nms_iou_threshold)


def _fast(boxes, scores, max_detections, max_classes, score_threshold, iou_threshold):
    k = min(max_classes, scores.shape[1])
    top = _top_classes(scores, k)
    best = np.take_along_axis(scores, top[:, :1], axis=1)[:, 0]
    kept = nms_single_class(boxes, best, max_detections, score_threshold, iou_threshold)
    size = max_detections * max_classes
    out_boxes = np.zeros((size, 4), np.float32)
    out_classes = np.zeros(size, np.float32)
    out_scores = np.zeros(size, np.float32)
    # Slot of detection i, class rank c: i * max_classes + c (the op leaves
    # gaps when max_classes exceeds the number of classes).
    slots = (np.arange(kept.size)[:, None] * max_classes + np.arange(k)[None, :]).ravel()
    out_boxes[slots] = np.repeat(boxes[kept], k, axis=0)
    out_classes[slots] = top[kept].ravel()
    out_scores[slots] = np.take_along_axis(scores[kept], top[kept], axis=1).ravel()
    return out_boxes, out_classes, out_scores, int(kept.size)


def _regular(boxes, scores, max_detections, detections_per_class, score_threshold, iou_threshold):
    if detections_per_class <= 0:
        raise ValueError(f"detections_per_class {detections_per_class} must be positive")
    anchor_ids = np.empty(0, np.int64)
    class_ids = np.empty(0, np.int64)
    kept_scores = np.empty(0, np.float32)
    for cls in range(scores.shape[1]):
        column = scores[:, cls]
        if not (column >= np.float32(score_threshold)).any():
            continue
        selected = nms_single_class(boxes, column, detections_per_class, score_threshold, iou_threshold)
        # The op merges each class's picks after the running best list and
        # keeps the top max_detections; a stable sort fixes the tie order.
        anchor_ids = np.concatenate([anchor_ids, selected])
        class_ids = np.concatenate([class_ids, np.full(selected.size, cls)])
        kept_scores = np.concatenate([kept_scores, column[selected]])
        order = np.argsort(-kept_scores, kind="stable")[:max_detections]
        anchor_ids, class_ids, kept_scores = anchor_ids[order], class_ids[order], kept_scores[order]
    n = anchor_ids.size
    out_boxes = np.zeros((max_detections, 4), np.float32)
    out_classes = np.zeros(max_detections, np.float32)
    out_scores = np.zeros(max_detections, np.float32)
    out_boxes[:n] = boxes[anchor_ids]
    out_classes[:n] = class_ids
    out_scores[:n] = kept_scores
    return out_boxes, out_classes, out_scores, int(n)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, stable for large |x|."""
    x = np.asarray(x, np.float32)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def activate(scores: np.ndarray, activation: str, clip: float | None = None) -> np.ndarray:
    """Turns raw class outputs into scores: ``sigmoid``, ``softmax`` or ``none``.

    ``clip`` bounds raw values to [-clip, clip] first, as MediaPipe's
    ``score_clipping_thresh`` does.
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
    """int8/uint8 tensor -> float32: ``(q - zero_point) * scale``."""
    if not scale:
        return np.asarray(values, np.float32)
    return (np.asarray(values, np.float32) - np.float32(zero_point)) * np.float32(scale)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float,
    score_threshold: float = 0.0, max_output: int = 100, class_agnostic: bool = False,
) -> np.ndarray:
    """Hard NMS over [N, 4] boxes, per class unless ``class_agnostic``.

    Per-class NMS runs as one pass by moving each class's boxes to their own
    region of the plane (offset by class id times the coordinate range), so
    boxes of different classes never overlap. Returns kept indices, best first.
    """
    boxes = np.asarray(boxes, np.float32)
    if boxes.size == 0:
        return np.empty(0, np.int64)
    if not class_agnostic:
        span = np.float32(boxes.max() - boxes.min() + 1.0)
        boxes = boxes + (np.asarray(class_ids, np.float32) * span)[:, None]
    return nms_single_class(boxes, scores, max_output, score_threshold, iou_threshold)


def decode_pixel_scaled(raw_boxes: np.ndarray, anchors: np.ndarray, scales: Sequence[float],
                        xywh_order: bool = True, exponential_size: bool = False,
                        fixed_anchor_size: bool = True) -> np.ndarray:
    """MediaPipe ``TensorsToDetectionsCalculator`` box decoding (e.g. BlazeFace).

    ``raw_boxes`` [A, >=4] hold the centre offset and size in units of the
    scales (BlazeFace: x, y, w, h over 128 pixels); ``anchors`` [A, 4] are
    (ycenter, xcenter, h, w), and with ``fixed_anchor_size`` their size counts
    as 1 as MediaPipe's fixed-size anchors do. ``scales`` = (y, x, h, w).
    Returns float32 (ymin, xmin, ymax, xmax).
    """
    raw = np.asarray(raw_boxes, np.float32)[:, :4]
    if xywh_order:
        raw = raw[:, [1, 0, 3, 2]]
    anchors = np.asarray(anchors, np.float32)
    ah = np.ones(len(anchors), np.float32) if fixed_anchor_size else anchors[:, 2]
    aw = np.ones(len(anchors), np.float32) if fixed_anchor_size else anchors[:, 3]
    sy, sx, sh, sw = (np.float32(s) for s in scales)
    yc = raw[:, 0] / sy * ah + anchors[:, 0]
    xc = raw[:, 1] / sx * aw + anchors[:, 1]
    if exponential_size:
        h, w = np.exp(raw[:, 2] / sh) * ah, np.exp(raw[:, 3] / sw) * aw
    else:
        h, w = raw[:, 2] / sh * ah, raw[:, 3] / sw * aw
    return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=1).astype(np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, score_threshold: float = 0.0,
                 max_output: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-max suppression: each kept detection's box is
    the score-weighted mean of every remaining box overlapping it by more than
    ``iou_threshold`` (itself included); its score stays its own.

    Returns (boxes [K, 4], scores [K], index of each cluster's top box [K]).
    """
    boxes = np.asarray(boxes, np.float32)
    scores = np.asarray(scores, np.float32)
    remaining = np.argsort(-scores, kind="stable")
    out_boxes, out_scores, out_index = [], [], []
    while remaining.size and len(out_boxes) < max_output:
        top = remaining[0]
        if scores[top] < score_threshold:
            break
        cluster = iou_one_to_many(boxes[top], boxes[remaining]) > np.float32(iou_threshold)
        cluster[0] = True
        members = remaining[cluster]
        weights = scores[members]
        out_boxes.append((boxes[members] * weights[:, None]).sum(axis=0) / weights.sum())
        out_scores.append(scores[top])
        out_index.append(top)
        remaining = remaining[~cluster]
    return (np.array(out_boxes, np.float32).reshape(-1, 4), np.array(out_scores, np.float32),
            np.array(out_index, np.int64))
