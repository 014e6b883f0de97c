"""How far one model's detections agree with a reference model's, on the same images.

The measure needs no labels: a quantized model against its float twin
(the quantization report), an exported file against its SavedModel
(``ssdkit verify``), an imported model against the framework it came from.
Detections scoring at least ``min_score`` on each side are matched one to
one, per image and class, greedily by IoU (the highest pairs first), a pair
counting at IoU >= ``iou_threshold``:

- recall: the share of the reference's detections the candidate finds;
- precision: the share of the candidate's detections the reference has;
- mean IoU of the matched pairs (how well the boxes agree where both fire).

Both sides are thresholded alike, so a detection near ``min_score`` can fall
on either side of it in one model and not the other; that is part of what
quantization changes, and counts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ssdkit.runtime.boxes import iou_matrix

# (boxes [N, 4] ymin, xmin, ymax, xmax; class ids [N]; scores [N]) of one image:
# ``evaluation.evaluate.Prediction``.
Detections = tuple[np.ndarray, np.ndarray, np.ndarray]

MIN_SCORE = 0.5
MIN_IOU = 0.5


@dataclass(frozen=True)
class Agreement:
    precision: float  # 1.0 when the candidate has no detections
    recall: float  # 1.0 when the reference has no detections
    mean_iou: float  # over matched pairs; 0.0 when none
    matched: int
    reference: int  # reference detections scoring at least min_score
    candidate: int  # candidate detections scoring at least min_score
    min_score: float
    min_iou: float

    def as_dict(self, digits: int = 4) -> dict:
        return {k: round(v, digits) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _match(ref_boxes: np.ndarray, boxes: np.ndarray, min_iou: float) -> list[float]:
    """IoUs of greedy one-to-one matches at IoU >= ``min_iou``, the best pairs first."""
    if len(ref_boxes) == 0 or len(boxes) == 0:
        return []
    ious = iou_matrix(ref_boxes, boxes)
    rows, cols = np.nonzero(ious >= min_iou)
    order = np.argsort(-ious[rows, cols], kind="stable")
    used_ref, used_cand, matched = set(), set(), []
    for r, c in zip(rows[order], cols[order]):
        if r not in used_ref and c not in used_cand:
            used_ref.add(r)
            used_cand.add(c)
            matched.append(float(ious[r, c]))
    return matched


def detection_agreement(reference: Sequence[Detections], candidate: Sequence[Detections],
                        min_score: float = MIN_SCORE, min_iou: float = MIN_IOU) -> Agreement:
    """``candidate``'s detections against ``reference``'s, image by image
    (the two sequences hold the same images in the same order)."""
    if len(reference) != len(candidate):
        raise ValueError(f"detections of {len(candidate)} images to compare with the reference's {len(reference)}")
    ious: list[float] = []
    total_ref = total_cand = 0
    for (ref_boxes, ref_classes, ref_scores), (boxes, classes, scores) in zip(reference, candidate):
        ref_keep, keep = np.asarray(ref_scores) >= min_score, np.asarray(scores) >= min_score
        ref_boxes, ref_classes = np.asarray(ref_boxes).reshape(-1, 4)[ref_keep], np.asarray(ref_classes)[ref_keep]
        boxes, classes = np.asarray(boxes).reshape(-1, 4)[keep], np.asarray(classes)[keep]
        total_ref, total_cand = total_ref + len(ref_boxes), total_cand + len(boxes)
        for cls in np.intersect1d(ref_classes, classes):
            ious += _match(ref_boxes[ref_classes == cls], boxes[classes == cls], min_iou)
    matched = len(ious)
    return Agreement(precision=matched / total_cand if total_cand else 1.0,
                     recall=matched / total_ref if total_ref else 1.0,
                     mean_iou=float(np.mean(ious)) if ious else 0.0,
                     matched=matched, reference=total_ref, candidate=total_cand,
                     min_score=min_score, min_iou=min_iou)
