"""MobileNet backbones and the endpoints the SSD heads read.

MobileNetV2 and V3 are the Keras applications (tf_keras), so their ImageNet
weights load from the standard Keras cache. MobileNetV1 is defined here:
the Keras application pads stride-2 convs on the bottom/right only, which
turns 75x75 into 37x37 and would break the OD API's 19x19 / 10x10 grids;
this one pads SAME (as the OD API's slim MobileNetV1 does) and keeps the Keras
layer names and order, so the Keras ImageNet weights still load.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import tf_keras as keras

from ..zoo import Backbone
from .layers import BN_EPSILON


@dataclass
class BackboneEndpoints:
    """The backbone (for loading ImageNet weights) and its feature tensors by
    output stride: {8: ..., 16: ..., 32: ...}."""

    model: keras.Model
    by_stride: dict[int, object]


# (stride, pointwise filters) of MobileNetV1's 13 depthwise-separable blocks.
_V1_BLOCKS = ((1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
              (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024))


def _mobilenet_v1(inputs, alpha: float) -> BackboneEndpoints:
    def bn_relu(x, name):
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
        return keras.layers.ReLU(6.0, name=f"{name}_relu")(x)

    x = keras.layers.Conv2D(int(32 * alpha), 3, strides=2, padding="same", use_bias=False, name="conv1")(inputs)
    x = bn_relu(x, "conv1")
    by_stride = {}
    stride = 2
    for i, (block_stride, filters) in enumerate(_V1_BLOCKS, start=1):
        x = keras.layers.DepthwiseConv2D(3, strides=block_stride, padding="same", use_bias=False, name=f"conv_dw_{i}")(x)
        x = bn_relu(x, f"conv_dw_{i}")
        x = keras.layers.Conv2D(int(filters * alpha), 1, use_bias=False, name=f"conv_pw_{i}")(x)
        x = bn_relu(x, f"conv_pw_{i}")
        stride *= block_stride
        by_stride[stride] = x  # the last block at each stride: Conv2d_5/11/13 at 8/16/32
    model = keras.Model(inputs, x, name="mobilenet_v1")
    return BackboneEndpoints(model, by_stride)


def _mobilenet_v2(inputs, alpha: float) -> BackboneEndpoints:
    model = keras.applications.MobileNetV2(input_tensor=inputs, alpha=alpha, include_top=False, weights=None)
    # Strides 8 and 16 as the OD API's FPN reads them (layer_7, layer_14);
    # "ssd" models read 16 from block 13's expansion (layer_15/expansion_output).
    return BackboneEndpoints(model, {
        8: model.get_layer("block_5_add").output,
        16: model.get_layer("block_12_add").output,
        "16_expansion": model.get_layer("block_13_expand_relu").output,
        "32_projection": model.get_layer("block_16_project_BN").output,
        32: model.get_layer("out_relu").output,
    })


def _mobilenet_v3(inputs, alpha: float, size: str) -> BackboneEndpoints:
    build = keras.applications.MobileNetV3Large if size == "large" else keras.applications.MobileNetV3Small
    model = build(input_tensor=inputs, alpha=alpha, include_top=False, weights=None, include_preprocessing=False)
    # The OD API's ssdlite_mobilenet_v3 reads the expansion output of the first
    # stride-32 block (layer_14 / layer_10 in slim numbering): the input of its
    # padded depthwise conv, which Keras leaves unnamed.
    block = 12 if size == "large" else 8
    expansion = model.get_layer(f"expanded_conv_{block}/depthwise/pad").input
    return BackboneEndpoints(model, {"16_expansion": expansion, 32: model.output})


def build_backbone(kind: Backbone, inputs, alpha: float) -> BackboneEndpoints:
    if kind == "mobilenet_v1":
        return _mobilenet_v1(inputs, alpha)
    if kind == "mobilenet_v2":
        return _mobilenet_v2(inputs, alpha)
    return _mobilenet_v3(inputs, alpha, "large" if kind.endswith("large") else "small")


def imagenet_weights_file(kind: Backbone, alpha: float) -> Path | None:
    """The Keras cache file of this backbone's ImageNet weights (no top), if present.

    Nothing is downloaded: the file must already be in ``$KERAS_HOME/models``
    (default ``~/.keras/models``), where Keras itself caches it.
    """
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    if kind == "mobilenet_v1":
        text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}.get(alpha)
        names = [f"mobilenet_{text}_{rows}_tf_no_top.h5" for rows in (224, 192, 160, 128)] if text else []
    elif kind == "mobilenet_v2":
        names = [f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
                 for rows in (224, 192, 160, 128, 96)]
    else:
        size = "large" if kind.endswith("large") else "small"
        names = [f"weights_mobilenet_v3_{size}_224_{alpha}_float_no_top_v2.h5"]
    for name in names:
        if (cache / name).is_file():
            return cache / name
    return None
