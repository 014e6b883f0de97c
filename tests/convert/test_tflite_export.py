"""TFLite export: every variant converts and runs in the real interpreter."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from ssdkit.calibration.synth import iter_images, render  # noqa: E402
from ssdkit.convert.export import ExportOptions, export, prepare_model  # noqa: E402
from ssdkit.convert.savedmodel2tflite import TFLiteOptions, export_tflite  # noqa: E402
from ssdkit.convert.tflite_flatbuffer import read_custom_options  # noqa: E402
from ssdkit.runtime import Detector, postprocess  # noqa: E402
from ssdkit.runtime.backends import open_backend  # noqa: E402
from ssdkit.runtime.model_files import read_spec  # noqa: E402
from ssdkit.runtime.preprocess import preprocess  # noqa: E402

LABELS = ("circle", "square", "triangle")
SIZE = 96


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny ssd_mnv2 whose head gives spread-out scores (no ties), as a SavedModel."""
    with pytest.warns(UserWarning):
        model = prepare_model("ssd_mnv2", width=0.35, input_size=(SIZE, SIZE), labels=LABELS, backbone_weights="none")
    rng = np.random.default_rng(0)
    for weight in model.keras_model.weights:
        if "Predictor" in weight.name and "kernel" in weight.name:
            weight.assign(rng.normal(0, 0.3, weight.shape).astype(np.float32))
    out = tmp_path_factory.mktemp("tflite")
    (saved_model,) = export(model, "savedmodel", out)
    return model.spec, saved_model, out


@pytest.fixture(scope="module")
def variants(saved):
    spec, saved_model, out = saved
    calibration = list(iter_images(7, 16, SIZE))
    made = {}
    for key, options in {
        "fp32": TFLiteOptions(quant="fp32"),
        "fp32_nonms": TFLiteOptions(quant="fp32", nms=False),
        "int8": TFLiteOptions(quant="int8", score_threshold=0.05),
        "int8_nonms_int8io": TFLiteOptions(quant="int8", nms=False, io="int8"),
        "fp16": TFLiteOptions(quant="fp16"),
        "dynamic_regular": TFLiteOptions(quant="dynamic", regular_nms=True, detections_per_class=2, max_detections=5),
    }.items():
        folder = out / key
        folder.mkdir()
        made[key] = export_tflite(saved_model, spec, folder, options, calibration)
    return made


IMAGE = render(1, 3, 150)[0]  # not the model's input size: the detector resizes


def test_every_variant_runs_and_carries_its_spec(saved, variants):
    spec = saved[0]
    for key, path in variants.items():
        embedded = read_spec(path)
        assert embedded.labels == LABELS and embedded.anchors == spec.anchors
        assert embedded.outputs.kind == ("raw" if "nonms" in key else "detections")
        detections = Detector(path, score_threshold=0.0).detect(IMAGE)
        assert detections, key
        for d in detections:
            assert 0 <= d.box[0] <= d.box[2] <= 150 and 0 <= d.box[1] <= d.box[3] <= 150
            assert d.label in LABELS


def test_file_names_and_io_types(variants):
    assert variants["int8"].name == "ssd_mnv2_int8.tflite"
    assert variants["fp32_nonms"].name == "ssd_mnv2_fp32_nonms.tflite"
    int8 = open_backend(variants["int8"])
    assert int8.inputs[0].dtype == np.uint8 and all(o.dtype == np.float32 for o in int8.outputs)
    raw = open_backend(variants["int8_nonms_int8io"])
    assert raw.inputs[0].dtype == np.int8 and all(o.dtype == np.int8 for o in raw.outputs)
    assert open_backend(variants["fp32"]).inputs[0].dtype == np.float32


