"""The shared postprocessing for every backend: decode, activate, NMS. numpy only.

``detection_postprocess`` reproduces TFLite's ``TFLite_Detection_PostProcess``
custom op (tensorflow/lite/kernels/detection_postprocess.cc) bit for bit, so
a model exported without the op gives the same detections through this
module as with it. The kernel's rules it follows:

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

from .boxes import iou

DEFAULT_SCALES = (10.0, 10.0, 5.0, 5.0)

Detections = tuple[np.ndarray, np.ndarray, np.ndarray, int]


def decode_boxes(box_encodings: np.ndarray, anchors: np.ndarray, scales: Sequence[float] = DEFAULT_SCALES) -> np.ndarray:
    """[A, >=4] (ty, tx, th, tw) against [A, 4] (yc, xc, h, w) anchors -> [A, 4] float32 corners.

    The kernel computes centres and half sizes in double, rounds each to
    float32, then subtracts in float32; ``box_coder.decode_center_size``
    subtracts before rounding, which differs in the last bit, so the op's
    order is spelled out here.
    """
    codes = np.asarray(box_encodings, np.float32)[:, :4].astype(np.float64)
    anc = np.asarray(anchors, np.float32).astype(np.float64)
    divisors = np.array([float(np.float32(s)) for s in scales])
    # Columns (y, x) at once: the same double operations as the kernel, in its order.
    centres = (codes[:, :2] / divisors[:2] * anc[:, 2:] + anc[:, :2]).astype(np.float32)
    halves = (0.5 * np.exp(codes[:, 2:4] / divisors[2:]) * anc[:, 2:]).astype(np.float32)
    return np.concatenate([centres - halves, centres + halves], axis=1)


def nms_single_class(
    boxes: np.ndarray, scores: np.ndarray, max_output: int, score_threshold: float, iou_threshold: float
) -> np.ndarray:
    """The kernel's greedy NMS: [K] int64 indices into ``boxes`` of the kept candidates, best first.

    ``boxes`` [N, 4] corners (float32 for the kernel's rounding), ``scores``
    [N]. Candidates are ``scores >= score_threshold`` in stable descending
    order; each kept box removes the later ones with IoU > ``iou_threshold``.
    """
    scores = np.asarray(scores, np.float32)
    candidates = np.flatnonzero(scores >= np.float32(score_threshold))
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    return order[_greedy(np.asarray(boxes)[order], iou_threshold, max_output)]


# Candidates per IoU matrix in ``_greedy``: a 256 x 256 matrix costs about as
# much as 20 one-box-against-all rows (measured on x86, numpy 2.4).
_CHUNK = 256


def _bit_rows(matrix: np.ndarray) -> list[int]:
    """Each row of a boolean [n, m] matrix as a Python int, bit j = column j."""
    packed = np.packbits(matrix, axis=1, bitorder="little")
    if packed.shape[1] <= 8:  # up to 64 columns: one uint64 per row, converted in one call
        words = np.zeros((len(packed), 8), np.uint8)
        words[:, :packed.shape[1]] = packed
        return words.view("<u8")[:, 0].tolist()
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def _greedy(boxes: np.ndarray, iou_threshold: float, want: int,
            classes: np.ndarray | None = None, per_class: int | None = None) -> np.ndarray:
    """Greedy suppression over [N, 4] ``boxes`` already in visiting order:
    positions of the first ``want`` kept boxes. A kept box removes the later
    ones with IoU > ``iou_threshold`` (of its own class when ``classes`` [N] is
    given; then each class keeps at most ``per_class``).

    Works a chunk of candidates at a time: one IoU matrix for the chunk, a
    pure-Python pass over bit masks, then one matrix of the new keeps against
    the rest. Exact, since only kept boxes suppress.
    """
    threshold = np.float32(iou_threshold)
    alive = np.arange(len(boxes))
    kept: list[int] = []
    counts: dict[int, int] = {}
    while len(kept) < want and alive.size:
        chunk, rest = alive[:_CHUNK], alive[_CHUNK:]
        cb = boxes[chunk]
        suppress = iou(cb[:, None], cb[None]) > threshold
        same = None if classes is None else classes[chunk][:, None] == classes[chunk][None]
        if same is not None:
            suppress &= same
        rows = _bit_rows(suppress)
        class_rows = None if same is None else _bit_rows(same)
        removed = 0
        new = []
        for i in range(chunk.size):
            if removed >> i & 1:
                continue
            new.append(i)
            if len(kept) + len(new) == want:
                break
            removed |= rows[i]
            if class_rows is not None:
                cls = int(classes[chunk[i]])
                counts[cls] = counts.get(cls, 0) + 1
                if counts[cls] >= per_class:
                    removed |= class_rows[i]
        kept.extend(chunk[new].tolist())
        if len(kept) >= want:
            break
        if classes is not None:
            full = [c for c, n in counts.items() if n >= per_class]
            rest = rest[~np.isin(classes[rest], full)] if full else rest
        if new and rest.size:
            hit = iou(cb[new][:, None], boxes[rest][None]) > threshold
            if classes is not None:
                hit &= classes[chunk[new]][:, None] == classes[rest][None]
            rest = rest[~hit.any(axis=0)]
        alive = rest
    return np.asarray(kept, np.int64)


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
    scales: Sequence[float] = DEFAULT_SCALES,
) -> Detections:
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
    hits = scores >= np.float32(score_threshold)
    flat = np.flatnonzero(hits)
    if flat.size <= len(scores):  # a trained detector: few hits, walk them (4x faster than a row-wise any)
        anchor_ids, class_ids = np.divmod(flat, scores.shape[1])
        anchor_ids = anchor_ids[class_ids > 0]  # ascending, so unique by neighbours
        candidates = anchor_ids[np.concatenate(([True], anchor_ids[1:] != anchor_ids[:-1]))] \
            if anchor_ids.size else anchor_ids
    else:
        candidates = np.flatnonzero(hits[:, 1:].any(axis=1))
    class_scores = scores[candidates, 1:]
    best = class_scores.max(axis=1, initial=-np.inf)
    order = np.argsort(-best, kind="stable")
    # Only candidates are decoded: decoding is elementwise, so their bits are the kernel's.
    boxes = decode_boxes(encodings[candidates[order]], anchors[candidates[order]], scales)
    visited = _greedy(boxes, iou_threshold, max_detections)
    kept = order[visited]
    k = min(max_classes, scores.shape[1] - 1)
    if max_classes == 1:  # the default: one slot per detection, its best class (the kernel's first maximum)
        out_boxes = np.zeros((max_detections, 4), np.float32)
        out_boxes[:kept.size] = boxes[visited]
        kept_scores = class_scores[kept]
        best_class = kept_scores.argmax(axis=1)
        out_classes = np.zeros(max_detections, np.float32)
        out_classes[:kept.size] = best_class
        out_scores = np.zeros(max_detections, np.float32)
        out_scores[:kept.size] = kept_scores[np.arange(kept.size), best_class]
        return out_boxes, out_classes, out_scores, int(kept.size)
    top = _top_classes(class_scores[kept], k)
    size = max_detections * max_classes
    out_boxes = np.zeros((size, 4), np.float32)
    out_classes = np.zeros(size, np.float32)
    out_scores = np.zeros(size, np.float32)
    # Detection i, class rank r goes to slot i * max_classes + r (gaps when
    # max_classes exceeds the number of classes, as in the kernel).
    slots = (np.arange(kept.size)[:, None] * max_classes + np.arange(k)[None, :]).ravel()
    out_boxes[slots] = np.repeat(boxes[visited], k, axis=0)
    out_classes[slots] = top.ravel()
    out_scores[slots] = np.take_along_axis(class_scores[kept], top, axis=1).ravel()
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
                  iou_threshold) -> Detections:
    order = np.lexsort((anchor_ids, class_ids, -values))
    anchor_ids, class_ids, values = anchor_ids[order], class_ids[order], values[order]
    boxes = decode_boxes(encodings[anchor_ids], anchors[anchor_ids], scales)
    kept = _greedy(boxes, iou_threshold, max_detections, class_ids, per_class)
    n = kept.size
    out_boxes = np.zeros((max_detections, 4), np.float32)
    out_classes = np.zeros(max_detections, np.float32)
    out_scores = np.zeros(max_detections, np.float32)
    out_boxes[:n] = boxes[kept]
    out_classes[:n] = class_ids[kept]
    out_scores[:n] = values[kept]
    return out_boxes, out_classes, out_scores, int(n)


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


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float,
    score_threshold: float = 0.0, max_output: int = 100, class_agnostic: bool = False,
) -> np.ndarray:
    """Hard NMS over [N, 4] corners with [N] scores and [N] integer class ids,
    per class unless ``class_agnostic``; the kernel's rules (score >= threshold,
    IoU > threshold suppresses, stable order). Returns kept indices, best first.

    Per-class NMS runs as one pass by moving each class's boxes to their own
    region of the plane (offset by class id times a whole number above the
    coordinate span), so boxes of different classes never overlap. Offsets
    are integers added in float64: exact for dyadic coordinates, and at most
    2^-52 relative rounding otherwise.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if boxes.size == 0:
        return np.empty(0, np.int64)
    if not class_agnostic:
        span = np.ceil(boxes.max() - boxes.min()) + 1.0
        boxes = boxes + (np.asarray(class_ids, np.float64) * span)[:, None]
    return nms_single_class(boxes, scores, max_output, score_threshold, iou_threshold)


