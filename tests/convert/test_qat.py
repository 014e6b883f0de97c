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
