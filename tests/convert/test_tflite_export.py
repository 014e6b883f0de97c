"""TFLite export: every variant converts and runs in the real interpreter."""
import os
import re

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from ssdkit.datasets.synth import iter_images, render  # noqa: E402
from ssdkit.cli import main  # noqa: E402
from ssdkit.convert.export import ExportOptions, export  # noqa: E402
from ssdkit.convert.checkpoint import prepare_model  # noqa: E402
from ssdkit.convert.tflite.savedmodel2tflite import TFLiteOptions, export_tflite, export_tflite_variants  # noqa: E402
from ssdkit.convert.tflite.flatbuffer import read_custom_options  # noqa: E402
from ssdkit.runtime import Detector  # noqa: E402
from ssdkit.runtime.backends import open_backend  # noqa: E402
from ssdkit.runtime.model_files import read_spec, tflite_associated_files  # noqa: E402
from ssdkit.runtime.decoder import dequantize  # noqa: E402
from ssdkit.runtime.tflite_postprocess import detection_postprocess  # noqa: E402
from ssdkit.runtime.preprocess import preprocess  # noqa: E402

LABELS = ("circle", "square", "triangle")
SIZE = 96
OP = "TFLite_Detection_PostProcess"
TINY = ("--model", "ssd_mnv2", "--width", "0.35", "--input-size", str(SIZE), "--backbone-weights", "none")


def tiny_model():
    with pytest.warns(UserWarning, match="untrained"):
        return prepare_model("ssd_mnv2", width=0.35, input_size=(SIZE, SIZE), labels=LABELS, backbone_weights="none")


