"""The quantization-aware (QAT) form of a network: fake quantization where TFLite's int8 kernels round.

tensorflow-model-optimization's default 8-bit scheme wraps each layer its
registry knows (convolutions with per-channel weights, batch norm folded by
the converter, ReLU, Add, Concatenate, Reshape, padding, pooling) so training
sees int8 rounding, and records every range the converter needs: a QAT model
converts to full-integer TFLite without a calibration pass.

Its registry does not know two things the zoo uses:

- MobileNetV3's hard-swish and hard-sigmoid (Keras builds them as
  ``Multiply`` and ``TFOpLambda`` ops: ``x + 3.0``, ``* (1 / 6)``). The
  ``TFOpLambda`` layers are rebuilt here as ``ConstantOp`` layers, named by
  their position (Keras names lambdas from a process-wide counter, which would
  make checkpoint names differ from run to run), and they, ``Multiply`` and the
  squeeze-excite block's pooling get an output-range-only config
  (``OutputRangeConfig``): no weights to fake-quantize, one int8 range for what
  they write, which is what the TFLite kernels need.
- The model's input: its ``QuantizeLayer`` range is pinned to the pixel range
  after preprocessing (``pin_input_range``), so a uint8 input takes raw camera
  pixels as the post-training export's calibration trick gives.

``quantize_for_training(model)`` returns the QAT network as an ``SSDModel``
whose ``qat`` field is what the checkpoint records; ``checkpoint.prepare_model``
rebuilds it from that record.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import tensorflow as tf
import tf_keras as keras

from .ssd import SSDModel

SCHEME = "tfmot-default-8bit"  # the checkpoint's record: {"qat": {"scheme": SCHEME}}

_CONSTANT_OPS = {
    "__operators__.add": tf.math.add, "math.add": tf.math.add,
    "math.multiply": tf.math.multiply, "math.truediv": tf.math.truediv, "math.subtract": tf.math.subtract,
}


class ConstantOp(keras.layers.Layer):
    """``op(x, constant)``: a ``TFOpLambda`` with one tensor and one number, as a layer QAT can wrap."""

    def __init__(self, op: str, constant: float, **kwargs):
        super().__init__(**kwargs)
        if op not in _CONSTANT_OPS:
            raise ValueError(f"QAT: unsupported elementwise op {op!r}, expected one of {', '.join(_CONSTANT_OPS)}")
        self.op, self.constant = op, float(constant)

    def call(self, inputs):
        return _CONSTANT_OPS[self.op](inputs, tf.constant(self.constant, inputs.dtype))

    def get_config(self):
        return {**super().get_config(), "op": self.op, "constant": self.constant}


def _output_range_config():
    import tensorflow_model_optimization as tfmot

    class OutputRangeConfig(tfmot.quantization.keras.QuantizeConfig):
        """No weights, no activation inside: one moving-average int8 range on the output."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [tfmot.quantization.keras.quantizers.MovingAverageQuantizer(
                num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

        def get_config(self):
            return {}

    return OutputRangeConfig


def _constant_of(layer) -> tuple[str, float] | None:
    """(op, constant) of a ``TFOpLambda`` ``x <op> number``, else None."""
    node = layer.inbound_nodes[0]
    args, kwargs = list(node.call_args), dict(node.call_kwargs)
    numbers = [a for a in [*args[1:], *kwargs.values()] if isinstance(a, (int, float))]
    name = getattr(layer, "symbol", None) or layer.get_config().get("function", "")
    if len(numbers) == 1 and name in _CONSTANT_OPS and hasattr(args[0], "_keras_history"):
        return name, float(numbers[0])
    return None


