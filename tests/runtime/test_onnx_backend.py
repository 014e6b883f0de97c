"""The Detector on ONNX Runtime agrees with the TFLite interpreter on the same model."""
import dataclasses

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tf2onnx = pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")

from ssdkit.datasets.synth import render  # noqa: E402
from ssdkit.convert.export import ExportOptions, export  # noqa: E402
from ssdkit.convert.checkpoint import prepare_model  # noqa: E402
from ssdkit.convert.tflite.savedmodel2tflite import TFLiteOptions  # noqa: E402
from ssdkit.runtime import Detector  # noqa: E402
from ssdkit.runtime.decoder import sigmoid  # noqa: E402
from ssdkit.runtime.preprocess import preprocess  # noqa: E402
from ssdkit.runtime.roles import OutputRoles  # noqa: E402


def test_onnx_and_tflite_give_the_same_detections(tmp_path):
    with pytest.warns(UserWarning):
        model = prepare_model("ssd_mnv2", width=0.35, input_size=(96, 96), labels=("a", "b"), backbone_weights="none")
    rng = np.random.default_rng(1)
    for weight in model.keras_model.weights:
        if "Predictor" in weight.name and "kernel" in weight.name:
            weight.assign(rng.normal(0, 0.3, weight.shape).astype(np.float32))
    saved_model, tflite = export(model, "tflite", tmp_path, ExportOptions(tflite=TFLiteOptions(quant="fp32", nms=False)))
    loaded = tf.saved_model.load(str(saved_model))  # keep it alive: the signature uses its variables
    raw = loaded.signatures["raw"]
    function = tf.function(lambda x: raw(normalized_images=x),
                           input_signature=[tf.TensorSpec([1, 96, 96, 3], tf.float32, name="normalized_images")])
    onnx_path = tmp_path / "model.onnx"
    tf2onnx.convert.from_function(function, input_signature=function.input_signature, opset=17, output_path=str(onnx_path))
    roles = OutputRoles("raw", (("box_encodings", "box_encodings"), ("class_predictions", "class_predictions")))
    (tmp_path / "model.onnx.spec.json").write_text(dataclasses.replace(model.spec, outputs=roles).to_json())

    # Same raw outputs (ONNX gives logits, the TFLite raw variant sigmoid scores) ...
    image = render(4, 0, 120)[0]
    onnx_detector, tflite_detector = Detector(onnx_path, score_threshold=0.2), Detector(tflite, score_threshold=0.2)
    tensor, _ = preprocess(image, model.spec.preprocessing)
    onnx_out, tflite_out = onnx_detector.backend.run(tensor), tflite_detector.backend.run(tensor)
    tflite_roles = tflite_detector.roles
    np.testing.assert_allclose(onnx_out["box_encodings"], tflite_out[tflite_roles.name_of("box_encodings")], atol=1e-4)
    np.testing.assert_allclose(sigmoid(onnx_out["class_predictions"]),
                               tflite_out[tflite_roles.name_of("class_predictions")], atol=1e-5)
    # ... and the same detections, up to the order of near-ties a random head produces.
    from_onnx, from_tflite = onnx_detector.detect(image), tflite_detector.detect(image)
    assert from_onnx and len(from_onnx) == len(from_tflite)
    np.testing.assert_allclose(sorted(d.score for d in from_onnx), sorted(d.score for d in from_tflite), atol=1e-4)
