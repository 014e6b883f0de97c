"""The Faster R-CNN box coder in TensorFlow, for graphs and training.

Same math as ``ssdkit.runtime.box_coder`` (the numpy reference, which the
tests compare this against), in graph ops: the numpy decoder rounds as
TFLite's kernel, this one as TensorFlow computes. Boxes and anchors are
corners [..., 4].
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

_EPSILON = 1e-8


def _center_size(corners):
    ymin, xmin, ymax, xmax = tf.unstack(corners, axis=-1)
    return (ymin + ymax) / 2, (xmin + xmax) / 2, ymax - ymin, xmax - xmin


def encode(boxes, anchors, scales: Sequence[float]):
    yc, xc, h, w = _center_size(boxes)
    yca, xca, ha, wa = _center_size(anchors)
    ha, wa, h, w = ha + _EPSILON, wa + _EPSILON, h + _EPSILON, w + _EPSILON
    codes = tf.stack([(yc - yca) / ha, (xc - xca) / wa, tf.math.log(h / ha), tf.math.log(w / wa)], axis=-1)
    return codes * tf.constant(scales, codes.dtype)


def decode(rel_codes, anchors, scales: Sequence[float]):
    codes = rel_codes / tf.constant(scales, rel_codes.dtype)
    ty, tx, th, tw = tf.unstack(codes, axis=-1)
    yca, xca, ha, wa = _center_size(anchors)
    yc, xc = ty * ha + yca, tx * wa + xca
    half_h, half_w = 0.5 * tf.exp(th) * ha, 0.5 * tf.exp(tw) * wa
    return tf.stack([yc - half_h, xc - half_w, yc + half_h, xc + half_w], axis=-1)