def _rebuild_without_lambdas(model: keras.Model) -> keras.Model:
    """The same functional graph with every ``TFOpLambda`` as a ``ConstantOp``
    (weights are shared: the other layers are reused as they are)."""
    lambdas = [layer for layer in model.layers if type(layer).__name__ == "TFOpLambda"]
    if not lambdas:
        return model
    replacement = {}
    for index, layer in enumerate(lambdas):
        found = _constant_of(layer)
        if found is None:
            raise ValueError(f"QAT: {layer.name} ({layer.get_config().get('function')}) is not a tensor-and-number "
                             "op; this network is not supported")
        replacement[id(layer)] = ConstantOp(*found, name=f"qat_constant_op_{index}")
    tensors = {id(t): t for t in model.inputs}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        for node in list(layer.inbound_nodes):  # calling the layer adds nodes
            if not all(id(t) in tensors for t in tf.nest.flatten(node.input_tensors)):
                continue  # a node from another graph (the backbone's own model)
            args = tf.nest.map_structure(lambda t: tensors.get(id(t), t), node.call_args)
            kwargs = tf.nest.map_structure(lambda t: tensors.get(id(t), t), node.call_kwargs)
            if id(layer) in replacement:
                out = replacement[id(layer)](args[0])
            else:
                out = layer(*args, **kwargs)
            for old, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(out)):
                tensors[id(old)] = new
    outputs = tf.nest.map_structure(lambda t: tensors[id(t)], model.outputs)
    names = model.output_names
    return keras.Model([tensors[id(t)] for t in model.inputs], dict(zip(names, outputs)), name=model.name)


def quantize_for_training(model: SSDModel) -> SSDModel:
    """The QAT network of ``model``, starting from its current weights."""
    import tensorflow_model_optimization as tfmot

    qk = tfmot.quantization.keras
    registry = qk.default_8bit.Default8BitQuantizeRegistry()
    output_range = _output_range_config()
    plain = _rebuild_without_lambdas(model.keras_model)
    custom = (ConstantOp, keras.layers.Multiply, keras.layers.GlobalAveragePooling2D)

    counts: dict[str, int] = {}

    def config_of(layer) -> dict:
        """The layer's config, with a name that does not depend on what the process built before:
        Keras numbers unnamed layers (``multiply_18``) by a global counter, and the QAT
        wrappers' variables (the checkpoint's keys) are named after their layers."""
        config = layer.get_config()
        from tf_keras.src.utils.generic_utils import to_snake_case  # how Keras names unnamed layers

        base = to_snake_case(type(layer).__name__)
        if re.fullmatch(rf"{re.escape(base)}(_\d+)?", layer.name):
            counts[base] = counts.get(base, -1) + 1
            config["name"] = f"qat_{base}_{counts[base]}"
        return config

    def annotate(layer):
        """Every layer, with the registry's config (quantize_apply folds batch norm into the
        conv before it) or, for what it does not know, the output-range one."""
        if isinstance(layer, keras.layers.InputLayer):
            return layer
        if isinstance(layer, custom) and not registry.supports(layer):
            return qk.quantize_annotate_layer(layer.__class__.from_config(config_of(layer)), output_range())
        return qk.quantize_annotate_layer(layer.__class__.from_config(config_of(layer)))

    annotated = keras.models.clone_model(plain, clone_function=annotate)
    annotated.set_weights(plain.get_weights())
    # quantize_apply adds one unnamed layer (the input's QuantizeLayer): number it from zero, as every
    # other layer's name is fixed above, so the checkpoint's keys are the same in every process.
    keras.backend.reset_uids()
    with qk.quantize_scope({"ConstantOp": ConstantOp, "OutputRangeConfig": output_range}):
        quantized = qk.quantize_apply(annotated)
    qat = dataclasses.replace(model, keras_model=quantized, qat={"scheme": SCHEME})
    pin_input_range(qat)
    return qat


def pin_input_range(model: SSDModel) -> None:
    """Sets the input's fake-quant range to what preprocessing makes of pixels 0..255."""
    pre = model.spec.preprocessing
    lows = [(0.0 - m) / s for m, s in zip(pre.mean, pre.std)]
    highs = [(255.0 - m) / s for m, s in zip(pre.mean, pre.std)]
    layer = next((layer for layer in model.keras_model.layers if type(layer).__name__ == "QuantizeLayer"), None)
    if layer is None:
        raise ValueError(f"{model.spec.name}: not a QAT network (no input QuantizeLayer)")
    for weight in layer.weights:
        if weight.name.split("/")[-1].startswith(("quantize_layer_min", "min")):
            weight.assign(np.float32(min(lows)))
        elif weight.name.split("/")[-1].startswith(("quantize_layer_max", "max")):
            weight.assign(np.float32(max(highs)))


