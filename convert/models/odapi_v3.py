"""MobileNetV3 as the TF1 OD API's ``ssd_mobilenet_v3_{small,large}`` builds it.

The OD API runs slim's ``mobilenet_v3.mobilenet_base`` with the detection
conv defs (``V3_SMALL_DETECTION`` / ``V3_LARGE_DETECTION``: the blocks of the
last stage and the 1x1 conv after them at half their classification depth),
stopping at ``layer_13`` (small) / ``layer_17`` (large); the SSD heads read
``layer_10/expansion_output`` / ``layer_14/expansion_output`` (stride 16)
and that last conv (stride 32). What differs from the Keras application
(ssdkit's own ``ssdlite_mnv3_*``), and is reproduced here:

- channel counts: slim's ``depth_multiplier`` rounds every ``num_outputs``
  with ``_make_divisible(n * m, 8, min_depth)`` and every expansion with
  ``_make_divisible(inputs * factor, 8)``; the detection halving comes first;
- squeeze-excite: ``squeeze_excite/Conv`` (1x1 with bias, ReLU) to
  ``_make_divisible(expanded / 4, 8)`` channels, ``squeeze_excite/Conv_1``
  (1x1 with bias) gated by ``relu6(x + 3) * 0.16667`` (slim's constant, not
  1/6), on the average pool of the whole depthwise output, after the
  depthwise conv and before the projection;
- hard-swish ``x * relu6(x + 3) * (1/6)`` in slim's operation order;
- SAME padding (the zoo configs leave ``use_explicit_padding`` false); no
  pooling or logits layers (``final_endpoint`` stops before them, so
  ``finegrain_classification_mode`` never applies).

Layer names are the TF1 variable scopes: ``FeatureExtractor/MobilenetV3/Conv``,
``.../expanded_conv_N/{expand,depthwise,project}`` with ``/BatchNorm``,
``.../expanded_conv_N/squeeze_excite/Conv{,_1}``, ``.../Conv_1``.
References: research/slim/nets/mobilenet/mobilenet_v3.py, conv_blocks.py
(``expanded_conv``, ``squeeze_excite``), mobilenet.py (``depth_multiplier``,
``mobilenet_base``), research/object_detection/models/ssd_mobilenet_v3_feature_extractor.py.
"""
from __future__ import annotations

import tf_keras as keras

from ..zoo import Architecture
from .backbones import BackboneEndpoints
from .layers import batch_norm, initializer, regularizer

SE_GATE_SCALE = 0.16667  # slim's squeeze_excite gating_fn: relu6(x + 3) * 0.16667
RELU, HSWISH = "relu", "hard_swish"

# One row per expanded_conv block: (expansion factor, output depth, depthwise kernel, stride,
# squeeze-excite, activation). Output depths are the classification network's; DETECTION_HALVED
# lists the blocks (0-based) whose depth the detection variant halves, and LAST_CONV the final
# 1x1 conv's depth (also halved).
LARGE_BLOCKS = (
    (1, 16, 3, 1, False, RELU), (4, 24, 3, 2, False, RELU), (3, 24, 3, 1, False, RELU),
    (3, 40, 5, 2, True, RELU), (3, 40, 5, 1, True, RELU), (3, 40, 5, 1, True, RELU),
    (6, 80, 3, 2, False, HSWISH), (2.5, 80, 3, 1, False, HSWISH), (184 / 80, 80, 3, 1, False, HSWISH),
    (184 / 80, 80, 3, 1, False, HSWISH), (6, 112, 3, 1, True, HSWISH), (6, 112, 3, 1, True, HSWISH),
    (6, 160, 5, 2, True, HSWISH), (6, 160, 5, 1, True, HSWISH), (6, 160, 5, 1, True, HSWISH),
)
SMALL_BLOCKS = (
    (1, 16, 3, 2, True, RELU), (72 / 16, 24, 3, 2, False, RELU), (88 / 24, 24, 3, 1, False, RELU),
    (4, 40, 5, 2, True, HSWISH), (6, 40, 5, 1, True, HSWISH), (6, 40, 5, 1, True, HSWISH),
    (3, 48, 5, 1, True, HSWISH), (3, 48, 5, 1, True, HSWISH), (6, 96, 5, 2, True, HSWISH),
    (6, 96, 5, 1, True, HSWISH), (6, 96, 5, 1, True, HSWISH),
)
VARIANTS = {
    # blocks, halved blocks, last conv depth, the block whose expansion output is the stride-16 map
    "mobilenet_v3_large": (LARGE_BLOCKS, range(12, 15), 960, 12),
    "mobilenet_v3_small": (SMALL_BLOCKS, range(8, 11), 576, 8),
}