def test_embedded_nms_equals_shared_nms_on_raw_outputs(saved, variants):
    spec = saved[0]
    with_op = open_backend(variants["fp32"])
    raw_model = open_backend(variants["fp32_nonms"])
    roles = read_spec(variants["fp32_nonms"]).outputs
    op_roles = read_spec(variants["fp32"]).outputs
    for seed in range(5):
        tensor, _ = preprocess(render(3, seed, SIZE)[0], spec.preprocessing)
        raw = raw_model.run(tensor)
        ours = postprocess.detection_postprocess(
            raw[roles.name_of("box_encodings")][0], raw[roles.name_of("class_predictions")][0],
            spec.anchors_center_size(), max_detections=100, nms_score_threshold=spec.postprocessing.score_threshold,
            nms_iou_threshold=spec.postprocessing.iou_threshold)
        op = with_op.run(tensor)
        count = int(op[op_roles.name_of("num_detections")][0])
        assert count == ours[3]
        np.testing.assert_allclose(op[op_roles.name_of("detection_scores")][0][:count], ours[2][:count], atol=1e-5)
        np.testing.assert_allclose(op[op_roles.name_of("detection_boxes")][0][:count], ours[0][:count], atol=1e-5)
        np.testing.assert_array_equal(op[op_roles.name_of("detection_classes")][0][:count], ours[1][:count])


def test_detections_per_class_is_written_into_the_op(variants):
    (options,) = read_custom_options(variants["dynamic_regular"].read_bytes(), "TFLite_Detection_PostProcess")
    assert options["detections_per_class"] == 2 and options["use_regular_nms"] and options["max_detections"] == 5
    detections = Detector(variants["dynamic_regular"], score_threshold=0.0).detect(IMAGE)
    assert len(detections) <= 5
    assert max(np.bincount([d.class_id for d in detections])) <= 2


def test_int8_agrees_with_fp32(variants):
    fp32 = Detector(variants["fp32"], score_threshold=0.0).detect(IMAGE)[0]
    int8 = Detector(variants["int8"], score_threshold=0.0).detect(IMAGE)
    best = max(int8[:5], key=lambda d: _iou(d.box, fp32.box))
    assert _iou(best.box, fp32.box) > 0.8


def _iou(a, b):
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_bad_calibration_data_is_a_clear_error_and_writes_nothing(saved, tmp_path):
    spec, saved_model, _ = saved
    empty = tmp_path / "no_images"
    empty.mkdir()
    (empty / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="no_images: no usable calibration images"), pytest.warns(UserWarning, match="broken.jpg"):
        export(prepare_model("ssd_mnv2", width=0.35, input_size=(SIZE, SIZE), labels=LABELS, backbone_weights="none"),
               "tflite", out, ExportOptions(calib_data=str(empty)))
    assert not out.exists()


def test_detecting_on_a_tflite_file_never_imports_tensorflow(variants):
    import subprocess
    import sys

    script = (
        "import sys, numpy as np\n"
        "from ssdkit.runtime import Detector\n"
        f"d = Detector({str(variants['int8'])!r}, score_threshold=0.0)\n"
        "print(len(d.detect(np.zeros((50, 70, 3), np.uint8))) > 0, 'tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]


def test_int8_export_writes_the_quantization_report(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("SSDKIT_CACHE", str(tmp_path / "cache"))
    with pytest.warns(UserWarning):
        model = prepare_model("ssd_mnv2", width=0.35, input_size=(SIZE, SIZE), labels=("circle", "square", "triangle", "cross"),
                              backbone_weights="none")
    written = export(model, "tflite", tmp_path / "out", ExportOptions(calib_samples=8))
    names = sorted(p.name for p in written)
    assert names == sorted(["saved_model", "ssd_mnv2_int8.tflite", "ssd_mnv2_fp32.tflite", "ssd_mnv2_int8_nonms.tflite",
                            "ssd_mnv2_fp32_nonms.tflite", "report.json", "report.md"])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["models"]["int8"]["size_mb"] < 0.5 * report["models"]["fp32"]["size_mb"]
    assert report["evaluation_set"]["images"] == 100
    assert 0 <= report["int8_vs_fp32"]["detection_agreement"] <= 1
    assert set(report["int8_vs_fp32"]["raw_output_difference"]) == {"box_encodings", "class_predictions"}
    assert "| ssd_mnv2_int8.tflite |" in (tmp_path / "out" / "report.md").read_text()
