"""Quantization-aware training: a tiny MobileNetV3 SSDLite fine-tuned with
fake quantization for two steps, exported to full-integer TFLite with the
postprocess op and no calibration pass, run by the runtime."""
import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_model_optimization")

# Building the QAT network twice (train, export) and converting: about 3 minutes on
# a quiet 2-core machine, several times that when other jobs share it.
pytestmark = pytest.mark.timeout(2400)


@pytest.fixture(scope="module")
def qat_export(tmp_path_factory):
    from ssdkit.cli import main
    from ssdkit.convert.checkpoint import prepare_model, save_checkpoint
    from ssdkit.datasets.synth import generate

    root = tmp_path_factory.mktemp("qat")
    generate(root / "train", 6, seed=10, size=96)
    annotations = root / "train" / "annotations.json"
    labels = tuple(c["name"] for c in json.loads(annotations.read_text())["categories"])
    with pytest.warns(UserWarning, match="untrained"):
        model = prepare_model("ssdlite_mnv3_small", width=0.35, input_size=(96, 96), labels=labels,
                              backbone_weights="none")
    save_checkpoint(model, root / "float.npz")
    assert main(["train", "--qat", "--weights", str(root / "float.npz"), "--data", str(annotations),
                 "--steps", "2", "--batch-size", "2", "--warmup-steps", "1", "--eval-every", "100",
                 "--out", str(root / "qat")]) == 0
    checkpoint = root / "qat" / "ssdlite_mnv3_small.npz"
    assert main(["export", "--weights", str(checkpoint), "--format", "tflite", "--no-report",
                 "--out", str(root / "export")]) == 0
    return checkpoint, root / "export" / "ssdlite_mnv3_small_int8.tflite", root


def test_the_checkpoint_records_qat_and_its_ranges(qat_export):
    from ssdkit.convert.checkpoint import read_checkpoint
    from ssdkit.convert.models.qat import SCHEME

    checkpoint = read_checkpoint(qat_export[0])
    assert checkpoint.meta["qat"] == {"scheme": SCHEME}
    assert checkpoint.meta["train"]["step"] == 2
    ranges = [name for name in checkpoint.weights if name.endswith(("output_min:0", "post_activation_min:0"))]
    assert len(ranges) > 50  # hard-swish pieces and the squeeze-excite blocks included
    assert any(name.startswith("quant_qat_constant_op_") for name in ranges)
    assert checkpoint.weights["quantize_layer/quantize_layer_min:0"] == pytest.approx(-1.0)
    # calibrated from the float activations before the first step, not tfmot's start at [-6, 6]
    lows = [float(np.min(checkpoint.weights[name])) for name in ranges]
    assert sum(abs(low + 6.0) > 0.1 for low in lows) > 0.9 * len(lows)
    assert all(low <= 0.0 for low in lows)


def test_export_is_full_integer_with_the_postprocess_op_and_runs_in_the_runtime(qat_export):
    from ai_edge_litert.interpreter import Interpreter

    from ssdkit.convert.tflite.postprocess_op import OP_NAME
    from ssdkit.runtime import Detector

    _, model, root = qat_export
    interpreter = Interpreter(model_path=str(model), experimental_preserve_all_tensors=True)
    tensors = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    op_names = [op["op_name"] for op in interpreter._get_ops_details()]
    assert OP_NAME in op_names
    floats = {op["op_name"] for op in interpreter._get_ops_details()
              if any(tensors.get(i) == np.float32 for i in [*op["inputs"], *op["outputs"]] if i >= 0)}
    assert floats <= {"DEQUANTIZE", OP_NAME}, f"float ops in a QAT export: {floats}"
    image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(next((root / "train" / "images").glob("*.jpg"))))
    with Detector(model, score_threshold=0.0) as detector:
        found = detector.detect(image)
    assert 0 < len(found) <= 100
    assert all(0 <= d.score <= 1 for d in found)


def test_qat_needs_a_trained_checkpoint(capsys):
    from ssdkit.cli import main

    assert main(["train", "--qat", "--model", "ssd_mnv2", "--steps", "1"]) == 2
    assert "--qat fine-tunes a trained float model" in capsys.readouterr().err


