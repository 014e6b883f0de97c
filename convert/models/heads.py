"""SSD box predictors: per feature map, box encodings and class logits.

Each map's [B, H, W, K*4] prediction is reshaped to [B, H*W*K, 4] (row,
column, then anchor fastest) and the maps are concatenated: the order the
anchor generators produce, so prediction i belongs to anchor i.
"""
from __future__ import annotations

import tf_keras as keras

from ..zoo import Architecture
from .layers import batch_norm, depthwise_bn_relu6, initializer, regularizer, relu6

BOX_CODE_SIZE = 4


def _prediction_layer(filters: int, kernel_size: int, name: str, bias_init: float = 0.0, separable: bool = False):
    """The last conv of a head: linear, with bias, no batch norm."""
    common = dict(padding="same", bias_initializer=keras.initializers.Constant(bias_init), name=name)
    if separable:
        return keras.layers.SeparableConv2D(
            filters, kernel_size, depthwise_initializer=initializer(0.01), pointwise_initializer=initializer(0.01),
            depthwise_regularizer=regularizer(), pointwise_regularizer=regularizer(), **common,
        )
    return keras.layers.Conv2D(filters, kernel_size, kernel_initializer=initializer(), kernel_regularizer=regularizer(), **common)


def _flatten(x, code_size: int, name: str):
    return keras.layers.Reshape((-1, code_size), name=name)(x)


def conv_box_predictor(arch: Architecture, feature_maps: list, per_location: list[int], num_class_slots: int):
    """OD API ``ConvolutionalBoxPredictor`` with no layers before the predictor.

    ``conv``: a k x k conv per output (k=1 in the SSD configs). ``separable``
    (SSDLite): depthwise k x k + BN + ReLU6, then a 1x1 conv per output.
    """
    boxes, classes = [], []
    for i, (fmap, k) in enumerate(zip(feature_maps, per_location)):
        for outputs, size, name, bias in (
            (boxes, BOX_CODE_SIZE, "BoxEncodingPredictor", 0.0),
            (classes, num_class_slots, "ClassPredictor", arch.class_bias_init),
        ):
            scope = f"BoxPredictor_{i}/{name}"
            x = fmap
            kernel = arch.head_kernel_size
            if arch.head == "separable":
                x = depthwise_bn_relu6(x, kernel, f"{scope}_depthwise")
                kernel = 1
            x = _prediction_layer(k * size, kernel, scope, bias)(x)
            outputs.append(_flatten(x, size, f"{scope}/flatten"))
    return boxes, classes


def weight_shared_box_predictor(arch: Architecture, feature_maps: list, per_location: list[int], num_class_slots: int):
    """OD API ``WeightSharedConvolutionalBoxPredictor`` as FPN-lite configures
    it: one separable-conv tower shared by every level and by both outputs
    (``share_prediction_tower``), batch norm per level, then shared separable
    box and class convs."""
    if len(set(per_location)) != 1:
        raise ValueError(f"a weight-shared head needs the same anchors per location on every level, got {per_location}")
    k = per_location[0]
    depth = keras.backend.int_shape(feature_maps[0])[-1]
    kernel = arch.head_kernel_size
    tower = [
        keras.layers.SeparableConv2D(
            depth, kernel, padding="same", use_bias=False, depthwise_initializer=initializer(0.01),
            pointwise_initializer=initializer(0.01), depthwise_regularizer=regularizer(),
            pointwise_regularizer=regularizer(), name=f"WeightSharedBoxPredictor/PredictionTower/conv2d_{j}",
        )
        for j in range(arch.tower_layers)
    ]
    box_conv = _prediction_layer(k * BOX_CODE_SIZE, kernel, "WeightSharedBoxPredictor/BoxPredictor", separable=True)
    class_conv = _prediction_layer(
        k * num_class_slots, kernel, "WeightSharedBoxPredictor/ClassPredictor", arch.class_bias_init, separable=True
    )
    boxes, classes = [], []
    for level, fmap in enumerate(feature_maps):
        x = fmap
        for j, conv in enumerate(tower):
            x = conv(x)
            x = batch_norm(x, f"WeightSharedBoxPredictor/PredictionTower/conv2d_{j}/BatchNorm/feature_{level}")
            x = relu6(x, f"WeightSharedBoxPredictor/PredictionTower/conv2d_{j}/Relu6/feature_{level}")
        boxes.append(_flatten(box_conv(x), BOX_CODE_SIZE, f"WeightSharedBoxPredictor/BoxPredictor/flatten_{level}"))
        classes.append(_flatten(class_conv(x), num_class_slots, f"WeightSharedBoxPredictor/ClassPredictor/flatten_{level}"))
    return boxes, classes


def build_box_predictor(arch: Architecture, feature_maps: list, per_location: list[int], num_class_slots: int):
    """Returns ([B, A, 4] box encodings, [B, A, num_class_slots] class logits)."""
    predictor = weight_shared_box_predictor if arch.head == "weight_shared" else conv_box_predictor
    boxes, classes = predictor(arch, feature_maps, per_location, num_class_slots)
    box_encodings = keras.layers.Concatenate(axis=1, name="box_encodings")(boxes)
    class_predictions = keras.layers.Concatenate(axis=1, name="class_predictions")(classes)
    return box_encodings, class_predictions
