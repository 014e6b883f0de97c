"""Networks exactly as the TF Object Detection API builds them (``variant="odapi"``).

``ssdkit import`` (``convert/odapi/``) loads TF OD API models into these. They
differ from ssdkit's own zoo networks where the OD API's do, so that outputs
match to float rounding:

- depth rules: slim MobileNetV1 takes ``max(int(d * m), min_depth)``; slim
  MobileNetV2 rounds every layer with ``_make_divisible(d * m, 8, min_depth)``
  and also shrinks its last 1x1 conv (Keras keeps 1280 below width 1);
- MobileNetV3 is slim's detection variant (``V3_*_DETECTION``: the last
  blocks halved), with hard-sigmoid ``relu6(x + 3) * 0.16667`` as slim writes it
  (``odapi_v3.py``);
- FPN-lite smoothing and extra levels are one separable conv (depthwise and
  pointwise fused) with one batch norm, as ``create_conv_block`` and slim's
  ``separable_conv2d(num_outputs=depth)`` build them; the map fed to the next
  finer level is the smoothed one (Keras/TF2 FPN) or the bare sum (slim/TF1),
  ``Architecture.fpn_top_down``.

Every layer is named after the OD API's TF1 variable scope
(``FeatureExtractor/MobilenetV2/expanded_conv_3/depthwise``, ``.../BatchNorm``,
``BoxPredictor_0/ClassPredictor``), so a TF1 checkpoint maps onto the Keras
weights by renaming ``weights``/``depthwise_weights``/``biases`` to
``kernel``/``depthwise_kernel``/``bias``. References: research/object_detection
``models/ssd_mobilenet_v*_feature_extractor.py``, ``models/feature_map_generators.py``,
``predictors/``; research/slim ``nets/mobilenet_v1.py``, ``nets/mobilenet/``.
"""
from __future__ import annotations

import tf_keras as keras

from ..zoo import Architecture
from .backbones import BackboneEndpoints
from .heads import BOX_CODE_SIZE, _flatten
from .layers import batch_norm, conv_bn_relu6, depthwise_bn_relu6, initializer, regularizer, relu6

BACKBONE_SCOPES = {"mobilenet_v1": "MobilenetV1", "mobilenet_v2": "MobilenetV2",
                   "mobilenet_v3_small": "MobilenetV3", "mobilenet_v3_large": "MobilenetV3"}
# The endpoint the extra SSD layers are named after (feature_map_layout's last from_layer).
SSD_BASE_LAYER = {"mobilenet_v1": "Conv2d_13_pointwise", "mobilenet_v2": "layer_19",
                  "mobilenet_v3_small": "layer_13", "mobilenet_v3_large": "layer_17"}