def _put_conv_batch_norm_outputs_on_rounding_boundaries(qat, image) -> int:
    """For each convolution + inference-mode batch norm of a QAT network, finds
    a value that the fused kernel (grappler's remapper, in a graph) and the two
    eager ops round differently, and sets that batch norm's int8 output range
    so an int8 rounding boundary lies between the two: what fine-tuning left
    by chance in the README's SSDLite MobileNetV3-Small, made certain here.
    Returns how many layers were set (0 where the machine's kernels agree)."""
    import tf_keras as keras
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper import QuantizeWrapper

    km, placed = qat.keras_model, 0
    for norm in km.layers:
        if not isinstance(norm, QuantizeWrapper) or not isinstance(norm.layer, keras.layers.BatchNormalization) \
                or not norm._output_quantizers:
            continue  # a batch norm followed by an activation: the activation's output is quantized
        conv = norm.inbound_nodes[0].inbound_layers
        if not isinstance(getattr(conv, "layer", None), keras.layers.Conv2D):  # Conv2D and DepthwiseConv2D
            continue
        inputs = tf.constant(keras.Model(km.inputs, conv.input)(image, training=False))

        def conv_norm(t, conv=conv, norm=norm):
            return norm.layer(conv(t, training=False), training=False)

        eager, graph = conv_norm(inputs).numpy(), tf.function(conv_norm)(inputs).numpy()
        apart = np.abs(eager - graph) * (np.abs(eager) > 1e-2)  # a value well away from zero
        index = np.unravel_index(np.argmax(apart), eager.shape)
        low, high = sorted((float(eager[index]), float(graph[index])))
        if not high - low >= 4 * np.spacing(np.float32(high)):  # float steps apart: a boundary fits between
            continue
        scale = abs(low + high) / 2 / 20.5  # zero on the grid (zero point 128), the boundary at +-20.5 steps
        norm._output_quantizer_vars["min_var"].assign(-128 * scale)
        norm._output_quantizer_vars["max_var"].assign(127 * scale)
        placed += 1
    return placed


def test_savedmodel_check_passes_a_qat_network_whose_fused_convolutions_round_across_int8_steps(tmp_path):
    """The export's SavedModel round-trip check compared eager Keras with a
    graph whose convolution + batch norm grappler fuses: a float rounding
    difference of ~1e-7 at an int8 rounding boundary became a whole step and
    spread (README's QAT checkpoint: 5149 of 8136 box encodings off by 0.25)."""
    import warnings

    from ssdkit.convert.checkpoint import prepare_model
    from ssdkit.convert.models.qat import calibrate_ranges, quantize_for_training
    from ssdkit.convert.savedmodel.keras2savedmodel import export_savedmodel
    from ssdkit.convert.train.loop import reestimate_batch_norm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained
        model = prepare_model("ssd_mnv2", width=0.35, input_size=(96, 96), labels=("a", "b"),
                              backbone_weights="none")
    # what `ssdkit train --qat` does before its first step: batch norm statistics measured, ranges calibrated
    images = np.random.default_rng(1).uniform(-1, 1, (4, 96, 96, 3)).astype(np.float32)
    reestimate_batch_norm(model, [(images, None)])
    qat = quantize_for_training(model)
    calibrate_ranges(qat, [images])
    image = np.random.default_rng(0).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)  # the check's input
    if _put_conv_batch_norm_outputs_on_rounding_boundaries(qat, image) == 0:
        pytest.skip("this machine's fused convolution + batch norm rounds as the eager ops do")
    eager = qat.keras_model(image, training=False)["box_encodings"].numpy()
    traced = tf.function(lambda t: qat.keras_model(t, training=False))(tf.constant(image))["box_encodings"].numpy()
    if not np.abs(eager - traced).max() > 1e-4:  # the state the check met: the fused graph an int8 step away
        pytest.skip("the flipped int8 steps did not reach the outputs on this machine")
    export_savedmodel(qat, tmp_path / "saved_model")  # raised "differs from the Keras model's" before the fix
