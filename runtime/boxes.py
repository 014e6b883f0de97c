"""Box utilities on [N, 4] float arrays of (ymin, xmin, ymax, xmax) corners."""
from __future__ import annotations

import numpy as np


def area(boxes: np.ndarray) -> np.ndarray:
    """[N] areas; negative extents count as they are (callers decide)."""
    boxes = np.asarray(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box with each of [N, 4] boxes, in the boxes' dtype.

    As in TFLite's detection postprocess kernel, the IoU with a box whose area
    is zero or negative is 0 (never NaN).
    """
    dtype = boxes.dtype
    area_a = area(box)
    area_b = area(boxes)
    inter_h = np.maximum(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), dtype.type(0))
    inter_w = np.maximum(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), dtype.type(0))
    inter = inter_h * inter_w
    valid = (area_a > 0) & (area_b > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (area_a + area_b - inter)
    return np.where(valid, iou, dtype.type(0))


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """[N, M] IoU between two sets of boxes (0 where either box is empty)."""
    a = np.asarray(boxes_a, np.float64)
    b = np.asarray(boxes_b, np.float64)
    inter_h = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    inter_w = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = inter_h * inter_w
    area_a, area_b = area(a)[:, None], area(b)[None, :]
    union = area_a + area_b - inter
    valid = (area_a > 0) & (area_b > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(valid, inter / union, 0.0)


def clip(boxes: np.ndarray, lower: float = 0.0, upper: float = 1.0) -> np.ndarray:
    return np.clip(boxes, lower, upper)


def scale_to_pixels(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Normalized corners -> pixel corners of an image of the given size."""
    return np.asarray(boxes, np.float32) * np.array([height, width, height, width], np.float32)
