"""TFLite's ``TFLite_Detection_PostProcess`` custom op in numpy, bit for bit.

``detection_postprocess`` reproduces the op
(tensorflow/lite/kernels/detection_postprocess.cc), so a model exported
without the op gives the same detections through the runtime (``Decoder``)
as with it. Its parts are shared: box decoding is ``box_coder``'s, the
greedy suppression ``nms``'s. The kernel's rules it follows:

- boxes decode with double intermediates rounded to float32 (centres and
  half sizes), and are never clipped;
- a score passes when ``score >= nms_score_threshold``; a candidate is
  suppressed when ``IoU > nms_iou_threshold`` (strictly), IoU in float32, and
  the IoU with a box of zero or negative area is 0;
- NMS visits candidates in stable descending score order (ties: lower
  anchor first); an anchor's top class is its first maximum;
- fast mode runs one NMS over each anchor's best class score and writes the
  top ``max_classes_per_detection`` classes of each kept anchor at slots
  ``i * max_classes_per_detection + rank``; ``num_detections`` counts anchors;
- regular mode runs NMS per class (at most ``detections_per_class`` each)
  and keeps the ``max_detections`` best over all classes;
- class ids exclude the background column 0; every array is float32.

Equal scores: NMS and the regular-mode merge of classes are stable (lower
anchor, then lower class first; LiteRT's kernel merges classes with
``std::inplace_merge``). The top ``max_classes_per_detection > 1`` classes of
an anchor come from ``std::partial_sort``, whose order for equal scores is the
C++ library's: this module replays libstdc++'s heap algorithm, which the Linux
ai-edge-litert wheels run. (Older TFLite kernels, e.g. tflite-runtime 2.14,
also merged classes with ``std::partial_sort``, so tied regular-mode scores
may come out in another order there; LiteRT with several threads merges
classes in thread order.)

Unused output slots are zeros. The kernel writes them as zeros in regular
mode but leaves them unwritten in fast mode (there they keep whatever the
previous invocation wrote): only the first ``num_detections`` rows (times
``max_classes_per_detection``) of the op's outputs mean anything.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .box_coder import SSD_SCALES, decode_center_size
from .nms import greedy

# boxes [N, 4], classes [N] and scores [N] (float32, the op's outputs), and the number of valid rows.
OpOutputs = tuple[np.ndarray, np.ndarray, np.ndarray, int]


def _libstdcxx_partial_argsort(values: Sequence[float], k: int) -> list[int]:
    """Indices of the ``k`` largest ``values``, in the order the kernel's
    ``DecreasingPartialArgSort`` gives them with libstdc++.

    ``k == 1`` is the kernel's ``ArgMaxVector`` (first maximum); otherwise
    ``std::partial_sort`` with ``values[i] > values[j]``: a heap select, then
    a heap sort, neither stable. Replayed step for step because equal values
    come out in the heap's order. Pure Python: only used on one anchor's
    class scores when they tie.
    """
    if k == 1:
        best = max(values)
        return [next(i for i, v in enumerate(values) if v == best)]
    idx = list(range(len(values)))

    def adjust_heap(hole: int, length: int, value: int) -> None:
        top = child = hole
        while child < (length - 1) // 2:
            child = 2 * (child + 1)
            if values[idx[child]] > values[idx[child - 1]]:
                child -= 1
            idx[hole] = idx[child]
            hole = child
        if length % 2 == 0 and child == (length - 2) // 2:
            child = 2 * (child + 1)
            idx[hole] = idx[child - 1]
            hole = child - 1
        parent = (hole - 1) // 2
        while hole > top and values[idx[parent]] > values[value]:
            idx[hole] = idx[parent]
            hole = parent
            parent = (hole - 1) // 2
        idx[hole] = value

    for parent in range((k - 2) // 2, -1, -1):  # make_heap
        adjust_heap(parent, k, idx[parent])
    for i in range(k, len(idx)):  # heap_select
        if values[idx[i]] > values[idx[0]]:
            value, idx[i] = idx[i], idx[0]
            adjust_heap(0, k, value)
    for last in range(k - 1, 0, -1):  # sort_heap
        value, idx[last] = idx[last], idx[0]
        adjust_heap(0, last, value)
    return idx[:k]


def _has_ties(sorted_desc: np.ndarray) -> np.ndarray:
    """Per row of [..., n] values sorted descending: whether two are equal."""
    return (sorted_desc[..., 1:] == sorted_desc[..., :-1]).any(axis=-1)


def _top_classes(rows: np.ndarray, k: int) -> np.ndarray:
    """[N, k] class indices of each row's k best scores, in the kernel's order."""
    if k == 1:
        return np.argmax(rows, axis=1)[:, None]
    order = np.argsort(-rows, axis=1, kind="stable")
    top = order[:, :k]
    # Only equal values among the k + 1 best make the order library-defined.
    best = np.take_along_axis(rows, order[:, :k + 1], axis=1)
    for row in np.flatnonzero(_has_ties(best)):
        top[row] = _libstdcxx_partial_argsort(rows[row].tolist(), k)
    return top


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
    scales: Sequence[float] = SSD_SCALES,
) -> OpOutputs:
    """TFLite's ``TFLite_Detection_PostProcess`` in numpy.

    Args:
      box_encodings: [A, 4] (ty, tx, th, tw), float.
      class_scores: [A, C+1] activated scores, column 0 the background.
      anchors: [A, 4] (ycenter, xcenter, h, w), normalized.
      detections_per_class: regular mode's per-class cap. NB: TF's converter
        (2.20 included) does not write it into the op, whose kernel then uses
        100; pass what the op really holds when comparing.
    Returns:
      boxes [N, 4] float32 (ymin, xmin, ymax, xmax), classes [N] float32
      (0-based, background excluded), scores [N] float32, and the number of
      valid detections (an int); N = max_detections * max_classes_per_detection
      in fast mode and max_detections in regular mode, the op's output sizes.
    """
    scores = np.asarray(class_scores, np.float32)
    encodings = np.asarray(box_encodings)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"class_scores has shape {scores.shape}, expected [anchors, classes + 1 background]")
    if encodings.ndim != 2 or encodings.shape[1] < 4 or encodings.shape[0] != scores.shape[0]:
        raise ValueError(f"box_encodings has shape {encodings.shape}, expected [{scores.shape[0]}, 4]")
    if np.shape(anchors) != (scores.shape[0], 4):
        raise ValueError(f"anchors has shape {np.shape(anchors)}, expected [{scores.shape[0]}, 4]")
    if not 0.0 < nms_iou_threshold <= 1.0:
        raise ValueError(f"nms_iou_threshold {nms_iou_threshold} must be in (0, 1]")
    if max_detections < 0:
        raise ValueError(f"max_detections {max_detections} must be >= 0")
    anchors = np.asarray(anchors, np.float32)
    if use_regular_nms:
        if detections_per_class <= 0:
            raise ValueError(f"detections_per_class {detections_per_class} must be positive")
        return _regular(encodings, anchors, scales, scores, max_detections, detections_per_class,
                        nms_score_threshold, nms_iou_threshold)
    if max_classes_per_detection <= 0:
        raise ValueError(f"max_classes_per_detection {max_classes_per_detection} must be positive")
    return _fast(encodings, anchors, scales, scores, max_detections, max_classes_per_detection,
                 nms_score_threshold, nms_iou_threshold)


def _candidates(scores: np.ndarray, score_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(anchor, class) ids of the [A, C+1] scores >= the threshold, background
    excluded, anchor-major. On the flat array: a 2-D ``np.nonzero`` is 3x
    slower at 1917 x 92."""
    flat = np.flatnonzero(scores.ravel() >= np.float32(score_threshold))
    anchor_ids, class_ids = np.divmod(flat, scores.shape[1])
    foreground = class_ids > 0
    return anchor_ids[foreground], class_ids[foreground] - 1


