"""Per-class control: allow/deny lists and per-class score thresholds, through
the Decoder (before NMS), on the fixture models of tests/fixtures/models
(two classes, cat and person) and the fixture photos. No TensorFlow.

The numbers were read from these files once and are pinned here: on the
astronaut photo at threshold 0.12, the fast (class-agnostic) NMS of TFLite's
op lets a cat box hide a person box it overlaps with IoU 0.78; with cats
denied before NMS that person (score 0.1829) is found.
"""
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from ssdkit.cli import main
from ssdkit.runtime import Detector
from ssdkit.runtime.boxes import iou_matrix
from ssdkit.runtime.class_filter import ClassFilter, lowered

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MODELS, IMAGES = FIXTURES / "models", FIXTURES / "images"
OP_FP32, RAW_FP32 = MODELS / "ssdlite_mnv3_small_fp32.tflite", MODELS / "ssdlite_mnv3_small_fp32_nonms.tflite"
OP_INT8 = MODELS / "ssdlite_mnv3_small_int8.tflite"
ONNX_NMS, ONNX_RAW = MODELS / "ssdlite_mnv3_small_nms.onnx", MODELS / "ssdlite_mnv3_small_raw.onnx"
HIDDEN_PERSON = ((100.7444, 97.7989, 192.0, 192.0), 0.1829)  # found only with cats denied before NMS


def read_image(name: str) -> np.ndarray:
    Image = pytest.importorskip("PIL.Image")
    with Image.open(IMAGES / name) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def astronaut():
    return read_image("astronaut.png")


def rounded(detections):
    return [(tuple(round(v, 4) for v in d.box), round(d.score, 4)) for d in detections]


@pytest.mark.parametrize("model", [OP_FP32, RAW_FP32], ids=["op-inputs", "raw-decoder"])
def test_a_denied_class_does_not_hide_an_allowed_one(astronaut, model):
    everything = Detector(model, score_threshold=0.12).detect(astronaut)
    detector = Detector(model, score_threshold=0.12, exclude_classes=["cat"])
    persons = detector.detect(astronaut)
    assert detector.postprocess == ("op-inputs" if model == OP_FP32 else "decoder")
    assert {d.label for d in persons} == {"person"} and len(persons) == 51
    assert HIDDEN_PERSON in rounded(persons) and HIDDEN_PERSON not in rounded(everything)
    # What hid it: a higher-scoring cat box over it, in the same NMS.
    hidden = next(d for d in persons if rounded([d])[0] == HIDDEN_PERSON)
    cats = [d for d in everything if d.label == "cat"]
    overlap = iou_matrix(np.array([hidden.box]), np.array([d.box for d in cats]))[0]
    assert overlap.max() > 0.6 and cats[int(overlap.argmax())].score > hidden.score
    # The allow list says the same thing.
    assert Detector(model, score_threshold=0.12, classes=["person"]).detect(astronaut) == persons


def test_op_inputs_decoded_by_the_runtime_equal_the_op(astronaut):
    """With per-class control on, the detector runs the op's NMS itself on the
    op's inputs: with every class allowed it gives exactly what the op gives."""
    for model in (OP_FP32, OP_INT8):
        for image in (astronaut, read_image("coffee.png")):
            ours = Detector(model, score_threshold=0.2, classes=["cat", "person"])
            assert ours.postprocess == "op-inputs"
            assert ours.detect(image) == Detector(model, score_threshold=0.2).detect(image)


def test_a_class_threshold_below_the_global_one_keeps_low_scores(astronaut):
    found = Detector(RAW_FP32, score_threshold=0.5, class_thresholds={"person": 0.2}).detect(astronaut)
    persons = [round(d.score, 4) for d in found if d.label == "person"]
    assert persons == [0.4352, 0.2974, 0.2157, 0.2033, 0.2004]
    cats = [d for d in found if d.label == "cat"]
    assert len(cats) == 17 and min(d.score for d in cats) >= 0.5
    assert Detector(RAW_FP32, score_threshold=0.5).detect(astronaut) == cats  # no person at 0.5
    # Above the global one: fewer cats, the same persons.
    strict = Detector(RAW_FP32, score_threshold=0.2, class_thresholds={"cat": 0.6}).detect(astronaut)
    assert [round(d.score, 4) for d in strict if d.label == "cat"] == [0.7262, 0.6487, 0.6371, 0.6332, 0.6278]


