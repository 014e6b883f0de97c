"""Non-max suppression on [N, 4] corner boxes, numpy only: the greedy core
TFLite's kernel runs (``nms``, shared with the op replica in
``tflite_postprocess.py``), per-class NMS by coordinate offsets
(``batched_nms``) and MediaPipe's weighted NMS (``weighted_nms``).

The rules are the kernel's everywhere: a candidate passes when
``score >= score_threshold``; a kept box suppresses the later ones with
``IoU > iou_threshold`` (strictly), IoU in the boxes' dtype (float32 gives the
kernel's bits, ``boxes.iou``); candidates are visited in stable descending
score order (ties: lower index first).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .boxes import iou


def nms(
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
    return order[greedy(np.asarray(boxes)[order], iou_threshold, max_output)]


# Candidates per step of ``greedy``: 64 fit one machine word per bit-mask row,
# and a trained detector's candidates usually fit one step. Larger steps
# waste work once enough boxes are kept (dense scores keep 100 of the first
# ~150); smaller ones pay numpy's per-call cost more often.
_CHUNK = 64


def _bit_rows(matrix: np.ndarray) -> list[int]:
    """Each row of a boolean [n, m] matrix as a Python int, bit j = column j."""
    packed = np.packbits(matrix, axis=1, bitorder="little")
    if packed.shape[1] <= 8:  # up to 64 columns: one uint64 per row, converted in one call
        words = np.zeros((len(packed), 8), np.uint8)
        words[:, :packed.shape[1]] = packed
        return words.view("<u8")[:, 0].tolist()
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def _overlaps(a: np.ndarray, b: np.ndarray | None, threshold: np.float32) -> np.ndarray:
    """[k, m] ``IoU > threshold`` of [k, 4] against [m, 4] corners (``b``
    None: ``a`` against itself). ``boxes.iou``'s arithmetic operation for
    operation, so float32 boxes give the kernel's bits, in fewer numpy calls
    (their overhead dominates at a few dozen boxes): both extents in one
    [2, k, m] array, areas once, and the mask for boxes of non-positive area
    only when there is one."""
    cols_a = np.ascontiguousarray(a.T)  # [4, k]: ymin, xmin, ymax, xmax
    sides_a = cols_a[2:] - cols_a[:2]
    area_a = sides_a[0] * sides_a[1]
    if b is None:
        cols_b, area_b = cols_a, area_a
    else:
        cols_b = np.ascontiguousarray(b.T)
        sides_b = cols_b[2:] - cols_b[:2]
        area_b = sides_b[0] * sides_b[1]
    extent = np.minimum(cols_a[2:, :, None], cols_b[2:, None, :])
    extent -= np.maximum(cols_a[:2, :, None], cols_b[:2, None, :])
    np.maximum(extent, a.dtype.type(0), out=extent)
    inter = extent[0] * extent[1]
    union = area_a[:, None] + area_b[None, :]
    union -= inter
    with np.errstate(divide="ignore", invalid="ignore"):
        hit = np.divide(inter, union, out=union) > threshold
    positive_a = area_a > 0
    positive_b = positive_a if b is None else area_b > 0
    if not (positive_a.all() and positive_b.all()):  # the IoU with such a box is 0
        hit &= positive_a[:, None] & positive_b[None, :]
    return hit


def greedy(boxes: np.ndarray | Callable[[np.ndarray], np.ndarray], iou_threshold: float, want: int,
           classes: np.ndarray | None = None, per_class: int | None = None, count: int | None = None) -> np.ndarray:
    """Greedy suppression over [N, 4] ``boxes`` already in visiting order (the
    core of every hard NMS here and of the op replica):
    positions of the first ``want`` kept boxes. A kept box removes the later
    ones with IoU > ``iou_threshold`` (of its own class when ``classes`` [N] is
    given; then each class keeps at most ``per_class``).

    ``boxes`` may be a function from positions to their [n, 4] boxes (with
    ``count`` = N), so a caller decodes only the candidates the pass reaches:
    with dense scores, 100 boxes are kept long before the last candidate.

    Visits ``_CHUNK`` candidates at a time: drops those a box kept so far
    suppresses (one [kept, chunk] IoU matrix), then a pure-Python pass over
    the bit masks of the chunk's own IoU matrix. Exact, since only kept boxes
    suppress and every kept box is checked against every later candidate.
    """
    if callable(boxes):
        box_of, total = boxes, int(count)
    else:
        array = np.asarray(boxes)
        box_of, total = array.__getitem__, len(array)
    threshold = np.float32(iou_threshold)
    kept: list[int] = []
    kept_boxes: list[np.ndarray] = []
    counts: dict[int, int] = {}
    full: list[int] = []  # classes at their cap
    start = 0
    while len(kept) < want and start < total:
        chunk = np.arange(start, min(start + _CHUNK, total))
        start += _CHUNK
        if full:
            chunk = chunk[~np.isin(classes[chunk], full)]
        cb = box_of(chunk)
        if kept_boxes and chunk.size:
            previous = np.concatenate(kept_boxes)
            hit = _overlaps(previous, cb, threshold)
            if classes is not None:
                hit &= classes[kept][:, None] == classes[chunk][None]
            alive = ~hit.any(axis=0)
            chunk, cb = chunk[alive], cb[alive]
        if not chunk.size:
            continue
        suppress = _overlaps(cb, None, threshold)
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
                    full.append(cls)
        kept.extend(chunk[new].tolist())
        kept_boxes.append(cb[new])
    return np.asarray(kept, np.int64)


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
    return nms(boxes, scores, max_output, score_threshold, iou_threshold)


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