def is_qat(model: SSDModel) -> bool:
    return model.qat is not None


def _moving_average_ranges(keras_model) -> list[dict]:
    """The ``{"min_var", "max_var"}`` pairs of every moving-average quantizer:
    the activation and output ranges (weights take their own min/max each step,
    and the input's range is pinned)."""
    from tensorflow_model_optimization.python.core.quantization.keras import quantize_wrapper, quantizers

    found = []
    for layer in keras_model.submodules:
        if not isinstance(layer, quantize_wrapper.QuantizeWrapper):
            continue
        for activation in layer._quantize_activations:
            if isinstance(activation.quantizer, quantizers.MovingAverageQuantizer):
                found += [getattr(activation, name) for name in ("_pre_activation_vars", "_post_activation_vars")
                          if hasattr(activation, name)]
        if layer._output_quantizers and isinstance(layer._output_quantizers[0], quantizers.MovingAverageQuantizer):
            found.append(layer._output_quantizer_vars)
    return found


# tfmot's MovingAverageQuantizer (quantizers.py, quant_ops.MovingAvgQuantize): ranges start at [-6, 6]
# and follow each training batch's min/max with this decay.
_EMA_DECAY = 0.999


def calibrate_ranges(model: SSDModel, batches, sweeps: int = 2) -> int:
    """Sets every activation range of a QAT network to the min/max its
    activations reach on ``batches`` (preprocessed images), as TFLite's
    post-training calibration does; returns how many ranges were set.

    Why: tfmot starts each range at [-6, 6] and moves it by 0.1% of each
    batch's min/max (EMA decay 0.999), so a fine-tune of a few hundred steps
    trains and exports with ranges still near [-6, 6] (0.999^300 = 0.74 of the
    start remains after 300 steps): activations beyond 6 clip, small ones get
    coarse steps. tfmot has no calibration hook, so each batch's range is read
    back from one training-mode pass: the EMA update ``new = old + (batch -
    old) * (1 - decay)`` gives ``batch = old + (new - old) / (1 - decay)``.
    Batch norm runs in inference mode meanwhile. Each sweep sees the ranges
    the previous one set, so later layers are measured on inputs clipped as
    int8 will clip them.
    """
    pairs = _moving_average_ranges(model.keras_model)
    norms = [(layer, layer.trainable) for layer in model.keras_model.submodules
             if isinstance(layer, keras.layers.BatchNormalization)]
    for layer, _ in norms:
        layer.trainable = False  # Keras 2: inference mode
    step = 1.0 - _EMA_DECAY
    try:
        for _ in range(sweeps):
            lows = [np.full(p["min_var"].shape, np.inf, np.float32) for p in pairs]
            highs = [np.full(p["max_var"].shape, -np.inf, np.float32) for p in pairs]
            for images in batches:
                before = [(p["min_var"].numpy(), p["max_var"].numpy()) for p in pairs]
                model.keras_model(images, training=True)
                for i, (pair, (low, high)) in enumerate(zip(pairs, before)):
                    lows[i] = np.minimum(lows[i], low + (pair["min_var"].numpy() - low) / step)
                    highs[i] = np.maximum(highs[i], high + (pair["max_var"].numpy() - high) / step)
                    pair["min_var"].assign(low)  # the sweep measures with the ranges it started with
                    pair["max_var"].assign(high)
            for pair, low, high in zip(pairs, lows, highs):
                pair["min_var"].assign(np.minimum(low, 0.0))
                pair["max_var"].assign(np.maximum(high, 0.0))
    finally:
        for layer, trainable in norms:
            layer.trainable = trainable
    return len(pairs)