def decode_pixel_scaled(raw_boxes: np.ndarray, anchors: np.ndarray, scales: Sequence[float],
                        reverse_output_order: bool = True, apply_exponential_on_box_size: bool = False,
                        fixed_anchor_size: bool = True) -> np.ndarray:
    """MediaPipe's ``TensorsToDetectionsCalculator`` box decoding (BlazeFace, palm, pose).

    ``raw_boxes`` [A, >=4] hold the centre offset and size relative to
    ``scales`` = (y_scale, x_scale, h_scale, w_scale), usually the input size
    in pixels: ``yc = y / y_scale * anchor_h + anchor_yc``, ``h = h / h_scale *
    anchor_h`` (``exp(h / h_scale) * anchor_h`` with
    ``apply_exponential_on_box_size``). ``reverse_output_order`` means the
    model writes x, y, w, h (MediaPipe's option of that name). ``anchors`` [A, 4]
    are (ycenter, xcenter, h, w); with ``fixed_anchor_size`` their sizes
    count as 1, as MediaPipe's SSD anchor calculator writes them.
    Returns [A, 4] float32 (ymin, xmin, ymax, xmax), unclipped.
    """
    raw = np.asarray(raw_boxes, np.float32)[:, :4]
    if reverse_output_order:
        raw = raw[:, [1, 0, 3, 2]]
    anchors = np.asarray(anchors, np.float32)
    ah = np.ones(len(anchors), np.float32) if fixed_anchor_size else anchors[:, 2]
    aw = np.ones(len(anchors), np.float32) if fixed_anchor_size else anchors[:, 3]
    sy, sx, sh, sw = (np.float32(s) for s in scales)
    yc = raw[:, 0] / sy * ah + anchors[:, 0]
    xc = raw[:, 1] / sx * aw + anchors[:, 1]
    if apply_exponential_on_box_size:
        h, w = np.exp(raw[:, 2] / sh) * ah, np.exp(raw[:, 3] / sw) * aw
    else:
        h, w = raw[:, 2] / sh * ah, raw[:, 3] / sw * aw
    half = np.float32(2)
    return np.stack([yc - h / half, xc - w / half, yc + h / half, xc + w / half], axis=1).astype(np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
                 score_threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-max suppression over [N, 4] corners and [N] scores.

    Repeatedly: the best remaining detection (if its score >= ``score_threshold``
    when that is > 0) takes every remaining box with IoU > ``iou_threshold``
    with it (itself included), and its box becomes their score-weighted mean
    corners; its score stays its own. As in MediaPipe, a top box that takes
    nothing (zero area, so IoU 0 even with itself) is output as it is and ends
    the loop. Returns (boxes [K, 4] float32, scores [K], index of each top box [K]).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32)
    remaining = np.argsort(-scores, kind="stable")
    out_boxes, out_index = [], []
    while remaining.size:
        top = remaining[0]
        if score_threshold > 0 and scores[top] < np.float32(score_threshold):
            break
        cluster = iou(boxes[top], boxes[remaining]) > np.float32(iou_threshold)
        out_index.append(top)
        if not cluster.any():
            out_boxes.append(boxes[top])
            break
        members = remaining[cluster]
        weights = scores[members]
        out_boxes.append((boxes[members] * weights[:, None]).sum(axis=0) / weights.sum())
        remaining = remaining[~cluster]
    index = np.asarray(out_index, np.int64)
    return np.asarray(out_boxes, np.float32).reshape(-1, 4), scores[index], index
