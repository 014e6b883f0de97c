"""Anchor matching and regression/classification targets (OD API semantics), numpy.

The OD API's ``ArgMaxMatcher`` with ``matched_threshold = unmatched_threshold
= 0.5`` and ``force_match_for_each_row``: each anchor takes the ground-truth
box it overlaps most if that IoU is at least 0.5, else the background; then
every ground-truth box also claims the anchor it overlaps most, so no object
goes without a positive. Anchors that would match a crowd box are ignored
(weight 0) rather than called background.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssdkit.runtime.box_coder import encode
from ssdkit.runtime.boxes import iou_matrix

UNMATCHED = -1
IGNORED = -2


@dataclass(frozen=True)
class Targets:
    box_targets: np.ndarray  # [A, 4] encoded, zeros where unmatched
    class_targets: np.ndarray  # [A, C+1] one-hot, column 0 background
    box_weights: np.ndarray  # [A] 1 for matched anchors
    class_weights: np.ndarray  # [A] 0 for ignored anchors
    matches: np.ndarray  # [A] ground-truth index, UNMATCHED or IGNORED


def match(gt_boxes: np.ndarray, anchors: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """[A] index of each anchor's ground truth, or UNMATCHED."""
    matches = np.full(len(anchors), UNMATCHED, np.int64)
    if len(gt_boxes) == 0:
        return matches
    iou = iou_matrix(gt_boxes, anchors)  # [G, A]
    best_gt = iou.argmax(axis=0)
    matched = iou.max(axis=0) >= threshold
    matches[matched] = best_gt[matched]
    # Force: each ground truth keeps its best anchor (a later row wins a shared anchor).
    for g, a in enumerate(iou.argmax(axis=1)):
        matches[a] = g
    return matches


def assign(gt_boxes: np.ndarray, gt_classes: np.ndarray, anchors: np.ndarray, num_classes: int,
           scales=(10.0, 10.0, 5.0, 5.0), crowd: np.ndarray | None = None, threshold: float = 0.5) -> Targets:
    """Targets for one image; ``gt_classes`` are 0-based, ``anchors`` corners."""
    crowd = np.zeros(len(gt_boxes), bool) if crowd is None else np.asarray(crowd, bool)
    gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    regular = ~crowd
    kept = np.flatnonzero(regular)
    matches = match(gt_boxes[kept], anchors, threshold)
    matches = np.where(matches >= 0, kept[np.maximum(matches, 0)] if kept.size else matches, matches)
    if crowd.any():
        crowd_iou = iou_matrix(gt_boxes[crowd], anchors).max(axis=0)
        matches[(matches == UNMATCHED) & (crowd_iou >= threshold)] = IGNORED
    positive = matches >= 0
    box_targets = np.zeros((len(anchors), 4), np.float32)
    if positive.any():
        box_targets[positive] = encode(gt_boxes[matches[positive]], anchors[positive], scales)
    class_targets = np.zeros((len(anchors), num_classes + 1), np.float32)
    class_targets[~positive, 0] = 1.0
    class_targets[positive, 0] = 0.0
    class_targets[np.flatnonzero(positive), np.asarray(gt_classes)[matches[positive]] + 1] = 1.0
    return Targets(box_targets, class_targets, positive.astype(np.float32),
                   (matches != IGNORED).astype(np.float32), matches)