def _fast(encodings, anchors, scales, scores, max_detections, max_classes, score_threshold, iou_threshold):
    threshold = np.float32(score_threshold)
    hits = scores >= threshold
    flat = np.flatnonzero(hits)
    if flat.size <= len(scores):  # a trained detector: few hits, walk them (4x faster than a max)
        anchor_ids, class_ids = np.divmod(flat, scores.shape[1])
        anchor_ids = anchor_ids[class_ids > 0]  # ascending, so unique by neighbours
        candidates = anchor_ids[np.concatenate(([True], anchor_ids[1:] != anchor_ids[:-1]))] \
            if anchor_ids.size else anchor_ids
        best = scores[candidates, 1:].max(axis=1, initial=-np.inf)
    else:  # dense scores: every anchor's best class once, no [hits] index arrays
        best = scores[:, 1:].max(axis=1)
        candidates = np.flatnonzero(best >= threshold)
        best = best[candidates]
    order = candidates[np.argsort(-best, kind="stable")]
    # Only the candidates the greedy pass reaches are decoded: decoding is
    # elementwise, so their bits are the kernel's.
    decoded = np.empty((order.size, 4), np.float32)

    def decode(at: np.ndarray) -> np.ndarray:
        decoded[at] = decode_center_size(encodings[order[at]], anchors[order[at]], scales)
        return decoded[at]

    visited = greedy(decode, iou_threshold, max_detections, count=order.size)
    kept = order[visited]
    boxes = decoded[visited]
    kept_scores = scores[kept, 1:]
    k = min(max_classes, scores.shape[1] - 1)
    if max_classes == 1:  # the default: one slot per detection, its best class (the kernel's first maximum)
        out_boxes = np.zeros((max_detections, 4), np.float32)
        out_boxes[:kept.size] = boxes
        best_class = kept_scores.argmax(axis=1)
        out_classes = np.zeros(max_detections, np.float32)
        out_classes[:kept.size] = best_class
        out_scores = np.zeros(max_detections, np.float32)
        out_scores[:kept.size] = kept_scores[np.arange(kept.size), best_class]
        return out_boxes, out_classes, out_scores, int(kept.size)
    top = _top_classes(kept_scores, k)
    size = max_detections * max_classes
    out_boxes = np.zeros((size, 4), np.float32)
    out_classes = np.zeros(size, np.float32)
    out_scores = np.zeros(size, np.float32)
    # Detection i, class rank r goes to slot i * max_classes + r (gaps when
    # max_classes exceeds the number of classes, as in the kernel).
    slots = (np.arange(kept.size)[:, None] * max_classes + np.arange(k)[None, :]).ravel()
    out_boxes[slots] = np.repeat(boxes, k, axis=0)
    out_classes[slots] = top.ravel()
    out_scores[slots] = np.take_along_axis(kept_scores, top, axis=1).ravel()
    return out_boxes, out_classes, out_scores, int(kept.size)


