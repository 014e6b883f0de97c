"""Multiply-accumulate counts of a Keras model, for ``ssdkit models``."""
from __future__ import annotations

import numpy as np
import tf_keras as keras

_COUNTED = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D, keras.layers.Dense)


def _layer_macs(layer, in_shape, out_shape) -> int:
    out_pixels = int(np.prod(out_shape[1:-1])) if len(out_shape) > 2 else 1
    in_channels = in_shape[-1]
    if isinstance(layer, keras.layers.Dense):
        return out_pixels * in_channels * layer.units
    kh, kw = layer.kernel_size
    if isinstance(layer, keras.layers.SeparableConv2D):
        return out_pixels * in_channels * (kh * kw * layer.depth_multiplier + layer.filters)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return out_pixels * in_channels * kh * kw * layer.depth_multiplier
    return out_pixels * in_channels * kh * kw * layer.filters


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one image through the conv and dense layers
    (the rest is negligible in a MobileNet SSD). A layer shared across
    feature maps (the FPN head's tower) counts once per call."""
    return sum(
        _layer_macs(layer, layer.get_input_shape_at(i), layer.get_output_shape_at(i))
        for layer in model.layers if isinstance(layer, _COUNTED)
        for i in range(len(layer.inbound_nodes))
    )
