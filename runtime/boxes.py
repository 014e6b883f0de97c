"""Box utilities on [..., 4] float arrays, vectorized, numpy only.

Unless a name says otherwise a box is corners (ymin, xmin, ymax, xmax), the
layout of the TF Object Detection API and of TFLite's detection outputs.
"center size" is (ycenter, xcenter, height, width), the layout TFLite's
postprocess op takes its anchors in; "xywh" is (xmin, ymin, width, height),
the COCO / OpenCV layout.
"""
from __future__ import annotations

import numpy as np

from .anchors import corners_to_center_size

__all__ = [
    "area", "center_size_to_corners", "clip", "corners_to_center_size", "corners_to_xywh",
    "iou", "iou_matrix", "scale_to_pixels", "xywh_to_corners",
]


def area(boxes: np.ndarray) -> np.ndarray:
    """[...] areas of [..., 4] corners, in their dtype; a box with ymax < ymin
    or xmax < xmin gives a negative or zero area as it is (callers decide)."""
    boxes = np.asarray(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of [..., 4] corners broadcast against [..., 4] corners (``a[:, None]``
    and ``b[None]`` give the [N, M] matrix), computed in ``boxes_b``' dtype.

    The arithmetic is TFLite's detection postprocess kernel's, operation for
    operation, so float32 inputs give its bits: areas first, intersection
    extents clamped at 0, ``inter / (area_a + area_b - inter)``; the IoU with
    a box of zero or negative area is 0, never NaN.
    """
    b = np.asarray(boxes_b)
    a = np.asarray(boxes_a, b.dtype)
    zero = b.dtype.type(0)
    area_a, area_b = area(a), area(b)
    inter_h = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), zero)
    inter_w = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), zero)
    inter = inter_h * inter_w
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((area_a > 0) & (area_b > 0), inter / (area_a + area_b - inter), zero)


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """[N, M] float64 IoU between [N, 4] and [M, 4] corners (0 where either box
    has zero or negative area). Float64 because training and evaluation want
    the true value, not the kernel's float32 rounding."""
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    inter_h = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    inter_w = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = inter_h * inter_w
    area_a, area_b = area(a)[:, None], area(b)[None, :]
    valid = (area_a > 0) & (area_b > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(valid, inter / (area_a + area_b - inter), 0.0)


def clip(boxes: np.ndarray, lower: float = 0.0, upper: float = 1.0) -> np.ndarray:
    """Corners clipped to [lower, upper] (normalized boxes to the image by
    default). TFLite's op never clips, so this is for display and evaluation."""
    return np.clip(boxes, lower, upper)


def center_size_to_corners(boxes: np.ndarray) -> np.ndarray:
    """[..., 4] (ycenter, xcenter, h, w) -> (ymin, xmin, ymax, xmax)."""
    yc, xc, h, w = np.moveaxis(np.asarray(boxes), -1, 0)
    return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=-1)


def corners_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """[..., 4] (ymin, xmin, ymax, xmax) -> (xmin, ymin, width, height), COCO's layout."""
    ymin, xmin, ymax, xmax = np.moveaxis(np.asarray(boxes), -1, 0)
    return np.stack([xmin, ymin, xmax - xmin, ymax - ymin], axis=-1)


def xywh_to_corners(boxes: np.ndarray) -> np.ndarray:
    """[..., 4] (xmin, ymin, width, height) -> (ymin, xmin, ymax, xmax)."""
    x, y, w, h = np.moveaxis(np.asarray(boxes), -1, 0)
    return np.stack([y, x, y + h, x + w], axis=-1)


def scale_to_pixels(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Normalized [..., 4] corners -> float32 pixel corners of a height x width image."""
    return np.asarray(boxes, np.float32) * np.array([height, width, height, width], np.float32)
