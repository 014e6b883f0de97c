"""The quantization report on the user's data (COCO, VOC, plain images),
its latency method, and one calibration pass per export."""
import contextlib
import io
import json
import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from PIL import Image  # noqa: E402

from ssdkit.cli import main  # noqa: E402
from ssdkit.convert.checkpoint import prepare_model  # noqa: E402
from ssdkit.convert.savedmodel.keras2savedmodel import export_savedmodel  # noqa: E402
from ssdkit.convert.tflite import savedmodel2tflite  # noqa: E402
from ssdkit.convert.tflite.savedmodel2tflite import TFLiteOptions, TFLiteSession, _converter  # noqa: E402
from ssdkit.datasets.reader import read_dataset  # noqa: E402
from ssdkit.datasets.synth import render  # noqa: E402
from ssdkit.evaluation.measure import int8_capability  # noqa: E402
from ssdkit.evaluation.quant_report import EvaluationData, report_quantization  # noqa: E402
from ssdkit.runtime import Detector  # noqa: E402

SIZE = 96
LABELS = ("a", "b")
TINY = ("--model", "ssd_mnv2", "--width", "0.35", "--input-size", str(SIZE), "--backbone-weights", "none",
        "--labels")
IMAGES = 6


def _render(i: int):
    image, boxes, classes = render(7, i, SIZE)
    return image, boxes * SIZE, classes % 2


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A COCO set (categories a, b), a VOC set of the same images (cat, dog)
    and a folder of the plain images."""
    root = tmp_path_factory.mktemp("report_data")
    (root / "coco" / "images").mkdir(parents=True)
    (root / "voc" / "Annotations").mkdir(parents=True)
    (root / "voc" / "JPEGImages").mkdir()
    (root / "plain").mkdir()
    images, annotations = [], []
    for i in range(IMAGES):
        image, boxes, classes = _render(i)
        for folder in ("coco/images", "voc/JPEGImages", "plain"):
            Image.fromarray(image).save(root / folder / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"images/{i}.png", "height": SIZE, "width": SIZE})
        objects = []
        for (y0, x0, y1, x1), cls in zip(boxes.tolist(), classes.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cls + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
            objects.append(f"<object><name>{('dog', 'cat')[cls]}</name><bndbox><xmin>{int(x0) + 1}</xmin>"
                           f"<ymin>{int(y0) + 1}</ymin><xmax>{int(x1)}</xmax><ymax>{int(y1)}</ymax></bndbox></object>")
        (root / "voc" / "Annotations" / f"{i}.xml").write_text(
            f"<annotation><filename>{i}.png</filename><size><width>{SIZE}</width><height>{SIZE}</height></size>"
            + "".join(objects) + "</annotation>")
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    (root / "coco" / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny network's SavedModel and its four report variants, from one session."""
    out = tmp_path_factory.mktemp("report_models")
    with pytest.warns(UserWarning, match="untrained"):
        model = prepare_model("ssd_mnv2", width=0.35, input_size=(SIZE, SIZE), labels=LABELS, backbone_weights="none")
    saved_model = export_savedmodel(model, out / "saved_model")
    calibration = [_render(i)[0] for i in range(4)]
    session = TFLiteSession(saved_model, model.spec, calibration)
    variants = [TFLiteOptions(), TFLiteOptions(quant="fp32"), TFLiteOptions(nms=False),
                TFLiteOptions(quant="fp32", nms=False)]
    paths = [session.export(out, options) for options in variants]
    return {"dir": out, "spec": model.spec, "saved_model": saved_model, "calibration": calibration,
            "session": session, "paths": paths}


def _report(exported, data: EvaluationData, tmp_path) -> dict:
    int8, fp32, int8_raw, fp32_raw = exported["paths"]
    report_quantization(fp32, int8, fp32_raw, int8_raw, data, tmp_path, "report")
    return json.loads((tmp_path / "report.json").read_text())


def test_one_session_calibrates_once_for_every_int8_variant(exported):
    assert exported["session"].calibration_passes == 1
    # The raw int8 model, quantized from the postprocess graph's calibration,
    # is the one the converter gives after calibrating the raw graph itself.
    session, options = exported["session"], TFLiteOptions(nms=False)
    converter = _converter(session.raw, exported["spec"], options, session.dataset())
    direct = converter.convert()
    assert session.calibration_passes == 2  # the direct conversion above
    reused = session.convert(options)
    assert session.calibration_passes == 2  # quantizing again reused the calibration
    assert _outputs(reused, exported["calibration"]) == _outputs(direct, exported["calibration"])


