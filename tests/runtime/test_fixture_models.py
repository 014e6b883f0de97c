"""Model files exported by earlier code still load and detect what they did then.

tests/fixtures/models/ holds tiny detectors exported by ssdkit's exporters
(TFLite with and without the postprocess op, fp32 and int8; a file without an
ssdkit spec run through third-party specs; ONNX with a dynamic batch, raw and
with NMS) and expected.json, the detections ``Detector`` gave on the photos in
tests/fixtures/images/ when they were made (tests/fixtures/make_models.py says
which runtime path each file covers). Only the runtime is imported here, no
TensorFlow: this runs on the emulated Raspberry Pi of ``make pi-check`` too.

Matching is pycoral-style: the same number of detections, each expected one
matched by a found one of the same label with IoU >= MIN_IOU and its score
within the tolerance (matched by IoU, not by position, so score ties may swap).
"""
import json
from pathlib import Path

import numpy as np
import pytest

from ssdkit.runtime import Detector

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MODELS, IMAGES = FIXTURES / "models", FIXTURES / "images"
EXPECTED = json.loads((MODELS / "expected.json").read_text())
CASES = {case["name"]: case for case in EXPECTED["cases"]}

# Float models: the same kernels up to float rounding (x86 ai-edge-litert or ONNX Runtime vs
# aarch64 tflite-runtime 2.14), fed identical tensors (the photos' sizes make OpenCV's resize
# and the numpy one agree), so scores agree to ~1e-6.
FLOAT_SCORE_TOLERANCE = 1e-4
FLOAT_MIN_IOU = 0.99
# int8: tflite-runtime 2.14 on aarch64 and ai-edge-litert on x86_64 round some int8 ops
# differently, by a few uint8 steps of 1/256 in the scores (tools/pi_check.py SCORE_TOLERANCE).
QUANT_SCORE_TOLERANCE = 0.04
QUANT_MIN_IOU = 0.9
# Raw outputs: float within this (absolute and relative), quantized within this many steps.
FLOAT_RAW_TOLERANCE = 1e-4
QUANT_RAW_STEPS = 6

REQUIRED = {"tflite_fp32_op", "tflite_int8_op", "tflite_fp32_raw", "tflite_int8_raw", "thirdparty_sidecar",
            "thirdparty_regular", "onnx_raw_batch", "onnx_nms_batch"}


