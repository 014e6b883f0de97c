"""The Faster R-CNN box coder of the TF Object Detection API, in numpy.

A box is encoded against its anchor as (ty, tx, th, tw):
``ty = (yc - yc_a) / h_a * sy``, ``tx = (xc - xc_a) / w_a * sx``,
``th = log(h / h_a) * sh``, ``tw = log(w / w_a) * sw``. SSD models use the
scales (10, 10, 5, 5), which bring the targets to roughly unit variance.
Boxes and anchors are corners (ymin, xmin, ymax, xmax), shapes [..., 4].
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .anchors import corners_to_center_size

SSD_SCALES = (10.0, 10.0, 5.0, 5.0)
# The OD API adds this to every size before dividing or taking a log when
# encoding, so that a degenerate box gives a large finite code, not inf/nan.
_EPSILON = 1e-8


def encode(boxes: np.ndarray, anchors: np.ndarray, scales: Sequence[float] | None = SSD_SCALES) -> np.ndarray:
    """Relative codes (ty, tx, th, tw) of ``boxes`` against ``anchors``."""
    yc, xc, h, w = np.moveaxis(corners_to_center_size(boxes), -1, 0)
    yca, xca, ha, wa = np.moveaxis(corners_to_center_size(anchors), -1, 0)
    ha, wa, h, w = ha + _EPSILON, wa + _EPSILON, h + _EPSILON, w + _EPSILON
    codes = np.stack([(yc - yca) / ha, (xc - xca) / wa, np.log(h / ha), np.log(w / wa)], axis=-1)
    if scales:
        codes = codes * np.asarray(scales, codes.dtype)
    return codes


def decode_center_size(
    rel_codes: np.ndarray, anchors_cs: np.ndarray, scales: Sequence[float] | None = SSD_SCALES
) -> np.ndarray:
    """Corners decoded from codes against anchors given as (yc, xc, h, w).

    This is the form TFLite's detection postprocess op takes its anchors in;
    it computes exactly these expressions in float32.
    """
    codes = np.asarray(rel_codes)
    if scales:
        codes = codes / np.asarray(scales, codes.dtype)
    ty, tx, th, tw = np.moveaxis(codes, -1, 0)
    yca, xca, ha, wa = np.moveaxis(np.asarray(anchors_cs, codes.dtype), -1, 0)
    yc = ty * ha + yca
    xc = tx * wa + xca
    half_h = 0.5 * np.exp(th) * ha
    half_w = 0.5 * np.exp(tw) * wa
    return np.stack([yc - half_h, xc - half_w, yc + half_h, xc + half_w], axis=-1)


def decode(rel_codes: np.ndarray, anchors: np.ndarray, scales: Sequence[float] | None = SSD_SCALES) -> np.ndarray:
    """Corners of the boxes that ``rel_codes`` encode against corner ``anchors``."""
    return decode_center_size(rel_codes, corners_to_center_size(anchors), scales)
