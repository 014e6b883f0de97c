"""The shared postprocess against the real TFLite_Detection_PostProcess kernel
(ai-edge-litert) and against slow, obviously-correct references."""
import zlib

import numpy as np
import pytest

from ssdkit.runtime import box_coder, decoder, nms
from ssdkit.runtime import tflite_postprocess as pp
from ssdkit.runtime.boxes import iou_matrix

A, C = 64, 6
SCORE_T = 0.3
# Rows 0-3 decode (with zero codes) to dyadic boxes: IoU(0, 1) is exactly 0.5
# and IoU(2, 3) exactly 1/3 (float32 arithmetic included).
_CRAFTED = [[0.125, 0.375, 0.25, 0.75], [0.125, 0.625, 0.25, 0.75],
            [0.625, 0.25, 0.25, 0.5], [0.625, 0.5, 0.25, 0.5]]


def _anchors(rng, n=A):
    centers = rng.uniform(0.1, 0.9, (n, 2))
    sizes = rng.uniform(0.05, 0.4, (n, 2))
    anchors = np.concatenate([centers, sizes], axis=1).astype(np.float32)
    anchors[:4] = _CRAFTED
    return anchors


ANCHORS = _anchors(np.random.default_rng(0))


@pytest.fixture(scope="module")
def op():
    """``op(**options)`` -> a function running the real kernel; each option
    set's model is converted once per module."""
    tf = pytest.importorskip("tensorflow")
    from ai_edge_litert.interpreter import Interpreter

    from ssdkit.convert.tflite.flatbuffer import read_custom_options, set_custom_options
    from ssdkit.convert.tflite.postprocess_op import OP_NAME, DetectionPostProcessOptions, detection_postprocess

    built = {}

    def build(fix_detections_per_class=True, **kwargs):
        key = (fix_detections_per_class, tuple(sorted(kwargs.items())))
        if key in built:
            return built[key]
        options = DetectionPostProcessOptions(num_classes=C, **kwargs)
        spec = [tf.TensorSpec([1, A, 4], tf.float32), tf.TensorSpec([1, A, C + 1], tf.float32)]
        module = tf.Module()
        module.fn = tf.function(lambda b, s: detection_postprocess(b, s, tf.constant(ANCHORS), options),
                                input_signature=spec)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([module.fn.get_concrete_function()], module)
        converter.allow_custom_ops = True
        model = converter.convert()
        if fix_detections_per_class:
            model = set_custom_options(model, OP_NAME, {"detections_per_class": options.detections_per_class})
        interpreter = Interpreter(model_content=model)
        interpreter.allocate_tensors()
        inputs = sorted(interpreter.get_input_details(), key=lambda d: tuple(d["shape"])[-1])  # [.., 4] first
        # Outputs are named <call>:0..3 in the op's order: boxes, classes, scores, count.
        outputs = sorted(interpreter.get_output_details(), key=lambda d: d["name"])

        def run(boxes, scores):
            interpreter.set_tensor(inputs[0]["index"], boxes[None])
            interpreter.set_tensor(inputs[1]["index"], scores[None])
            interpreter.invoke()
            return [interpreter.get_tensor(d["index"]).copy() for d in outputs]

        run.custom_options = read_custom_options(model, OP_NAME)[0]
        built[key] = run
        return run

    return build


def _run_op(run, boxes, scores):
    boxes_out, classes, scores_out, count = run(boxes, scores)
    return boxes_out[0], classes[0], scores_out[0], int(count[0])


def _assert_same(op_out, ours, slots_per_detection=1):
    boxes, classes, scores, n = op_out
    assert n == ours[3]
    k = n * slots_per_detection
    np.testing.assert_array_equal(classes[:k], ours[1][:k])
    np.testing.assert_array_equal(scores[:k], ours[2][:k])
    np.testing.assert_array_equal(boxes[:k], ours[0][:k])
    assert ours[0].dtype == ours[1].dtype == ours[2].dtype == np.float32


KINDS = ["random", "ties", "quantized", "at_threshold", "degenerate", "low"]


def _inputs(rng, kind):
    """Box codes [A, 4] and activated scores [A, C+1] built to hit one edge case."""
    boxes = rng.normal(0, 1, (A, 4)).astype(np.float32)
    boxes[:4] = 0  # the crafted IoU 0.5 / 1/3 pairs
    scores = rng.uniform(0, 1, (A, C + 1)).astype(np.float32)
    if kind == "ties":  # exact ties across anchors and across classes
        scores = np.round(scores * 6) / 6
    elif kind == "quantized":  # what a uint8 output dequantizes to
        scores = np.round(scores * 255) * np.float32(1 / 255)
    elif kind == "at_threshold":  # scores exactly at and one ulp below the threshold
        scores[rng.random(scores.shape) < 0.3] = np.float32(SCORE_T)
        scores[rng.random(scores.shape) < 0.1] = np.nextafter(np.float32(SCORE_T), np.float32(0))
    elif kind == "degenerate":  # identical boxes, zero-area boxes
        boxes[10:20] = boxes[5]
        boxes[20:26, 2] = -150.0  # half height exp(-30) * h rounds away: ymin == ymax
        boxes[26:30, 3] = -150.0
    elif kind == "low":  # few or no candidates
        scores *= np.float32(0.32)
    return boxes, scores.astype(np.float32)