def _make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    from .odapi import make_divisible

    return make_divisible(value, divisor, min_value)


def _halve(depth: int) -> int:
    """``_reduce_consecutive_layers``: ``int(np.round(depth * 0.5))`` (round half to even)."""
    return int(round(depth * 0.5))


def _activation(x, kind: str | None, name: str):
    if kind is None:
        return x
    if kind == RELU:
        return keras.layers.ReLU(name=f"{name}/Relu")(x)
    # hard_swish: (x * relu6(x + 3)) * (1/6), as slim writes it.
    shifted = keras.layers.Rescaling(1.0, offset=3.0, name=f"{name}/hard_swish/add")(x)
    gate = keras.layers.ReLU(6.0, name=f"{name}/hard_swish/Relu6")(shifted)
    product = keras.layers.Multiply(name=f"{name}/hard_swish/mul")([x, gate])
    return keras.layers.Rescaling(1.0 / 6.0, name=f"{name}/hard_swish/mul_1")(product)


def _conv_bn(x, filters: int, kernel: int, name: str, activation: str | None, strides: int = 1):
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                            kernel_initializer=initializer(), kernel_regularizer=regularizer(), name=name)(x)
    return _activation(batch_norm(x, f"{name}/BatchNorm"), activation, name)


def _depthwise_bn(x, kernel: int, strides: int, name: str, activation: str):
    x = keras.layers.DepthwiseConv2D(kernel, strides=strides, padding="same", use_bias=False,
                                     depthwise_initializer=initializer(), depthwise_regularizer=regularizer(),
                                     name=name)(x)
    return _activation(batch_norm(x, f"{name}/BatchNorm"), activation, name)


def _squeeze_excite(x, name: str):
    """x * gate(Conv_1(relu(Conv(avg_pool(x))))), the pool spanning the whole map (static sizes)."""
    height, width, channels = keras.backend.int_shape(x)[1:]
    squeeze = _make_divisible(channels / 4, 8)
    pooled = keras.layers.AveragePooling2D((height, width), padding="valid", name=f"{name}/AvgPool")(x)
    inner = keras.layers.Conv2D(squeeze, 1, activation="relu", kernel_initializer=initializer(),
                                kernel_regularizer=regularizer(), name=f"{name}/Conv")(pooled)
    excite = keras.layers.Conv2D(channels, 1, kernel_initializer=initializer(), kernel_regularizer=regularizer(),
                                 name=f"{name}/Conv_1")(inner)
    gate = keras.layers.Rescaling(1.0, offset=3.0, name=f"{name}/gate/add")(excite)
    gate = keras.layers.ReLU(6.0, name=f"{name}/gate/Relu6")(gate)
    gate = keras.layers.Rescaling(SE_GATE_SCALE, name=f"{name}/gate/mul")(gate)
    return keras.layers.Multiply(name=f"{name}/mul")([x, gate])


def mobilenet_v3(arch: Architecture, inputs, multiplier: float) -> BackboneEndpoints:
    """slim ``mobilenet_v3.mobilenet_base`` with the detection conv defs, up to the last 1x1 conv."""
    from .odapi import scope

    blocks, halved, last_depth, expansion_block = VARIANTS[arch.backbone]
    s = scope(arch)

    def depth(d):
        return _make_divisible(d * multiplier, 8, arch.min_depth)

    x = _conv_bn(inputs, depth(16), 3, f"{s}/Conv", HSWISH, strides=2)
    stride, by_stride = 2, {}
    for index, (factor, out, kernel, block_stride, se, act) in enumerate(blocks):
        name = f"{s}/expanded_conv" + (f"_{index}" if index else "")
        channels = keras.backend.int_shape(x)[-1]
        inner = _make_divisible(channels * factor, 8)
        y = x
        if inner > channels:
            y = _conv_bn(y, inner, 1, f"{name}/expand", act)
            if index == expansion_block:
                by_stride["16_expansion"] = y  # layer_{index + 2}/expansion_output
        y = _depthwise_bn(y, kernel, block_stride, f"{name}/depthwise", act)
        if se:
            y = _squeeze_excite(y, f"{name}/squeeze_excite")
        y = _conv_bn(y, depth(_halve(out) if index in halved else out), 1, f"{name}/project", None)
        if block_stride == 1 and keras.backend.int_shape(y)[-1] == channels:
            y = keras.layers.Add(name=f"{name}/add")([y, x])
        stride *= block_stride
        x = y
    x = _conv_bn(x, depth(_halve(last_depth)), 1, f"{s}/Conv_1", HSWISH)
    by_stride[32] = x
    return BackboneEndpoints(keras.Model(inputs, x, name=f"{arch.backbone}_odapi"), by_stride)
