"""The Decoder (raw outputs -> detections, as the spec says), Detection's
named sides and record, and Detector.run_raw."""
import dataclasses

import numpy as np
import pytest

from ssdkit.runtime import Decoder, Detection, DetectorSpec
from ssdkit.runtime.decoder import activate, dequantize
from ssdkit.runtime.detector import Timings
from ssdkit.runtime.detector_spec import GridAnchors, Nms, ScoreCoding
from ssdkit.runtime.nms import batched_nms
from ssdkit.runtime.spec import MultipleGridAnchors, Preprocessing
from ssdkit.runtime.tflite_postprocess import detection_postprocess

LABELS = ("a", "b", "c")
SPEC = DetectorSpec("grid", Preprocessing(64, 64), LABELS,
                    GridAnchors(MultipleGridAnchors(num_layers=2), ((8, 8), (4, 4)), (64, 64)))
A = 8 * 8 * 3 + 4 * 4 * 6


def _raw(seed: int, logit_offset: float = -3.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 1, (A, 4)).astype(np.float32),
            rng.normal(logit_offset, 2, (A, len(LABELS) + 1)).astype(np.float32))


def _quantize(values: np.ndarray) -> tuple[np.ndarray, tuple[float, int]]:
    scale, zero_point = float(np.ptp(values) / 255), -128
    q = np.clip(np.round(values / scale) + zero_point - np.round(values.min() / scale), -128, 127).astype(np.int8)
    return q, (scale, int(zero_point - np.round(values.min() / scale)))


@pytest.mark.parametrize("kind", ["tflite", "tflite_regular"])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.9])
def test_decode_equals_the_op_on_every_anchor(kind, threshold):
    """Candidate rows and the quantized shortcut change nothing: the result is
    the op replica's on all anchors, activated, bit for bit."""
    spec = dataclasses.replace(SPEC, nms=Nms(kind, max_detections=20, detections_per_class=5))
    decoder = Decoder(spec)
    for seed in range(3):
        boxes, logits = _raw(seed)
        q, quantization = _quantize(logits)
        for values, quant in ((logits, (0.0, 0)), (q, quantization)):
            scores = activate(dequantize(values, *quant), "sigmoid")
            out, classes, out_scores, n = detection_postprocess(
                boxes, scores, decoder.anchors, max_detections=20, detections_per_class=5,
                use_regular_nms=kind == "tflite_regular", nms_score_threshold=max(threshold, 1e-8),
                nms_iou_threshold=0.6)
            keep = out_scores[:n] >= threshold
            found = decoder.decode(boxes, values, threshold, class_quantization=quant)
            np.testing.assert_array_equal(found.boxes, out[:n][keep])
            np.testing.assert_array_equal(found.classes, classes[:n][keep].astype(np.int64))
            np.testing.assert_array_equal(found.scores, out_scores[:n][keep])


def test_hard_nms_without_a_background_column():
    spec = dataclasses.replace(SPEC, scores=ScoreCoding("sigmoid", background=False), nms=Nms("hard", iou_threshold=0.5))
    boxes, logits = _raw(7, logit_offset=-1.0)
    logits = logits[:, 1:]  # no background column
    found = Decoder(spec).decode(boxes, logits, 0.4)
    scores = activate(logits, "sigmoid")
    decoded = Decoder(spec)._boxes(boxes, Decoder(spec).anchors)
    anchors, classes = np.nonzero(scores >= np.float32(0.4))
    kept = batched_nms(decoded[anchors], scores[anchors, classes], classes, 0.5, 0.4, 100)
    np.testing.assert_array_equal(found.classes, classes[kept])
    np.testing.assert_array_equal(found.scores, scores[anchors, classes][kept])
    assert len(found) > 3


def _overlapping():
    """Anchor 0 scores class a (0.9), anchor 1, almost the same box, class b (0.8)."""
    decoder = Decoder(SPEC)
    boxes = np.zeros((A, 4), np.float32)
    boxes[1] = 0.0
    logits = np.full((A, 4), -20.0, np.float32)
    logits[0, 1] = np.log(0.9 / 0.1)
    logits[1, 2] = np.log(0.8 / 0.2)
    decoder.anchors[1] = decoder.anchors[0] + np.float32(0.001)
    return decoder, boxes, logits