def _fuzz(op, kind, trials, **options):
    run = op(**options)
    # A seed per (kind, options) that is the same in every process (hash() of a str is not).
    rng = np.random.default_rng(zlib.crc32(repr((kind, sorted(options.items()))).encode()))
    for _ in range(trials):
        boxes, scores = _inputs(rng, kind)
        ours = pp.detection_postprocess(boxes, scores, ANCHORS, **options)
        _assert_same(_run_op(run, boxes, scores), ours, options.get("max_classes_per_detection", 1)
                     if not options.get("use_regular_nms") else 1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("iou", [0.5, 0.25])
def test_fast_mode_matches_kernel(op, kind, iou):
    _fuzz(op, kind, 12, max_detections=10, nms_score_threshold=SCORE_T, nms_iou_threshold=iou)


@pytest.mark.parametrize("kind", KINDS)
def test_fast_mode_several_classes_per_detection_matches_kernel(op, kind):
    _fuzz(op, kind, 12, max_detections=8, max_classes_per_detection=3,
          nms_score_threshold=SCORE_T, nms_iou_threshold=0.5)


def test_fast_mode_more_classes_per_detection_than_classes(op):
    # Slots i * max_classes + r for r >= C are gaps the kernel leaves unwritten.
    run = op(max_detections=4, max_classes_per_detection=C + 2, nms_score_threshold=SCORE_T, nms_iou_threshold=0.5)
    boxes, scores = _inputs(np.random.default_rng(9), "random")
    ours = pp.detection_postprocess(boxes, scores, ANCHORS, max_detections=4, max_classes_per_detection=C + 2,
                                    nms_score_threshold=SCORE_T, nms_iou_threshold=0.5)
    theirs = _run_op(run, boxes, scores)
    assert ours[0].shape == ((C + 2) * 4, 4) and theirs[3] == ours[3] == 4
    written = (np.arange(4)[:, None] * (C + 2) + np.arange(C)).ravel()
    for mine, kernel in zip(ours[:3], theirs[:3]):
        np.testing.assert_array_equal(kernel[written], mine[written])


@pytest.mark.parametrize("per_class", [1, 2, 100])
@pytest.mark.parametrize("kind", KINDS)
def test_regular_mode_matches_kernel(op, per_class, kind):
    _fuzz(op, kind, 8, max_detections=7, detections_per_class=per_class, use_regular_nms=True,
          nms_score_threshold=SCORE_T, nms_iou_threshold=0.5)


@pytest.mark.parametrize("kind", ["random", "ties"])
def test_regular_mode_with_room_for_all_matches_kernel(op, kind):
    # max_detections above the candidate count: padding rows are zeros in both.
    run = op(max_detections=A * C, detections_per_class=3, use_regular_nms=True,
             nms_score_threshold=SCORE_T, nms_iou_threshold=0.4)
    rng = np.random.default_rng(4)
    for _ in range(5):
        boxes, scores = _inputs(rng, kind)
        ours = pp.detection_postprocess(boxes, scores, ANCHORS, max_detections=A * C, detections_per_class=3,
                                        use_regular_nms=True, nms_score_threshold=SCORE_T, nms_iou_threshold=0.4)
        theirs = _run_op(run, boxes, scores)
        _assert_same(theirs, ours)
        for mine, kernel in zip(ours[:3], theirs[:3]):
            np.testing.assert_array_equal(kernel[ours[3]:], mine[ours[3]:])


def test_converter_drops_detections_per_class(op):
    """TF 2.20's converter leaves detections_per_class out of the op, so the
    kernel runs with 100; our function then matches with 100, not the asked 1."""
    run = op(fix_detections_per_class=False, max_detections=10, detections_per_class=1, use_regular_nms=True,
             nms_score_threshold=SCORE_T, nms_iou_threshold=0.5)
    assert "detections_per_class" not in run.custom_options
    boxes, scores = _inputs(np.random.default_rng(2), "random")
    theirs = _run_op(run, boxes, scores)
    common = dict(max_detections=10, use_regular_nms=True, nms_score_threshold=SCORE_T, nms_iou_threshold=0.5)
    _assert_same(theirs, pp.detection_postprocess(boxes, scores, ANCHORS, detections_per_class=100, **common))
    assert pp.detection_postprocess(boxes, scores, ANCHORS, detections_per_class=1, **common)[3] < theirs[3]


def test_thresholds_are_inclusive_for_scores_and_strict_for_iou():
    codes = np.zeros((4, 4), np.float32)
    boxes = box_coder.decode_center_size(codes, ANCHORS[:4])
    assert iou_matrix(boxes[:1], boxes[1:2])[0, 0] == 0.5
    scores = np.zeros((4, 2), np.float32)
    scores[:2, 1] = np.float32(SCORE_T)
    common = dict(max_detections=5, nms_score_threshold=SCORE_T)
    _, _, s, n = pp.detection_postprocess(codes, scores, ANCHORS[:4], nms_iou_threshold=0.5, **common)
    assert n == 2 and list(s[:2]) == [np.float32(SCORE_T)] * 2  # score == threshold kept; IoU == 0.5 kept
    _, _, _, n = pp.detection_postprocess(codes, scores, ANCHORS[:4], nms_iou_threshold=0.4999, **common)
    assert n == 1


def test_empty_when_nothing_passes():
    boxes, classes, scores, n = pp.detection_postprocess(
        np.zeros((4, 4), np.float32), np.full((4, 3), 0.1, np.float32), ANCHORS[:4],
        max_detections=3, nms_score_threshold=0.5, nms_iou_threshold=0.5)
    assert n == 0 and boxes.shape == (3, 4) and not boxes.any() and not classes.any() and not scores.any()


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(nms_iou_threshold=0.0), "nms_iou_threshold 0.0 must be in"),
    (dict(use_regular_nms=True, detections_per_class=0), "detections_per_class 0 must be positive"),
    (dict(max_classes_per_detection=0), "max_classes_per_detection 0 must be positive"),
])
def test_rejects_options_the_kernel_rejects(kwargs, message):
    options = dict(max_detections=3, nms_score_threshold=0.5, nms_iou_threshold=0.5) | kwargs
    with pytest.raises(ValueError, match=message):
        pp.detection_postprocess(np.zeros((4, 4)), np.zeros((4, 3)), ANCHORS[:4], **options)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"anchors has shape \(3, 4\), expected \[4, 4\]"):
        pp.detection_postprocess(np.zeros((4, 4)), np.zeros((4, 3)), ANCHORS[:3], max_detections=3,
                                 nms_score_threshold=0.5, nms_iou_threshold=0.5)


