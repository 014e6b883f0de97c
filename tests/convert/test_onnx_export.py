"""ONNX export: checker-clean, spec in metadata, ONNX Runtime and OpenCV DNN agree with the SavedModel;
the NMS variant equals the shared NMS; int8 is QDQ with its report; failures are one line and leave nothing."""
import dataclasses
import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from ssdkit.datasets.synth import render  # noqa: E402
from ssdkit.cli import main  # noqa: E402
from ssdkit.convert.export import ExportOptions, export  # noqa: E402
from ssdkit.convert.checkpoint import prepare_model  # noqa: E402
from ssdkit.convert.onnx.files import write_onnx  # noqa: E402
from ssdkit.convert.onnx.nms import add_nms  # noqa: E402
from ssdkit.convert.onnx.quant import calibration_reader, quantize_onnx  # noqa: E402
from ssdkit.convert.onnx.savedmodel2onnx import export_onnx  # noqa: E402
from ssdkit.runtime import Detector  # noqa: E402
from ssdkit.runtime.boxes import iou_matrix  # noqa: E402
from ssdkit.runtime.model_files import read_spec  # noqa: E402
from ssdkit.runtime.box_coder import decode_center_size  # noqa: E402
from ssdkit.runtime.decoder import sigmoid  # noqa: E402
from ssdkit.runtime.nms import batched_nms  # noqa: E402
from ssdkit.runtime.preprocess import preprocess  # noqa: E402