def lively(model):
    """Makes an untrained model's outputs spread out (no tied scores).

    Keras' random initialisation shrinks the activations layer after layer
    (to ~1e-6 at the head, every score 0.5), so each batch norm gets the
    statistics of its input on a few images, and the head random weights
    scaled to its fan-in."""
    import tf_keras as keras

    net = model.keras_model
    images = np.concatenate([preprocess(image, model.spec.preprocessing)[0] for image in iter_images(5, 8, SIZE)])
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            x = keras.Model(net.input, layer.input)(images, training=False).numpy()
            layer.moving_mean.assign(x.mean((0, 1, 2)))
            layer.moving_variance.assign(x.var((0, 1, 2)))
    rng = np.random.default_rng(0)
    for weight in net.weights:
        if "Predictor" in weight.name and "kernel" in weight.name:
            # Small enough for export_savedmodel's absolute round-trip tolerance of 1e-4.
            gain = 0.5 if "ClassPredictor" in weight.name else 0.25
            weight.assign(rng.normal(0, gain / np.sqrt(weight.shape[2]), weight.shape).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny ssd_mnv2 with spread-out outputs, as a SavedModel."""
    model = lively(tiny_model())
    out = tmp_path_factory.mktemp("tflite")
    (saved_model,) = export(model, "savedmodel", out)
    return model.spec, saved_model, out


@pytest.fixture(scope="module")
def variants(saved):
    spec, saved_model, out = saved
    options = {
        "fp32": TFLiteOptions(quant="fp32"),
        "fp32_nonms": TFLiteOptions(quant="fp32", nms=False),
        "int8": TFLiteOptions(quant="int8", score_threshold=0.6),
        "int8_nonms": TFLiteOptions(quant="int8", nms=False, io="int8", score_threshold=0.6),
        "fp16": TFLiteOptions(quant="fp16"),
        "dynamic": TFLiteOptions(quant="dynamic", regular_nms=True, detections_per_class=2, max_detections=5),
    }
    paths = export_tflite_variants(saved_model, spec, out / "variants", list(options.values()), list(iter_images(7, 16, SIZE)))
    return dict(zip(options, paths))


IMAGE = render(1, 3, 150)[0]  # not the model's input size: the detector resizes


def test_every_variant_runs_and_carries_its_spec(saved, variants):
    spec = saved[0]
    for key, path in variants.items():
        assert path.name == f"ssd_mnv2_{key}.tflite"
        embedded = read_spec(path)
        assert embedded.labels == LABELS and embedded.anchors == spec.anchors
        assert embedded.outputs.kind == ("raw" if "nonms" in key else "detections")
        assert embedded.outputs.scores_activated == ("nonms" in key)
        assert tflite_associated_files(path)["labels.txt"] == b"circle\nsquare\ntriangle\n"
        detections = Detector(path, score_threshold=0.0).detect(IMAGE)
        assert detections, key
        for d in detections:
            assert 0 <= d.box[0] <= d.box[2] <= 150 and 0 <= d.box[1] <= d.box[3] <= 150
            assert d.label in LABELS
    assert read_spec(variants["int8"]).postprocessing.score_threshold == 0.6
    assert read_spec(variants["dynamic"]).postprocessing.max_detections == 5


def test_io_types_follow_the_options(saved, variants, tmp_path):
    int8 = open_backend(variants["int8"])
    assert int8.inputs[0].dtype == np.uint8 and all(o.dtype == np.float32 for o in int8.outputs)
    raw = open_backend(variants["int8_nonms"])
    assert raw.inputs[0].dtype == np.int8 and all(o.dtype == np.int8 for o in raw.outputs)
    for key in ("fp32", "fp16", "dynamic"):
        assert open_backend(variants[key]).inputs[0].dtype == np.float32
    # Float I/O around the int8 body: float in, float raw outputs, int8 inside.
    spec, saved_model, _ = saved
    path = export_tflite(saved_model, spec, tmp_path, TFLiteOptions(nms=False, io="float"), list(iter_images(7, 4, SIZE)))
    wrapped = open_backend(path)
    assert wrapped.inputs[0].dtype == np.float32 and all(o.dtype == np.float32 for o in wrapped.outputs)
    assert path.stat().st_size < 0.5 * variants["fp32_nonms"].stat().st_size
    assert Detector(path, score_threshold=0.0).detect(IMAGE)


def _raw_scores_and_boxes(backend, roles, tensor):
    out = backend.run(tensor)
    values = []
    for role in ("box_encodings", "class_predictions"):
        info = next(o for o in backend.outputs if o.name == roles.name_of(role))
        value = out[info.name][0]
        values.append(dequantize(value, info.scale, info.zero_point) if info.quantized else value)
    return values


@pytest.mark.parametrize("quant", ["fp32", "int8"])
def test_embedded_nms_equals_shared_nms_on_raw_outputs(saved, variants, quant):
    spec = saved[0]
    with_op, raw_model = open_backend(variants[quant]), open_backend(variants[f"{quant}_nonms"])
    op_spec, raw_spec = read_spec(variants[quant]), read_spec(variants[f"{quant}_nonms"])
    post = raw_spec.postprocessing
    for seed in range(5):
        image = render(3, seed, SIZE)[0]
        encodings, scores = _raw_scores_and_boxes(raw_model, raw_spec.outputs, preprocess(image, spec.preprocessing, raw_model.inputs[0])[0])
        boxes, classes, top, count = detection_postprocess(
            encodings, scores, spec.anchors_center_size(), max_detections=post.max_detections,
            nms_score_threshold=post.score_threshold, nms_iou_threshold=post.iou_threshold)
        op = with_op.run(preprocess(image, spec.preprocessing, with_op.inputs[0])[0])
        name = op_spec.outputs.name_of
        n = int(op[name("num_detections")][0])
        assert n == count and (quant == "fp32" or 0 < n < 100)  # int8: the 0.6 threshold cuts
        np.testing.assert_allclose(op[name("detection_scores")][0][:n], top[:n], atol=1e-6)
        np.testing.assert_allclose(op[name("detection_boxes")][0][:n], boxes[:n], atol=1e-6)
        np.testing.assert_array_equal(op[name("detection_classes")][0][:n], classes[:n])


def test_detections_per_class_is_read_back_from_the_file(variants):
    (options,) = read_custom_options(variants["dynamic"].read_bytes(), OP)
    assert options["detections_per_class"] == 2 and options["use_regular_nms"] and options["max_detections"] == 5
    assert read_custom_options(variants["fp32"].read_bytes(), OP)[0]["detections_per_class"] == 100
    detections = Detector(variants["dynamic"], score_threshold=0.0).detect(IMAGE)
    assert len(detections) == 5  # 3 classes x 2 per class, then the best 5
    assert max(np.bincount([d.class_id for d in detections])) == 2


def test_bad_calibration_folder_is_a_clear_error_and_writes_nothing(tmp_path):
    empty = tmp_path / "no_images"
    empty.mkdir()
    (empty / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="no_images: no usable calibration images"), \
            pytest.warns(UserWarning, match="broken.jpg"):
        export(tiny_model(), "tflite", out, ExportOptions(calib_data=str(empty)))
    assert not out.exists()


@pytest.mark.parametrize("images, message", [
    ([], "needs representative images for calibration, got none"),
    ([np.zeros((20, 20), np.uint8)], r"image of shape \(20, 20\), expected HxWx3 RGB"),
])
def test_bad_calibration_images_are_rejected_before_conversion(saved, tmp_path, images, message):
    spec, saved_model, _ = saved
    with pytest.raises(ValueError, match=message):
        export_tflite(saved_model, spec, tmp_path / "out", TFLiteOptions(), images)
    assert not (tmp_path / "out").exists()


def test_edgetpu_export_from_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-compiler"))
    out = tmp_path / "out"
    code = main(["export", *TINY, "--num-classes", "2", "--format", "tflite", "--edgetpu", "--no-report",
                 "--calib-samples", "4", "--out", str(out)])
    printed, err = capsys.readouterr()
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["saved_model", "ssd_mnv2_int8.tflite", "ssd_mnv2_int8_edgetpu_report.md"]
    assert "edgetpu_compiler is not on PATH; ssd_mnv2_int8.tflite is ready for it" in err
    assert "converting to ssd_mnv2_int8.tflite, calibrated on 4 images" in err
    # The Edge TPU gets the whole network; the postprocess op and its two
    # dequantize inputs stay on the CPU, as in Coral's own SSD models.
    summary = next(line for line in err.splitlines() if "Edge TPU:" in line)
    assert "; on the CPU: DEQUANTIZE x2 (" in summary and "TFLite_Detection_PostProcess (" in summary
    report = (out / "ssd_mnv2_int8_edgetpu_report.md").read_text()
    assert report.count("| CPU |") == 3
    assert str(out / "ssd_mnv2_int8.tflite") in printed


@pytest.mark.parametrize("argv, message", [
    (["--quant", "fp16", "--edgetpu"], "the Edge TPU runs full-integer models only: use --quant int8, not fp16"),
    (["--io", "float", "--edgetpu"], "the Edge TPU needs 8-bit input: use --io uint8 or int8, not float"),
    (["--io", "uint16"], "unknown I/O type 'uint16', expected one of uint8, int8, float"),
    (["--iou-threshold", "1.5"], r"argument --iou-threshold: IoU threshold must be a number above 0 and at most 1, got 1.5"),
])
def test_bad_tflite_options_exit_2_before_any_work(tmp_path, capsys, argv, message):
    code = main(["export", *TINY, "--format", "tflite", *argv, "--out", str(tmp_path / "out")])
    _, err = capsys.readouterr()
    assert code == 2
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_the_export_command_shows_its_own_lines_only(tmp_path):
    """TensorFlow's, absl's and the converter's own logging (the CUDA probe,
    "W0000 ..." lines, "fully_quantize: 0, inference_type: 6") stay hidden without -v."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "ssdkit", "export", *TINY, "--num-classes", "2", "--format", "tflite",
                           "--calib-samples", "2", "--no-report", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert all(line.startswith("ssdkit export: ") for line in lines), done.stderr
    assert "ssdkit export: converting to ssd_mnv2_int8.tflite, calibrated on 2 images" in lines
    assert done.stdout.split() == [str(tmp_path / "out" / name) for name in ("saved_model", "ssd_mnv2_int8.tflite")]


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
                            "ssd_mnv2_fp32_nonms.tflite", "report.json", "report.md"])  # node data: --layer-errors only
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["models"]["int8"]["size_mb"] < 0.5 * report["models"]["fp32"]["size_mb"]
    # An untrained model: no mAP (its training data is not the synthetic shapes), agreement on held-out images.
    assert report["evaluation_set"]["images"] == 50 and not report["evaluation_set"]["labelled"]
    assert "mAP@0.5_drop_points" not in report["int8_vs_fp32"]
    assert 0 <= report["int8_vs_fp32"]["agreement"]["recall"] <= 1
    assert set(report["int8_vs_fp32"]["raw_output_difference"]) == {"box_encodings", "class_predictions"}
    assert "| ssd_mnv2_int8.tflite |" in (tmp_path / "out" / "report.md").read_text()
