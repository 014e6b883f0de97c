"""Conv building blocks with the OD API's SSD hyperparameters.

SSD configs use L2 4e-5 on kernels, truncated-normal(0.03) initialisation and
batch norm with decay 0.9997 and epsilon 1e-3, every conv followed by BN and
ReLU6. All layers are named, so weights load by name across processes.
"""
from __future__ import annotations

import tf_keras as keras

L2 = 4e-5
BN_MOMENTUM = 0.9997
BN_EPSILON = 1e-3


def regularizer():
    return keras.regularizers.l2(L2)


def initializer(stddev: float = 0.03):
    return keras.initializers.TruncatedNormal(stddev=stddev)


def batch_norm(x, name: str):
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(x)


def relu6(x, name: str):
    return keras.layers.ReLU(6.0, name=name)(x)


def conv_bn_relu6(x, filters: int, kernel_size: int, name: str, strides: int = 1):
    """Conv (no bias) + BN + ReLU6."""
    x = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False,
        kernel_initializer=initializer(), kernel_regularizer=regularizer(), name=name,
    )(x)
    return relu6(batch_norm(x, f"{name}/BatchNorm"), f"{name}/Relu6")


def depthwise_bn_relu6(x, kernel_size: int, name: str, strides: int = 1):
    """Depthwise conv (no bias) + BN + ReLU6: the first half of a separable block."""
    x = keras.layers.DepthwiseConv2D(
        kernel_size, strides=strides, padding="same", use_bias=False,
        depthwise_initializer=initializer(), depthwise_regularizer=regularizer(), name=name,
    )(x)
    return relu6(batch_norm(x, f"{name}/BatchNorm"), f"{name}/Relu6")


def separable_bn_relu6(x, filters: int, kernel_size: int, name: str, strides: int = 1):
    """Depthwise k x k + BN + ReLU6, then pointwise 1x1 + BN + ReLU6 (SSDLite)."""
    x = depthwise_bn_relu6(x, kernel_size, f"{name}_depthwise", strides)
    return conv_bn_relu6(x, filters, 1, name)