DETECTIONS = ["detection_boxes", "detection_classes", "detection_scores", "num_detections"]
TINY = ("--model", "ssd_mnv2", "--width", "0.35", "--input-size", "96", "--backbone-weights", "none")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every ONNX file of one export: raw, int8, both NMS variants and the report."""
    with pytest.warns(UserWarning):
        model = prepare_model("ssd_mnv2", width=0.35, input_size=(96, 96), labels=("a", "b"), backbone_weights="none")
    out = tmp_path_factory.mktemp("onnx")
    options = ExportOptions(dynamic_batch=True, onnx_nms=True, onnx_quant="int8", calib_samples=8)
    written = export(model, "onnx", out, options)
    return model, {path.name: path for path in written}


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_export_writes_every_variant(exported):
    _, files = exported
    assert sorted(files) == sorted(["saved_model", "ssd_mnv2_raw.onnx", "ssd_mnv2_raw_int8.onnx", "ssd_mnv2_nms.onnx",
                                    "ssd_mnv2_nms_int8.onnx", "onnx_report.json", "onnx_report.md"])
    folder = files["saved_model"].parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)  # no temporary files left


def test_file_is_valid_and_carries_its_spec(exported):
    _, files = exported
    path = files["ssd_mnv2_raw.onnx"]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    assert [i.name for i in proto.graph.input] == ["normalized_images"]
    assert [o.name for o in proto.graph.output] == ["box_encodings", "class_predictions"]
    spec, runtime = read_spec(path), session(path)
    shapes = {i.name: list(i.shape) for i in [*runtime.get_inputs(), *runtime.get_outputs()]}
    assert shapes == {"normalized_images": ["N", 96, 96, 3], "box_encodings": ["N", spec.num_anchors, 4],
                      "class_predictions": ["N", spec.num_anchors, 3]}
    assert spec.labels == ("a", "b") and spec.outputs.kind == "raw" and not spec.outputs.scores_activated


def test_onnx_runtime_and_opencv_agree_with_the_savedmodel(exported):
    _, files = exported
    images = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    raw_batch = tf.saved_model.load(str(files["saved_model"])).signatures["raw_batch"]
    reference = raw_batch(normalized_images=tf.constant(images))
    boxes, scores = session(files["ssd_mnv2_raw.onnx"]).run(None, {"normalized_images": images})  # dynamic batch of 2
    np.testing.assert_allclose(boxes, reference["box_encodings"].numpy(), atol=1e-4)
    np.testing.assert_allclose(scores, reference["class_predictions"].numpy(), atol=1e-4)
    cv2 = pytest.importorskip("cv2")
    net = cv2.dnn.readNetFromONNX(str(files["ssd_mnv2_raw.onnx"]))
    net.setInput(images[:1])
    outputs = dict(zip(net.getUnconnectedOutLayersNames(), net.forward(net.getUnconnectedOutLayersNames())))
    np.testing.assert_allclose(outputs["box_encodings"], reference["box_encodings"].numpy()[:1], atol=1e-3)


@pytest.mark.parametrize("name", ["ssd_mnv2_raw.onnx", "ssd_mnv2_raw_int8.onnx", "ssd_mnv2_nms.onnx",
                                  "ssd_mnv2_nms_int8.onnx"])
def test_detector_runs_every_onnx_file(exported, name):
    detector = Detector(exported[1][name], score_threshold=0.0)
    assert detector.roles.kind == ("raw" if "_raw" in name else "detections")
    assert detector.backend.inputs[0].shape[0] == -1  # so detect_batch runs both images at once
    found = detector.detect_batch([np.zeros((40, 50, 3), np.uint8), render(2, 0, 96)[0]])
    assert all(detections and {d.label for d in detections} <= {"a", "b"} for detections in found)


def test_nms_file_has_the_od_api_outputs_and_the_spec_anchors(exported):
    model, files = exported
    path = files["ssd_mnv2_nms.onnx"]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.name for o in proto.graph.output] == DETECTIONS
    assert {n.op_type for n in proto.graph.node} >= {"NonMaxSuppression", "TopK"}
    anchors = next(i for i in proto.graph.initializer if i.name == "nms/anchors")
    np.testing.assert_array_equal(numpy_helper.to_array(anchors), model.spec.anchors_center_size())
    spec = read_spec(path)
    assert spec.outputs.kind == "detections" and dict(spec.outputs.names) == {n: n for n in DETECTIONS}
    images = np.random.default_rng(1).uniform(-1, 1, (3, 96, 96, 3)).astype(np.float32)
    boxes, classes, scores, count = session(path).run(None, {"normalized_images": images})
    assert boxes.shape == (3, 100, 4) and classes.shape == scores.shape == (3, 100) and count.shape == (3,)
    assert np.all((boxes >= 0) & (boxes <= 1)) and set(np.unique(classes)) <= {0.0, 1.0}


def identity_raw_model(anchors: int, classes: int) -> onnx.ModelProto:
    """A "network" whose raw outputs are its inputs, so the NMS graph can be fed chosen values."""
    dims = {"box_encodings": ["N", anchors, 4], "class_predictions": ["N", anchors, classes + 1]}
    graph = helper.make_graph(
        [helper.make_node("Identity", [f"{name}_in"], [name]) for name in dims], "raw",
        [helper.make_tensor_value_info(f"{name}_in", TensorProto.FLOAT, shape) for name, shape in dims.items()],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in dims.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def shared_nms(encodings, logits, spec, post):
    """The runtime's per-class NMS on one image's raw outputs, capped as the OD API caps it."""
    boxes = decode_center_size(encodings, spec.anchors_center_size(), spec.box_coder.scales)
    scores = sigmoid(logits)[:, 1:]
    anchor_ids, class_ids = np.nonzero(scores >= post.score_threshold)
    kept = batched_nms(boxes[anchor_ids], scores[anchor_ids, class_ids], class_ids, post.iou_threshold,
                       post.score_threshold, max_output=len(anchor_ids))
    per_class, best = {}, []
    for k in kept:
        per_class[class_ids[k]] = per_class.get(class_ids[k], 0) + 1
        if per_class[class_ids[k]] <= post.detections_per_class:
            best.append(k)
    best = np.asarray(best[:post.max_detections], np.int64)
    return np.clip(boxes[anchor_ids[best]], 0, 1), class_ids[best], scores[anchor_ids[best], class_ids[best]]


def test_nms_graph_equals_the_shared_nms_on_raw_outputs(exported, tmp_path):
    spec = exported[0].spec
    post = dataclasses.replace(spec.postprocessing, score_threshold=0.3, detections_per_class=8, max_detections=12)
    model = add_nms(identity_raw_model(spec.num_anchors, spec.num_classes), spec, post)
    onnx.checker.check_model(model, full_check=True)
    rng = np.random.default_rng(2)
    encodings = rng.normal(0, 1, (3, spec.num_anchors, 4)).astype(np.float32)
    logits = rng.normal(0, 2, (3, spec.num_anchors, spec.num_classes + 1)).astype(np.float32)
    runtime = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    boxes, classes, scores, count = runtime.run(None, {"box_encodings_in": encodings, "class_predictions_in": logits})
    for i in range(3):
        ref_boxes, ref_classes, ref_scores = shared_nms(encodings[i], logits[i], spec, post)
        n = int(count[i])
        assert n == len(ref_scores) == post.max_detections
        assert not boxes[i, n:].any() and not scores[i, n:].any() and not classes[i, n:].any()
        # Same detections up to the order of tied scores: each reference one has a twin of its class.
        iou = iou_matrix(ref_boxes, boxes[i, :n])
        twin = np.argmax(iou * (ref_classes[:, None] == classes[i, :n][None]), axis=1)
        assert np.all(iou[np.arange(n), twin] > 0.99) and len(set(twin)) == n
        np.testing.assert_allclose(scores[i, twin], ref_scores, atol=1e-6)
    cv2 = pytest.importorskip("cv2")  # OpenCV's DNN runs the same graph to the same detections
    onnx.save(model, str(tmp_path / "nms.onnx"))
    net = cv2.dnn.readNetFromONNX(str(tmp_path / "nms.onnx"))
    net.setInput(encodings[:1], "box_encodings_in")
    net.setInput(logits[:1], "class_predictions_in")
    outputs = net.forward(DETECTIONS)
    for value, expected in zip(outputs, (boxes, classes, scores, count)):
        np.testing.assert_allclose(value, expected[:1], atol=1e-6)


def test_int8_file_is_per_channel_qdq_and_keeps_names_and_spec(exported):
    _, files = exported
    path = files["ssd_mnv2_raw_int8.onnx"]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.name for o in proto.graph.output] == ["box_encodings", "class_predictions"]
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops and not ops & {"QLinearConv", "ConvInteger"}
    constants = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    kernels = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in constants
               and constants[n.input[0]].ndim == 4]
    assert kernels and all(constants[n.input[0]].dtype == np.int8 for n in kernels)
    # One scale per output channel of every convolution kernel.
    assert all(constants[n.input[1]].shape == constants[n.input[0]].shape[:1] for n in kernels)
    assert path.stat().st_size < 0.5 * files["ssd_mnv2_raw.onnx"].stat().st_size
    assert read_spec(path) == read_spec(files["ssd_mnv2_raw.onnx"])


def test_calibration_feeds_the_runtime_preprocessing(exported):
    spec = exported[0].spec
    images = [render(3, seed, 150)[0] for seed in range(2)]
    reader = calibration_reader(images, spec, "normalized_images")
    for image in images:
        np.testing.assert_array_equal(reader.get_next()["normalized_images"], preprocess(image, spec.preprocessing)[0])
    assert reader.get_next() is None


def test_int8_report_compares_with_fp32(exported):
    _, files = exported
    report = json.loads(files["onnx_report.json"].read_text())
    assert report["models"]["fp32"]["file"] == "ssd_mnv2_raw.onnx"
    assert report["models"]["int8"]["file"] == "ssd_mnv2_raw_int8.onnx"
    assert "mAP@0.5_drop_points" in report["int8_vs_fp32"] and report["evaluation_set"]["images"] == 100
    assert set(report["int8_vs_fp32"]["raw_output_difference"]) == {"box_encodings", "class_predictions"}
    assert "| ssd_mnv2_raw_int8.onnx |" in files["onnx_report.md"].read_text()
    assert not (files["saved_model"].parent / "report.json").exists()  # the TFLite report's name stays free


def test_unsupported_opset_is_one_clear_error(exported, tmp_path):
    model, files = exported
    with pytest.raises(ValueError, match="opset 9 is not supported, expected 13-17"):
        export_onnx(files["saved_model"], model.spec, tmp_path, opset=9)
    with pytest.raises(ValueError, match="opset 19 is not supported"):
        export(model, "onnx", tmp_path / "out", ExportOptions(opset=19))
    assert not list(tmp_path.iterdir())


def test_savedmodel_without_raw_signature_is_one_clear_error(exported, tmp_path):
    module = tf.Module()
    module.serve = tf.function(lambda x: {"y": x + 1}, input_signature=[tf.TensorSpec([1], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "other"), signatures={"serving_default": module.serve})
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"other: SavedModel has no 'raw' signature; export it with ssdkit$"):
        export_onnx(tmp_path / "other", exported[0].spec, out)
    with pytest.raises(FileNotFoundError, match="not a SavedModel folder"):
        export_onnx(tmp_path / "missing", exported[0].spec, out)
    assert not out.exists()


def test_tf2onnx_failure_is_one_line_and_writes_nothing(exported, tmp_path, monkeypatch):
    import tf2onnx

    def fail(*args, **kwargs):
        raise ValueError("unsupported op Foo\n  graph dump line 1\n  graph dump line 2")

    monkeypatch.setattr(tf2onnx.convert, "from_function", fail)
    with pytest.raises(RuntimeError) as error:
        export_onnx(exported[1]["saved_model"], exported[0].spec, tmp_path)
    assert "tf2onnx could not convert the model (ValueError: unsupported op Foo)" in str(error.value)
    assert "\n" not in str(error.value) and not list(tmp_path.iterdir())


def test_invalid_graph_and_quantization_failures_write_nothing(exported, tmp_path, monkeypatch):
    from onnxruntime import quantization

    model, files = exported
    broken = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["missing"], ["y"])], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    with pytest.raises(RuntimeError, match="broken.onnx: the ONNX graph is invalid"):
        write_onnx(broken, model.spec, tmp_path / "broken.onnx")
    raw = tmp_path / "ssd_mnv2_raw.onnx"
    raw.write_bytes(files["ssd_mnv2_raw.onnx"].read_bytes())
    def fail(*args, **kwargs):
        raise MemoryError("out of memory\n  allocation trace")

    monkeypatch.setattr(quantization, "quantize_static", fail)
    with pytest.raises(RuntimeError, match=r"ONNX Runtime could not quantize the model \(MemoryError: out of memory\)$"):
        quantize_onnx(raw, [render(3, 0, 96)[0]])
    assert [p.name for p in tmp_path.iterdir()] == ["ssd_mnv2_raw.onnx"]


@pytest.mark.parametrize("argv, message", [
    (["--opset", "12"], "argument --opset: ONNX opset must be an integer from 13 to 17, got 12"),
    (["--quant", "fp16"], "ONNX export supports --quant fp32 or int8, not 'fp16'"),
])
def test_bad_onnx_options_exit_2_before_any_work(capsys, tmp_path, argv, message):
    out = tmp_path / "out"
    assert main(["export", *TINY, "--format", "onnx", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len([line for line in err.splitlines() if "error:" in line]) == 1
    assert not out.exists()


@pytest.mark.parametrize("argv, expected", [
    ([], {"onnx_nms": False, "onnx_quant": "fp32"}),
    (["--onnx-nms", "--quant", "int8"], {"onnx_nms": True, "onnx_quant": "int8"}),
])
def test_cli_maps_the_onnx_options(tmp_path, monkeypatch, argv, expected):
    from ssdkit.convert import checkpoint, export as export_module

    seen = {}

    def fake_export(model, fmt, out, options, force=False):
        seen["options"] = options
        return []

    monkeypatch.setattr(checkpoint, "prepare_model", lambda *args, **kwargs: None)
    monkeypatch.setattr(export_module, "export", fake_export)
    assert main(["export", *TINY, "--format", "onnx", "--out", str(tmp_path), *argv]) == 0
    options = seen["options"]
    assert {k: getattr(options, k) for k in expected} == expected and options.tflite.quant == "int8"