def _regular(encodings, anchors, scales, scores, max_detections, per_class, score_threshold, iou_threshold):
    anchor_ids, class_ids = _candidates(scores, score_threshold)
    values = scores[anchor_ids, class_ids + 1]
    # Per-class NMS merged stably by score is one greedy pass over all
    # candidates in (score, class, anchor) order where a box only suppresses
    # its own class, stopped after max_detections picks. Sorting and decoding
    # every candidate dominates at low thresholds (10x at 70% of 1917 x 91),
    # so the pass first runs on the best few: exact when that prefix is closed
    # under ties, and it grows until it yields enough picks.
    limit = 8 * (max_detections + 1)
    while True:
        if limit < values.size:
            prefix = values >= np.partition(values, values.size - limit)[values.size - limit]
            result = _regular_pass(encodings, anchors, scales, anchor_ids[prefix], class_ids[prefix],
                                   values[prefix], max_detections, per_class, iou_threshold)
        else:
            result = _regular_pass(encodings, anchors, scales, anchor_ids, class_ids, values,
                                   max_detections, per_class, iou_threshold)
        if result[3] >= max_detections or limit >= values.size:
            return result
        limit *= 4


def _regular_pass(encodings, anchors, scales, anchor_ids, class_ids, values, max_detections, per_class,
                  iou_threshold) -> OpOutputs:
    order = np.lexsort((anchor_ids, class_ids, -values))
    anchor_ids, class_ids, values = anchor_ids[order], class_ids[order], values[order]
    boxes = decode_center_size(encodings[anchor_ids], anchors[anchor_ids], scales)
    kept = greedy(boxes, iou_threshold, max_detections, class_ids, per_class)
    n = kept.size
    out_boxes = np.zeros((max_detections, 4), np.float32)
    out_classes = np.zeros(max_detections, np.float32)
    out_scores = np.zeros(max_detections, np.float32)
    out_boxes[:n] = boxes[kept]
    out_classes[:n] = class_ids[kept]
    out_scores[:n] = values[kept]
    return out_boxes, out_classes, out_scores, int(n)


