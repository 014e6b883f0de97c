"""Feature maps the box predictor reads: SSD extra layers and FPN-lite."""
from __future__ import annotations

import tf_keras as keras

from ..zoo import Architecture
from .backbones import BackboneEndpoints
from .layers import conv_bn_relu6, initializer, regularizer, separable_bn_relu6


def _depth(arch: Architecture, depth: int, width: float) -> int:
    return max(int(depth * width), arch.min_depth)


def ssd_feature_maps(arch: Architecture, endpoints: BackboneEndpoints, width: float) -> list:
    """OD API ``multi_resolution_feature_maps``: the backbone's stride-16
    expansion output and its last layer, then one extra map per depth in
    ``arch.extra_depths``: 1x1 conv to depth/2, then a 3x3 stride-2 conv (or its
    depthwise-separable form for SSDLite) to depth."""
    feature_maps = [endpoints.by_stride.get("16_expansion", endpoints.by_stride.get(16)), endpoints.by_stride[32]]
    x = feature_maps[-1]
    for i, depth in enumerate(arch.extra_depths, start=2):
        name = f"FeatureMaps/layer_{i}"
        x = conv_bn_relu6(x, _depth(arch, depth // 2, width), 1, f"{name}_1_Conv2d_1x1_{depth // 2}")
        block_name = f"{name}_2_Conv2d_3x3_s2_{depth}"
        if arch.separable_extra_layers:
            x = separable_bn_relu6(x, _depth(arch, depth, width), 3, block_name, strides=2)
        else:
            x = conv_bn_relu6(x, _depth(arch, depth, width), 3, block_name, strides=2)
        feature_maps.append(x)
    return feature_maps


def fpn_lite_feature_maps(arch: Architecture, endpoints: BackboneEndpoints, width: float) -> list:
    """OD API ``ssd_mobilenet_v2_fpn_keras`` with ``use_depthwise`` (FPN-lite).

    Levels 3-5 come from the backbone at strides 8, 16, 32. With depthwise
    convs the OD API swaps MobileNetV2's final 1x1 conv (1280 channels) for one
    of 256, done here on block 16's projection. Top-down: 1x1 projections
    (with bias, no BN), nearest 2x upsampling, sum, separable 3x3 smoothing;
    the coarsest level is the bare projection. Levels 6-7: separable 3x3
    stride-2 convs on level 5.
    """
    depth = _depth(arch, arch.fpn_depth, width)
    c5 = conv_bn_relu6(endpoints.by_stride["32_projection"], _depth(arch, 256, width), 1, "FeatureExtractor/layer_19")
    backbone_levels = [endpoints.by_stride[8], endpoints.by_stride[16], c5]
    base_max_level = min(arch.fpn_max_level, 5)
    backbone_levels = backbone_levels[arch.fpn_min_level - 3: base_max_level - 2]

    def projection(x, level):
        return keras.layers.Conv2D(
            depth, 1, padding="same", kernel_initializer=initializer(), kernel_regularizer=regularizer(),
            name=f"FeatureMaps/top_down/projection_{level}",
        )(x)

    top_down = projection(backbone_levels[-1], base_max_level)
    outputs = [top_down]
    for level in range(base_max_level - 1, arch.fpn_min_level - 1, -1):
        top_down = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"FeatureMaps/top_down/upsample_{level}")(top_down)
        residual = projection(backbone_levels[level - arch.fpn_min_level], level)
        top_down = keras.layers.Add(name=f"FeatureMaps/top_down/add_{level}")([top_down, residual])
        top_down = separable_bn_relu6(top_down, depth, 3, f"FeatureMaps/top_down/smoothing_{level}")
        outputs.insert(0, top_down)
    x = outputs[-1]
    for level in range(base_max_level + 1, arch.fpn_max_level + 1):
        x = separable_bn_relu6(x, depth, 3, f"FeatureMaps/bottom_up_Conv2d_{level}", strides=2)
        outputs.append(x)
    return outputs


def build_feature_maps(arch: Architecture, endpoints: BackboneEndpoints, width: float) -> list:
    if arch.feature_maps == "fpn":
        return fpn_lite_feature_maps(arch, endpoints, width)
    return ssd_feature_maps(arch, endpoints, width)