def read_image(name: str) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        cv2 = pytest.importorskip("cv2", reason="reading the PNG photos needs Pillow or OpenCV")
        return cv2.cvtColor(cv2.imread(str(IMAGES / name), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    with Image.open(IMAGES / name) as image:
        return np.asarray(image.convert("RGB"))


def iou(a, b) -> float:
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ih * iw
    return ih * iw / union if union > 0 else float(list(a) == list(b))


def assert_same_detections(found, expected: list[dict], threshold: float, score_tolerance: float, min_iou: float,
                           what: str):
    """Each found detection matches its own expected one (same class, IoU >= min_iou, score within
    tolerance), and every expected one scoring at least threshold + tolerance is found. Expected ones
    closer to the threshold may be missing: another build may round them below it."""
    required = [d for d in expected if d["score"] >= threshold + score_tolerance]
    assert required, f"{what}: expected.json lists no detection above the threshold, so nothing would be checked"
    summary = (f"found {[(d.label, round(d.score, 4)) for d in found]}, "
               f"expected {[(d['label'], d['score']) for d in expected]}")
    assert len(required) <= len(found) <= len(expected), \
        f"{what}: {len(found)} detections, expected {len(required)} to {len(expected)}: {summary}"
    left = list(found)
    for want in sorted(expected, key=lambda d: -d["score"]):
        candidates = [(iou(d.box, want["box"]), d) for d in left
                      if (d.class_id, d.label) == (want["class_id"], want["label"])
                      and abs(d.score - want["score"]) <= score_tolerance]
        overlap, match = max(candidates, key=lambda c: c[0], default=(0.0, None))
        if match is not None and overlap >= min_iou:
            left.remove(match)
        else:
            assert want not in required, (
                f"{what}: nothing matches expected {want} (same label, score within {score_tolerance}, "
                f"IoU >= {min_iou}; best IoU {overlap:.3f}): {summary}")
    assert not left, f"{what}: unexpected detections {left}: {summary}"


def assert_same_raw(summary: dict, value: np.ndarray, what: str):
    """Shape, statistics and first values of one raw output against expected.json's summary."""
    assert list(value.shape) == summary["shape"], what
    step = summary["step"]
    atol, rtol = (QUANT_RAW_STEPS * step, 0) if step else (FLOAT_RAW_TOLERANCE, FLOAT_RAW_TOLERANCE)
    value = value.astype(np.float64)
    got = {"mean": value.mean(), "mean_abs": np.abs(value).mean(), "min": value.min(), "max": value.max()}
    for key, number in got.items():
        np.testing.assert_allclose(number, summary[key], atol=atol, rtol=rtol, err_msg=f"{what}: {key}")
    np.testing.assert_allclose(value.reshape(-1)[:len(summary["first"])], summary["first"], atol=atol, rtol=rtol,
                               err_msg=f"{what}: first values")


def test_expected_json_lists_every_path_and_file():
    assert REQUIRED <= set(CASES), f"expected.json lacks the cases {sorted(REQUIRED - set(CASES))}"
    on_disk = {p.name for p in MODELS.iterdir() if p.name != "expected.json"}
    assert on_disk == set(EXPECTED["files"]), "tests/fixtures/models/ and expected.json list different files"
    for case in CASES.values():
        assert (MODELS / case["file"]).is_file() and case["images"], case["name"]
        assert all(case["detections"].get(name) for name in case["images"]), \
            f"{case['name']}: an image without expected detections checks nothing"


def test_fixture_files_are_the_ones_expected_json_was_made_with():
    import hashlib

    for name, facts in EXPECTED["files"].items():
        data = (MODELS / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (facts["bytes"], facts["sha256"]), \
            f"{name} changed since expected.json was written: regenerate both with tests/fixtures/make_models.py"


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixture_model_detects_as_when_exported(name):
    case = CASES[name]
    if case["file"].endswith(".onnx"):
        pytest.importorskip("onnxruntime")
    labels = EXPECTED["network"]["labels"]
    names, thresholds = case["images"], case["thresholds"]
    tolerance, min_iou = ((QUANT_SCORE_TOLERANCE, QUANT_MIN_IOU) if case["quantized"]
                          else (FLOAT_SCORE_TOLERANCE, FLOAT_MIN_IOU))
    for image in names:  # what a detection may score and still be missing was recorded
        assert case["recorded_down_to"][image] <= thresholds[image] - tolerance + 1e-9, image
    images = [read_image(image) for image in names]
    spec = str(MODELS / case["spec"]) if case["spec"] else None
    with Detector(MODELS / case["file"], spec=spec, score_threshold=min(thresholds.values()),
                  threads=EXPECTED["threads"]) as detector:
        assert list(detector.spec.labels) == labels
        assert (detector.roles.kind == "raw") == ("raw" in case)
        runs = []
        invoke = detector.backend.run
        detector.backend.run = lambda tensor: runs.append(invoke(tensor)) or runs[-1]
        if case["batch"]:
            assert detector.backend.inputs[0].shape[0] == -1  # a dynamic batch axis
            found = detector.detect_batch(images)  # at the lowest threshold, each image cut at its own below
            assert len(runs) == 1  # one invocation for all images
        else:
            found = []
            for image_name, image in zip(names, images):
                detector.score_threshold = thresholds[image_name]
                found.append(detector.detect(image))
            assert len(runs) == len(images)
        raw = {role: np.concatenate([detector.raw_output(r, role) for r in runs])
               for role in ("box_encodings", "class_predictions")} if "raw" in case else {}
    for index, image in enumerate(names):
        what = f"{name} ({case['file']}) on {image}"
        detections = [d for d in found[index] if d.score >= thresholds[image]]
        assert all(d.label == labels[d.class_id] for d in detections), what
        assert_same_detections(detections, case["detections"][image], thresholds[image], tolerance, min_iou, what)
        for role, value in raw.items():
            assert_same_raw(case["raw"][image][role], value[index], f"{what}: {role}")


def test_the_comparison_fails_on_other_detections():
    """The matcher is not vacuous: a moved box, a changed score, another label, a missing or an extra
    detection, or nothing expected, each fail."""
    from ssdkit.runtime.detector import Detection

    case = CASES["tflite_fp32_op"]
    image = case["images"][0]
    expected, threshold = case["detections"][image], case["thresholds"][image]
    good = [Detection(tuple(d["box"]), d["score"], d["class_id"], d["label"]) for d in expected]
    check = lambda found, want=expected: assert_same_detections(  # noqa: E731
        found, want, threshold, FLOAT_SCORE_TOLERANCE, FLOAT_MIN_IOU, "self-test")
    check(good[::-1])
    first = good[0]
    y0, x0, y1, x1 = first.box
    shift = (y1 - y0) / 4
    other = EXPECTED["network"]["labels"][1 - first.class_id]
    for changed in ([Detection((y0 + shift, x0, y1 + shift, x1), first.score, first.class_id, first.label)],
                    [Detection(first.box, first.score + 0.01, first.class_id, first.label)],
                    [Detection(first.box, first.score, 1 - first.class_id, other)],
                    [],
                    [first, first]):
        with pytest.raises(AssertionError):
            check(changed + good[1:])
    with pytest.raises(AssertionError):
        check([], [])