def _ref_partial_sort_order(values, k):
    """What any correct partial sort must give when values have no ties."""
    return sorted(range(len(values)), key=lambda i: -values[i])[:k]


def test_libstdcxx_partial_sort_replay_sorts():
    rng = np.random.default_rng(0)
    for n in range(1, 40):
        values = rng.permutation(n).astype(float).tolist()
        for k in {1, min(2, n), n // 2 or 1, n}:
            assert pp._libstdcxx_partial_argsort(values, k) == _ref_partial_sort_order(values, k)
        tied = rng.integers(0, 4, n).astype(float).tolist()
        k = max(1, n // 2)
        got = pp._libstdcxx_partial_argsort(tied, k)
        assert sorted(got) == sorted(set(got)) and [tied[i] for i in got] == sorted(tied, reverse=True)[:k]


def _slow_nms(boxes, scores, iou_threshold, score_threshold):
    order = sorted((i for i in range(len(scores)) if scores[i] >= score_threshold), key=lambda i: -scores[i])
    kept = []
    for i in order:
        if all(iou_matrix(boxes[i:i + 1], boxes[j:j + 1])[0, 0] <= iou_threshold for j in kept):
            kept.append(i)
    return kept


def _grid_boxes(rng, n):
    """Boxes on a 1/16 grid, so many pairs sit exactly at IoU 0.5, 1/3, ..."""
    corner = rng.integers(0, 10, (n, 2)) / 16
    size = rng.integers(1, 6, (n, 2)) / 16
    return np.concatenate([corner, corner + size], 1)


def test_batched_nms_per_class_and_agnostic_match_reference():
    rng = np.random.default_rng(3)
    boxes = _grid_boxes(rng, 120)
    scores = (rng.integers(0, 8, 120) / 8).astype(np.float32)  # ties and scores at the threshold
    classes = rng.integers(0, 3, 120)
    for iou in (0.5, 1 / 3):
        agnostic = nms.batched_nms(boxes, scores, classes, iou, 0.25, max_output=1000, class_agnostic=True)
        assert list(agnostic) == _slow_nms(boxes, scores, iou, 0.25)
        per_class = nms.batched_nms(boxes, scores, classes, iou, 0.25, max_output=1000)
        expected = []
        for c in range(3):
            idx = np.flatnonzero(classes == c)
            expected += [idx[i] for i in _slow_nms(boxes[idx], scores[idx], iou, 0.25)]
        assert sorted(per_class) == sorted(expected)
        assert list(per_class) == sorted(per_class, key=lambda i: -scores[i])  # stable best-first


def test_activations_and_dequantization():
    x = np.array([-100.0, 0.0, 100.0], np.float32)
    np.testing.assert_allclose(decoder.activate(x, "sigmoid"), [0, 0.5, 1], atol=1e-7)
    np.testing.assert_allclose(decoder.activate(x, "sigmoid", clip=1.0), 1 / (1 + np.exp(-np.array([-1, 0, 1]))), rtol=1e-6)
    np.testing.assert_allclose(decoder.activate(np.array([[1.0, 1.0], [1000.0, 0.0]]), "softmax"), [[0.5, 0.5], [1, 0]])
    np.testing.assert_array_equal(decoder.activate(x, "none", clip=2.0), [-2, 0, 2])
    np.testing.assert_allclose(decoder.dequantize(np.array([0, 128, 255], np.uint8), 1 / 255, 0), [0, 128 / 255, 1], rtol=1e-6)
    np.testing.assert_allclose(decoder.dequantize(np.array([-128, 0], np.int8), 0.5, -128), [0, 64])
    assert decoder.dequantize(np.array([3], np.int8), 0.0, 0).dtype == np.float32
    with pytest.raises(ValueError, match="unknown score activation 'relu'"):
        decoder.activate(x, "relu")


def test_pixel_scaled_decoding_matches_reference():
    rng = np.random.default_rng(6)
    raw = rng.normal(0, 20, (30, 6)).astype(np.float32)  # extra columns (keypoints) are ignored
    anchors = rng.uniform(0.1, 0.9, (30, 4)).astype(np.float32)
    scales = (128.0, 96.0, 64.0, 32.0)
    for reverse in (True, False):
        for exponential in (True, False):
            for fixed in (True, False):
                got = box_coder.decode_pixel_scaled(raw, anchors, scales, reverse, exponential, fixed)
                for i in range(30):  # MediaPipe's DecodeBoxes, one box at a time
                    y, x, h, w = raw[i, [1, 0, 3, 2]] if reverse else raw[i, :4]
                    ah, aw = (1.0, 1.0) if fixed else anchors[i, 2:]
                    yc, xc = y / scales[0] * ah + anchors[i, 0], x / scales[1] * aw + anchors[i, 1]
                    h = np.exp(h / scales[2]) * ah if exponential else h / scales[2] * ah
                    w = np.exp(w / scales[3]) * aw if exponential else w / scales[3] * aw
                    np.testing.assert_allclose(got[i], [yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2],
                                               rtol=1e-5, atol=1e-6)


def _slow_weighted_nms(boxes, scores, iou_threshold, score_threshold):
    remaining = sorted(range(len(scores)), key=lambda i: -scores[i])
    out = []
    while remaining:
        top = remaining[0]
        if score_threshold > 0 and scores[top] < score_threshold:
            break
        cluster = [i for i in remaining if iou_matrix(boxes[top:top + 1], boxes[i:i + 1])[0, 0] > iou_threshold]
        if not cluster:
            out.append((top, boxes[top]))
            break
        weights = scores[cluster]
        out.append((top, (boxes[cluster] * weights[:, None]).sum(0) / weights.sum()))
        remaining = [i for i in remaining if i not in cluster]
    return out


def test_weighted_nms_matches_reference():
    rng = np.random.default_rng(8)
    boxes = _grid_boxes(rng, 60).astype(np.float32)
    scores = rng.permutation(60).astype(np.float32) / 60
    for iou, score_t in ((0.5, 0.0), (1 / 3, 0.5)):
        out, kept, index = nms.weighted_nms(boxes, scores, iou, score_t)
        expected = _slow_weighted_nms(boxes, scores, iou, score_t)
        assert list(index) == [i for i, _ in expected]
        np.testing.assert_array_equal(kept, scores[index])
        np.testing.assert_allclose(out, np.array([b for _, b in expected]).reshape(-1, 4), rtol=1e-6)


def test_weighted_nms_stops_at_a_zero_area_top_box():
    boxes = np.array([[0.5, 0.5, 0.5, 0.9], [0.0, 0.0, 1.0, 1.0]], np.float32)
    out, kept, index = nms.weighted_nms(boxes, np.array([0.9, 0.8], np.float32), 0.3)
    assert list(index) == [0] and out.tolist() == [boxes[0].tolist()]
