"""Box coders in numpy: how a network's box outputs become corners. The one
definition of the SSD scales (``SSD_SCALES``).

Faster R-CNN (the TF Object Detection API's, and TFLite's postprocess op's):
a box is encoded against its anchor as (ty, tx, th, tw):
``ty = (yc - yc_a) / h_a * sy``, ``tx = (xc - xc_a) / w_a * sx``,
``th = log(h / h_a) * sh``, ``tw = log(w / w_a) * sw``. SSD models use the
scales (10, 10, 5, 5), which bring the targets to roughly unit variance.
Boxes and anchors are corners (ymin, xmin, ymax, xmax), shapes [..., 4].

Pixel-scaled (MediaPipe's ``TensorsToDetectionsCalculator``): offsets and
sizes divided by the input size in pixels (``decode_pixel_scaled``).

The numpy decoder rounds exactly as TFLite's kernel; the TensorFlow
(``convert/savedmodel/tf_box_coder.py``) and ONNX (``convert/onnx/nms.py``)
graph decoders compute the same formula in their own graph ops.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from .anchors import corners_to_center_size

SSD_SCALES = (10.0, 10.0, 5.0, 5.0)
# The OD API adds this to every size before dividing or taking a log when
# encoding, so that a degenerate box gives a large finite code, not inf/nan.
_EPSILON = 1e-8


def encode(boxes: np.ndarray, anchors: np.ndarray, scales: Sequence[float] | None = SSD_SCALES) -> np.ndarray:
    """Relative codes (ty, tx, th, tw) of ``boxes`` against ``anchors`` (training targets)."""
    yc, xc, h, w = np.moveaxis(corners_to_center_size(boxes), -1, 0)
    yca, xca, ha, wa = np.moveaxis(corners_to_center_size(anchors), -1, 0)
    ha, wa, h, w = ha + _EPSILON, wa + _EPSILON, h + _EPSILON, w + _EPSILON
    codes = np.stack([(yc - yca) / ha, (xc - xca) / wa, np.log(h / ha), np.log(w / wa)], axis=-1)
    if scales:
        codes = codes * np.asarray(scales, codes.dtype)
    return codes


@functools.lru_cache(maxsize=16)
def _divisors(scales: tuple[float, ...] | None) -> np.ndarray:
    """The scales as the kernel holds them (float32), widened to double; one
    array per scales tuple (the decoder runs per frame)."""
    divisors = np.array([float(np.float32(s)) for s in scales] if scales else [1.0] * 4)
    divisors.flags.writeable = False
    return divisors


def decode_center_size(
    rel_codes: np.ndarray, anchors_cs: np.ndarray, scales: Sequence[float] | None = SSD_SCALES
) -> np.ndarray:
    """[..., >=4] codes (ty, tx, th, tw; further values ignored) against
    [..., 4] anchors (ycenter, xcenter, h, w) -> float32 corners.

    Bit for bit what TFLite's postprocess kernel computes: centres and half
    sizes in double, each rounded to float32, then subtracted in float32
    (subtracting before rounding would differ in the last bit). Never clipped.
    """
    codes = np.asarray(rel_codes, np.float32)[..., :4].astype(np.float64)
    anchors = np.asarray(anchors_cs, np.float32).astype(np.float64)
    divisors = _divisors(tuple(scales) if scales else None)
    # Columns (y, x) at once: the same double operations as the kernel, in its order.
    centres = (codes[..., :2] / divisors[:2] * anchors[..., 2:] + anchors[..., :2]).astype(np.float32)
    halves = (0.5 * np.exp(codes[..., 2:4] / divisors[2:]) * anchors[..., 2:]).astype(np.float32)
    return np.concatenate([centres - halves, centres + halves], axis=-1)


def decode(rel_codes: np.ndarray, anchors: np.ndarray, scales: Sequence[float] | None = SSD_SCALES) -> np.ndarray:
    """Corners of the boxes that ``rel_codes`` encode against corner ``anchors``."""
    return decode_center_size(rel_codes, corners_to_center_size(anchors), scales)


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