def _outputs(model: bytes, images) -> list:
    """Every output tensor (quantized values and their scale and zero point) on ``images``."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    (given,) = interpreter.get_input_details()
    found = []
    for image in images:
        interpreter.set_tensor(given["index"], image[None].astype(given["dtype"]))
        interpreter.invoke()
        for output in sorted(interpreter.get_output_details(), key=lambda o: tuple(o["shape"])):
            found.append((interpreter.get_tensor(output["index"]).tobytes(), output["quantization"]))
    return found


def test_report_on_a_coco_set_maps_labels_by_name(exported, data, tmp_path):
    evaluation = EvaluationData.from_dataset(read_dataset(data / "coco" / "annotations.json"), LABELS, "--eval-data")
    report = _report(exported, evaluation, tmp_path)
    assert report["evaluation_set"] == {"source": str(data / "coco" / "annotations.json"), "images": IMAGES,
                                        "labelled": True, "why": "--eval-data"}
    assert {"mAP", "mAP@0.5", "latency_ms"} <= set(report["models"]["int8"])
    assert "mAP@0.5_drop_points" in report["int8_vs_fp32"]
    md = (tmp_path / "report.md").read_text()
    assert f"Evaluation data: {data / 'coco' / 'annotations.json'} ({IMAGES} images, labelled)" in md


def test_report_on_a_voc_set_with_a_class_map(exported, data, tmp_path):
    dataset = read_dataset(data / "voc")
    assert dataset.labels == ("cat", "dog")
    with pytest.raises(ValueError, match=r"categories cat, dog match no label.*--class-map"):
        EvaluationData.from_dataset(dataset, LABELS, "--eval-data")
    evaluation = EvaluationData.from_dataset(dataset, LABELS, "--eval-data", {"a": "dog", "b": "cat"})
    assert evaluation.mapping.tolist() == [1, 0]
    report = _report(exported, evaluation, tmp_path)
    assert report["evaluation_set"]["labelled"] and report["evaluation_set"]["images"] == IMAGES
    assert "mAP@0.5" in report["models"]["fp32"]


def test_labelless_report_gives_agreement_and_raw_differences_with_honest_latency(exported, data, tmp_path):
    images = tuple(np.asarray(Image.open(data / "plain" / f"{i}.png")) for i in range(IMAGES))
    report = _report(exported, EvaluationData(str(data / "plain"), "a folder of images", images), tmp_path)
    assert report["evaluation_set"]["labelled"] is False
    assert "mAP" not in report["models"]["int8"] and "mAP@0.5_drop_points" not in report["int8_vs_fp32"]
    agreement = report["int8_vs_fp32"]["agreement"]
    assert set(agreement) >= {"precision", "recall", "mean_iou", "matched", "reference", "candidate"}
    assert 0 <= agreement["recall"] <= 1 and 0 <= agreement["precision"] <= 1
    assert set(report["int8_vs_fp32"]["raw_output_difference"]) == {"box_encodings", "class_predictions"}
    latency = report["latency"]
    assert latency["threads"] >= 1 and latency["cpu_int8"] == int8_capability()
    assert "interleaved" in latency["method"]
    int8, fp32 = report["models"]["int8"]["latency_ms"], report["models"]["fp32"]["latency_ms"]
    assert report["int8_vs_fp32"]["latency_ratio"] == pytest.approx(int8 / fp32, abs=1e-3)
    md = (tmp_path / "report.md").read_text()
    assert "no labels" in md and f"int8 instructions: {int8_capability()}" in md


def test_wrong_labels_exit_2_naming_them_before_any_work(data, tmp_path, capsys):
    code = main(["export", *TINY, str(_labels_file(tmp_path)), "--format", "tflite", "--eval-data",
                 str(data / "voc"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "categories cat, dog match no label of the model" in err and "--class-map" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _labels_file(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("a\nb\n")
    return path


def test_cli_export_reads_the_calibration_source_once(data, tmp_path, monkeypatch):
    """Without --eval-data an untrained model's report measures images held
    out from the calibration folder; the folder's files are read once, and
    calibrated on once, for the int8 model, its raw twin and the report."""
    from ssdkit.calibration import representative

    reads, passes = [], []
    read_image = representative._read_image
    monkeypatch.setattr(representative, "_read_image", lambda path: reads.append(path.name) or read_image(path))
    calibrated = TFLiteSession.calibrated

    def counting(self, options):
        result = calibrated(self, options)
        passes.append(self.calibration_passes)
        return result

    monkeypatch.setattr(TFLiteSession, "calibrated", counting)
    out, err = tmp_path / "out", io.StringIO()
    with contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["export", *TINY, str(_labels_file(tmp_path)), "--format", "tflite", "--calib-data",
                     str(data / "plain"), "--calib-samples", "4", "--out", str(out)])
    assert code == 0, err.getvalue()
    assert sorted(reads) == sorted(f"{i}.png" for i in range(IMAGES))  # 4 to calibrate, 2 held out: each once
    assert passes and max(passes) == 1  # int8 and int8_nonms from one calibration
    report = json.loads((out / "report.json").read_text())
    assert report["evaluation_set"]["images"] == IMAGES - 4 and not report["evaluation_set"]["labelled"]
    assert "held out from the calibration data" in report["evaluation_set"]["why"]
    assert f"{data / 'plain'}, 2 images not calibrated on" in err.getvalue()  # the summary line names the data
    with Detector(out / "ssd_mnv2_int8_nonms.tflite") as detector:
        assert detector.roles.kind == "raw"


@pytest.mark.parametrize("argv, message", [
    (["--quant", "fp32"], "--eval-data is the int8 quantization report's data"),
    (["--no-report"], "this export writes no report"),
    (["--class-map", "a:dog"], "expected MODEL_LABEL=DATASET_LABEL pairs"),
])
def test_eval_data_options_are_checked_before_any_work(data, tmp_path, capsys, argv, message):
    code = main(["export", *TINY, str(_labels_file(tmp_path)), "--format", "tflite", "--eval-data",
                 str(data / "plain"), *argv, "--out", str(tmp_path / "out")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