def test_per_class_thresholds_remove_classes_before_nms():
    """The hook for per-class thresholds and allow/deny lists: a class whose
    threshold is above 1 is out before NMS, so it suppresses nothing."""
    decoder, boxes, logits = _overlapping()
    assert decoder.decode(boxes, logits, 0.5).classes.tolist() == [0]  # a suppresses b (one NMS over classes)
    uniform = decoder.decode(boxes, logits, [0.5, 0.5, 0.5])
    assert uniform.classes.tolist() == [0] and uniform.scores.tolist() == decoder.decode(boxes, logits, 0.5).scores.tolist()
    denied = decoder.decode(boxes, logits, [np.inf, 0.5, 0.5])
    assert denied.classes.tolist() == [1] and denied.scores[0] == pytest.approx(0.8)
    assert decoder.decode(boxes, logits, [0.95, 0.5, 0.5]).classes.tolist() == [1]  # a below its own threshold
    assert decoder.decode(boxes, logits, [0.5, 0.85, 0.5]).classes.tolist() == [0]
    with pytest.raises(ValueError, match="2 per-class score thresholds, expected 3 .one per class."):
        decoder.decode(boxes, logits, [0.5, 0.5])


def test_a_spec_without_anchors_cannot_decode():
    with pytest.raises(ValueError, match="the spec 'x' has no anchors to decode raw boxes with"):
        Decoder(DetectorSpec("x", Preprocessing(8, 8)))
    assert Decoder(SPEC).shape_problem((1, A, 4), (1, A, 4)) is None
    assert Decoder(SPEC).shape_problem((1, A, 4), (1, A, 3)) == "3 class columns, expected 4 for 3 labels plus background"
    assert "expected [1, 288, 4]" in Decoder(SPEC).shape_problem((1, 10, 4), (1, 10, 4))
    with pytest.raises(ValueError, match=r"raw outputs of shapes \[10, 4\] and \[10, 4\], expected \[288, 4\]"):
        Decoder(SPEC).decode(np.zeros((10, 4)), np.zeros((10, 4)))


def test_detection_names_its_box_sides_and_writes_the_shared_record():
    d = Detection((10.0, 20.0, 50.5, 80.25), 0.87654, 2, "cat")
    assert (d.ymin, d.xmin, d.ymax, d.xmax, d.width, d.height) == (10.0, 20.0, 50.5, 80.25, 60.25, 40.5)
    assert d.to_dict() == {"box": [10.0, 20.0, 50.5, 80.25], "label": "cat", "class_id": 2, "score": 0.8765}
    assert d.to_dict(track_id=7)["track_id"] == 7
    assert Detection((1.234, 0, 0, 0), 0.5, 0, "a").to_dict()["box"] == [1.23, 0, 0, 0]
    assert Timings(0.001234, 0.5, 0.0001).to_ms() == {"preprocess": 1.23, "inference": 500.0, "postprocess": 0.1}


def test_run_raw_gives_dequantized_activated_outputs(tiny_tflite):
    from ssdkit.runtime import Detector

    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), np.uint8)
    with Detector(tiny_tflite(quant="fp32", nms=False), score_threshold=0.0) as detector:
        raw = detector.run_raw(image)
        runs = []
        invoke = detector.backend.run
        detector.backend.run = lambda tensor: runs.append(invoke(tensor)) or runs[-1]
        detector.detect(image)
        assert raw.box_encodings.shape == (detector.decoder.num_anchors, 4)
        np.testing.assert_array_equal(raw.box_encodings, detector.raw_output(runs[0], "box_encodings")[0])
        np.testing.assert_array_equal(raw.class_scores, detector.raw_output(runs[0], "class_predictions")[0])
        assert 0 <= raw.class_scores.min() and raw.class_scores.max() <= 1  # the export activates them
    with Detector(tiny_tflite(quant="fp32", score_threshold=0.0)) as detector:
        with pytest.raises(ValueError, match="the model outputs detections, not raw box encodings"):
            detector.run_raw(image)