def test_nms_inside_an_onnx_model_is_filtered_after_and_says_so(astronaut, caplog):
    pytest.importorskip("onnxruntime")  # not on the emulated Pi's runtime install
    with caplog.at_level(logging.WARNING, logger="ssdkit"):
        detector = Detector(ONNX_NMS, score_threshold=0.12, exclude_classes=["cat"])
    assert detector.postprocess == "model+filter"
    assert "classes are filtered after the model's NMS" in caplog.text and "raw ONNX" in caplog.text
    everything = Detector(ONNX_NMS, score_threshold=0.12).detect(astronaut)
    found = detector.detect(astronaut)
    # Exactly the persons the model's own NMS kept: its 100 detection slots were shared with cats ...
    assert len(everything) == 100 and found == [d for d in everything if d.label == "person"] and len(found) == 39
    # ... while the raw export of the same network, cats out before NMS, finds 51.
    assert len(Detector(ONNX_RAW, score_threshold=0.12, exclude_classes=["cat"]).detect(astronaut)) == 51


def test_unknown_class_names_are_one_line_naming_them_and_the_labels():
    with pytest.raises(ValueError) as error:
        Detector(OP_FP32, classes=["person", "dog", "bus"])
    assert str(error.value) == ("unknown classes 'dog', 'bus' in classes (--classes); "
                                "ssdlite_mnv3_small_fp32.tflite's labels: cat, person")
    with pytest.raises(ValueError, match=r"^unknown class 'Cat' in class_thresholds \(--class-threshold\)"):
        Detector(RAW_FP32, class_thresholds={"Cat": 0.3})


@pytest.mark.parametrize("kwargs, message", [
    (dict(classes=["cat"], exclude=["person"]), "classes (an allow list) and exclude_classes (a deny list) cannot be given together"),
    (dict(classes=[]), "classes is empty: name at least one class to report"),
    (dict(exclude=["cat"], thresholds={"cat": 0.3}), "class_thresholds gives 'cat' a threshold, but the class is not reported (excluded)"),
    (dict(thresholds={"cat": 1.5}), "score threshold must be a number from 0 to 1, got 1.5"),
    (dict(classes="cat"), "classes and exclude_classes are lists of label names, not one string"),
])
def test_class_filter_rejects_contradictions(kwargs, message):
    with pytest.raises(ValueError) as error:
        ClassFilter.build(**kwargs)
    assert str(error.value) == message


def test_threshold_vectors():
    labels = ("cat", "person", "car")
    chosen = ClassFilter.build(classes=["person", "car"], thresholds={"car": 0.2})
    assert chosen.thresholds_for(labels, 0.5).tolist() == [np.inf, 0.5, pytest.approx(0.2)]
    assert lowered(chosen.thresholds_for(labels, 0.5), 0.1).tolist() == [np.inf, pytest.approx(0.1), pytest.approx(0.1)]
    assert ClassFilter.build(exclude=["car"]).thresholds_for(labels, 0.4).tolist() == [pytest.approx(0.4)] * 2 + [np.inf]


def test_detector_floor_returns_low_scores_that_reported_tells_apart(astronaut):
    detector = Detector(RAW_FP32, score_threshold=0.5, classes=["person"], class_thresholds={"person": 0.4})
    with_floor = detector.detect(astronaut, floor=0.2)
    assert [round(d.score, 4) for d in with_floor] == [0.4352, 0.2974, 0.2157, 0.2033, 0.2004]
    assert [detector.reported(d) for d in with_floor] == [True, False, False, False, False]
    assert [d for d in with_floor if detector.reported(d)] == detector.detect(astronaut)


def test_detect_cli_classes(tmp_path, capsys):
    image = str(IMAGES / "astronaut.png")
    assert main(["detect", str(OP_FP32), image, "--json", "--threshold", "0.12", "--exclude-classes", "cat"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert len(record["detections"]) == 51 and {d["label"] for d in record["detections"]} == {"person"}
    assert main(["detect", str(RAW_FP32), image, "--json", "--class-threshold", "person=0.2,cat=0.7"]) == 0
    scores = [(d["label"], d["score"]) for d in json.loads(capsys.readouterr().out)["detections"]]
    assert scores == [("cat", 0.7262), ("person", 0.4352), ("person", 0.2974), ("person", 0.2157),
                      ("person", 0.2033), ("person", 0.2004)]


@pytest.mark.parametrize("args, message", [
    (["--classes", "dog,person"], "ssdkit detect: error: unknown class 'dog' in classes (--classes); "
                                  "ssdlite_mnv3_small_fp32.tflite's labels: cat, person"),
    (["--class-threshold", "person"], "argument --class-threshold: 'person': expected NAME=SCORE, e.g. person=0.6"),
    (["--class-threshold", "person=2"], "argument --class-threshold: person: score threshold must be a number from 0 to 1, got 2"),
    (["--classes", "cat", "--exclude-classes", "person"], "argument --exclude-classes: not allowed with argument --classes"),
    (["--classes", "cat,,person"], "argument --classes: 'cat,,person': expected label names separated by commas"),
])
def test_detect_cli_class_errors_are_one_line(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["detect", str(OP_FP32), str(IMAGES / "astronaut.png"), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