# MobileNetV1's 13 depthwise-separable blocks: (stride, pointwise depth).
V1_BLOCKS = ((1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
             (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024))
# MobileNetV2's 17 inverted-residual blocks (expanded_conv, expanded_conv_1, ...): (stride, output depth).
V2_BLOCKS = ((1, 16), (2, 24), (1, 24), (2, 32), (1, 32), (1, 32), (2, 64), (1, 64), (1, 64), (1, 64),
             (1, 96), (1, 96), (1, 96), (2, 160), (1, 160), (1, 160), (1, 320))


def scope(arch: Architecture) -> str:
    return f"FeatureExtractor/{BACKBONE_SCOPES[arch.backbone]}"


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """slim mobilenet's channel rounding: nearest multiple of ``divisor``, at
    least ``min_value``, never more than 10% below ``value``."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn(x, filters: int, kernel: int, name: str, strides: int = 1, activation: str | None = "relu6"):
    """slim.conv2d with batch norm: conv (no bias) + BN [+ ReLU6]."""
    if activation == "relu6":
        return conv_bn_relu6(x, filters, kernel, name, strides)
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                            kernel_initializer=initializer(), kernel_regularizer=regularizer(), name=name)(x)
    return batch_norm(x, f"{name}/BatchNorm")


def _separable_bn_relu6(x, filters: int, kernel: int, name: str, strides: int = 1):
    """slim.separable_conv2d(num_outputs=filters) / Keras SeparableConv2D: depthwise
    and pointwise with nothing between them, then one BN and ReLU6."""
    x = keras.layers.SeparableConv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False, depthwise_initializer=initializer(),
        pointwise_initializer=initializer(), depthwise_regularizer=regularizer(),
        pointwise_regularizer=regularizer(), name=name,
    )(x)
    return relu6(batch_norm(x, f"{name}/BatchNorm"), f"{name}/Relu6")


def _mobilenet_v1(arch: Architecture, inputs, multiplier: float) -> BackboneEndpoints:
    """slim ``mobilenet_v1_base`` up to Conv2d_13_pointwise."""
    s = scope(arch)

    def depth(d):
        return max(int(d * multiplier), arch.min_depth)

    x = _conv_bn(inputs, depth(32), 3, f"{s}/Conv2d_0", strides=2)
    by_stride, stride = {}, 2
    for i, (block_stride, filters) in enumerate(V1_BLOCKS, start=1):
        x = depthwise_bn_relu6(x, 3, f"{s}/Conv2d_{i}_depthwise", strides=block_stride)
        x = _conv_bn(x, depth(filters), 1, f"{s}/Conv2d_{i}_pointwise")
        stride *= block_stride
        by_stride[stride] = x  # Conv2d_5/11/13_pointwise at strides 8/16/32
    return BackboneEndpoints(keras.Model(inputs, x, name="mobilenet_v1_odapi"), by_stride)


def _mobilenet_v2(arch: Architecture, inputs, multiplier: float) -> BackboneEndpoints:
    """slim ``mobilenet_v2.mobilenet_base`` up to layer_19 (Conv_1). With FPN-lite
    (``fpn_separable``) Conv_1 has 256 channels, the OD API's
    ``_create_modified_mobilenet_config``."""
    s = scope(arch)

    def depth(d):
        return make_divisible(d * multiplier, 8, arch.min_depth)

    x = _conv_bn(inputs, depth(32), 3, f"{s}/Conv", strides=2)
    outputs = {}
    for index, (stride, filters) in enumerate(V2_BLOCKS):
        name = f"{s}/expanded_conv" + (f"_{index}" if index else "")
        channels = keras.backend.int_shape(x)[-1]
        inner = channels if index == 0 else make_divisible(channels * 6, 8)
        y = x
        if inner > channels:
            y = _conv_bn(y, inner, 1, f"{name}/expand")
            outputs[f"layer_{index + 2}/expansion_output"] = y
        y = depthwise_bn_relu6(y, 3, f"{name}/depthwise", strides=stride)
        y = _conv_bn(y, depth(filters), 1, f"{name}/project", activation=None)
        if stride == 1 and keras.backend.int_shape(y)[-1] == channels:
            y = keras.layers.Add(name=f"{name}/add")([y, x])
        x = outputs[f"layer_{index + 2}"] = y
    last = arch.last_conv_depth or (256 if arch.feature_maps == "fpn" and arch.fpn_separable else 1280)
    x = _conv_bn(x, depth(last), 1, f"{s}/Conv_1")
    return BackboneEndpoints(keras.Model(inputs, x, name="mobilenet_v2_odapi"), {
        8: outputs["layer_7"], 16: outputs["layer_14"], "16_expansion": outputs["layer_15/expansion_output"], 32: x,
    })


def build_odapi_backbone(arch: Architecture, inputs, multiplier: float) -> BackboneEndpoints:
    if arch.backbone == "mobilenet_v1":
        return _mobilenet_v1(arch, inputs, multiplier)
    if arch.backbone == "mobilenet_v2":
        return _mobilenet_v2(arch, inputs, multiplier)
    from .odapi_v3 import mobilenet_v3

    return mobilenet_v3(arch, inputs, multiplier)


def _depth(arch: Architecture, depth: int, multiplier: float) -> int:
    return max(int(depth * multiplier), arch.min_depth)


def ssd_feature_maps(arch: Architecture, endpoints: BackboneEndpoints, multiplier: float) -> list:
    """``multi_resolution_feature_maps`` with ``insert_1x1_conv``: the stride-16
    and stride-32 endpoints, then per extra layer a 1x1 conv to depth/2 and a
    3x3 stride-2 conv (or depthwise 3x3 + BN + ReLU6 + 1x1 for SSDLite), named
    ``{base}_1_Conv2d_{i}_1x1_{d}`` and ``{base}_2_Conv2d_{i}_3x3_s2_{d}``."""
    s, base = scope(arch), SSD_BASE_LAYER[arch.backbone]
    feature_maps = [endpoints.by_stride.get("16_expansion", endpoints.by_stride.get(16)), endpoints.by_stride[32]]
    x = feature_maps[-1]
    for index, layer_depth in enumerate(arch.extra_depths, start=2):
        half = _depth(arch, layer_depth // 2, multiplier)
        x = _conv_bn(x, half, 1, f"{s}/{base}_1_Conv2d_{index}_1x1_{half}")
        full = _depth(arch, layer_depth, multiplier)
        name = f"{s}/{base}_2_Conv2d_{index}_3x3_s2_{full}"
        if arch.separable_extra_layers:
            x = depthwise_bn_relu6(x, 3, f"{name}_depthwise", strides=2)
            x = _conv_bn(x, full, 1, name)
        else:
            x = _conv_bn(x, full, 3, name, strides=2)
        feature_maps.append(x)
    return feature_maps


def fpn_feature_maps(arch: Architecture, endpoints: BackboneEndpoints, multiplier: float) -> list:
    """``fpn_top_down_feature_maps`` / ``KerasFpnTopDownFeatureMaps`` on the
    backbone's strides 8-32, then stride-2 convs up to ``fpn_max_level``.

    Projections are 1x1 convs with bias and no BN, numbered from the finest
    (``projection_1``) to the coarsest; the coarsest level's output is its
    bare projection. Each finer level adds its projection to the 2x nearest
    upsampling of the previous one and is smoothed by a 3x3 conv + BN + ReLU6
    (``smoothing_N``); the previous one is the smoothed map (TF2) or the bare
    sum (TF1), ``fpn_top_down``. Levels above 5: ``bottom_up_Conv2d_N``.
    """
    s = f"{scope(arch)}/fpn"
    depth = _depth(arch, arch.fpn_depth, multiplier)
    base_max = min(arch.fpn_max_level, 5)
    levels = [endpoints.by_stride[2 ** level] for level in range(arch.fpn_min_level, base_max + 1)]
    num_levels = len(levels)

    def conv(x, name, strides=1):
        if arch.fpn_separable:
            return _separable_bn_relu6(x, depth, 3, name, strides)
        return _conv_bn(x, depth, 3, name, strides)

    def projection(x, index):
        return keras.layers.Conv2D(depth, 1, padding="same", kernel_initializer=initializer(),
                                   kernel_regularizer=regularizer(), name=f"{s}/projection_{index}")(x)

    top_down = projection(levels[-1], num_levels)
    outputs = [top_down]
    for index in reversed(range(num_levels - 1)):
        upsampled = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{s}/upsample_{index + 1}")(top_down)
        summed = keras.layers.Add(name=f"{s}/add_{index + 1}")([upsampled, projection(levels[index], index + 1)])
        smoothed = conv(summed, f"{s}/smoothing_{index + 1}")
        outputs.insert(0, smoothed)
        top_down = smoothed if arch.fpn_top_down == "smoothed" else summed
    x = outputs[-1]
    last_backbone_layer = {"mobilenet_v1": 13, "mobilenet_v2": 19}.get(arch.backbone, 19)
    for level in range(base_max + 1, arch.fpn_max_level + 1):
        x = conv(x, f"{s}/bottom_up_Conv2d_{level - base_max + last_backbone_layer}", strides=2)
        outputs.append(x)
    return outputs


def build_odapi_feature_maps(arch: Architecture, endpoints: BackboneEndpoints, multiplier: float) -> list:
    if arch.feature_maps == "fpn":
        return fpn_feature_maps(arch, endpoints, multiplier)
    return ssd_feature_maps(arch, endpoints, multiplier)


WEIGHT_SHARED_SCOPE = "WeightSharedConvolutionalBoxPredictor"


def build_odapi_weight_shared_predictor(arch: Architecture, feature_maps: list, per_location: list[int],
                                        num_class_slots: int):
    """``WeightSharedConvolutionalBoxPredictor`` with batch norm: ``tower_layers``
    3x3 convs (separable with ``use_depthwise``, no bias) shared by every
    level, a batch norm per level (``.../conv2d_j/BatchNorm/feature_i``) and
    ReLU6, then box and class convs with bias, also shared. With
    ``share_prediction_tower`` one tower (``PredictionTower``) feeds both
    outputs; without it each has its own (``BoxPredictionTower``,
    ``ClassPredictionTower``), as the TF1 ssd_mobilenet_v1_fpn config builds it."""
    if len(set(per_location)) != 1:
        raise ValueError(f"a weight-shared head needs the same anchors per location on every level, got {per_location}")
    k = per_location[0]
    depth = arch.tower_depth or keras.backend.int_shape(feature_maps[0])[-1]
    kernel = arch.head_kernel_size
    separable = arch.tower_separable

    def conv(filters, name, use_bias, bias_init=0.0):
        common = dict(padding="same", use_bias=use_bias, name=name,
                      bias_initializer=keras.initializers.Constant(bias_init))
        if separable:
            return keras.layers.SeparableConv2D(filters, kernel, depthwise_initializer=initializer(0.01),
                                                pointwise_initializer=initializer(0.01), **common)
        return keras.layers.Conv2D(filters, kernel, kernel_initializer=initializer(0.01), **common)

    names = ["PredictionTower"] if arch.tower_shared else ["BoxPredictionTower", "ClassPredictionTower"]
    towers = {tower: [conv(depth, f"{WEIGHT_SHARED_SCOPE}/{tower}/conv2d_{j}", False) for j in range(arch.tower_layers)]
              for tower in names}
    box_conv = conv(k * BOX_CODE_SIZE, f"{WEIGHT_SHARED_SCOPE}/BoxPredictor", True)
    class_conv = conv(k * num_class_slots, f"{WEIGHT_SHARED_SCOPE}/ClassPredictor", True, arch.class_bias_init)

    def tower_output(tower, fmap, level):
        x = fmap
        for j, layer in enumerate(towers[tower]):
            name = f"{WEIGHT_SHARED_SCOPE}/{tower}/conv2d_{j}"
            x = relu6(batch_norm(layer(x), f"{name}/BatchNorm/feature_{level}"), f"{name}/Relu6/feature_{level}")
        return x

    boxes, classes = [], []
    for level, fmap in enumerate(feature_maps):
        box_features = tower_output(names[0], fmap, level)
        class_features = box_features if arch.tower_shared else tower_output(names[1], fmap, level)
        boxes.append(_flatten(box_conv(box_features), BOX_CODE_SIZE, f"{WEIGHT_SHARED_SCOPE}/BoxPredictor/flatten_{level}"))
        classes.append(_flatten(class_conv(class_features), num_class_slots,
                                f"{WEIGHT_SHARED_SCOPE}/ClassPredictor/flatten_{level}"))
    box_encodings = keras.layers.Concatenate(axis=1, name="box_encodings")(boxes)
    class_predictions = keras.layers.Concatenate(axis=1, name="class_predictions")(classes)
    return box_encodings, class_predictions
