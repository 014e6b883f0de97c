"""ONNX export: checker-clean, spec in metadata, ONNX Runtime and OpenCV DNN agree with the SavedModel."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from ssdkit.convert.export import ExportOptions, export, prepare_model  # noqa: E402
from ssdkit.runtime import Detector  # noqa: E402
from ssdkit.runtime.model_files import read_spec  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    with pytest.warns(UserWarning):
        model = prepare_model("ssd_mnv2", width=0.35, input_size=(96, 96), labels=("a", "b"), backbone_weights="none")
    out = tmp_path_factory.mktemp("onnx")
    saved_model, path = export(model, "onnx", out, ExportOptions(dynamic_batch=True))
    return model, saved_model, path


def test_file_is_valid_and_carries_its_spec(exported):
    model, _, path = exported
    assert path.name == "ssd_mnv2_raw.onnx"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    assert [i.name for i in proto.graph.input] == ["normalized_images"]
    assert [o.name for o in proto.graph.output] == ["box_encodings", "class_predictions"]
    spec = read_spec(path)
    assert spec.labels == ("a", "b") and spec.outputs.kind == "raw" and not spec.outputs.scores_activated


def test_onnx_runtime_and_opencv_agree_with_the_savedmodel(exported):
    model, saved_model, path = exported
    images = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    reference = tf.saved_model.load(str(saved_model)).signatures["raw_batch"](normalized_images=tf.constant(images))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boxes, scores = session.run(None, {"normalized_images": images})  # dynamic batch of 2
    np.testing.assert_allclose(boxes, reference["box_encodings"].numpy(), atol=1e-4)
    np.testing.assert_allclose(scores, reference["class_predictions"].numpy(), atol=1e-4)
    cv2 = pytest.importorskip("cv2")
    net = cv2.dnn.readNetFromONNX(str(path))
    net.setInput(images[:1])
    outputs = dict(zip(net.getUnconnectedOutLayersNames(), net.forward(net.getUnconnectedOutLayersNames())))
    np.testing.assert_allclose(outputs["box_encodings"], reference["box_encodings"].numpy()[:1], atol=1e-3)


def test_detector_runs_the_onnx_file(exported):
    detections = Detector(exported[2], score_threshold=0.0).detect(np.zeros((40, 50, 3), np.uint8))
    assert detections and all(d.label in ("a", "b") for d in detections)


def test_unsupported_opset_is_one_clear_error(exported, tmp_path):
    from ssdkit.convert.savedmodel2onnx import export_onnx

    model, saved_model, _ = exported
    with pytest.raises(ValueError, match="opset 9 is not supported, expected 13-17"):
        export_onnx(saved_model, model.spec, tmp_path, opset=9)
    assert not list(tmp_path.iterdir())
