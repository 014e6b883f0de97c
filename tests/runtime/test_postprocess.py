"""The shared postprocess against the real TFLite_Detection_PostProcess kernel."""
import numpy as np
import pytest

from ssdkit.runtime import postprocess as pp
from ssdkit.runtime.boxes import iou_matrix

A, C = 60, 5


def _anchors(rng, n=A):
    centers = rng.uniform(0.1, 0.9, (n, 2))
    sizes = rng.uniform(0.05, 0.4, (n, 2))
    return np.concatenate([centers, sizes], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def op_models(tmp_path_factory):
    """Builds TFLite models holding only the op, one per option set, once."""
    tf = pytest.importorskip("tensorflow")
    from ai_edge_litert.interpreter import Interpreter

    from ssdkit.convert.tflite_flatbuffer import set_custom_options
    from ssdkit.convert.tflite_postprocess import DetectionPostProcessOptions, detection_postprocess

    anchors = _anchors(np.random.default_rng(0))
    built = {}

    def build(**kwargs):
        key = tuple(sorted(kwargs.items()))
        if key in built:
            return built[key]
        options = DetectionPostProcessOptions(num_classes=C, **kwargs)
        spec = [tf.TensorSpec([1, A, 4], tf.float32), tf.TensorSpec([1, A, C + 1], tf.float32)]
        fn = tf.function(lambda b, s: detection_postprocess(b, s, tf.constant(anchors), options), input_signature=spec)
        module = tf.Module()
        module.fn = fn
        path = tmp_path_factory.mktemp("op") / "sm"
        tf.saved_model.save(module, str(path), signatures=fn.get_concrete_function())
        converter = tf.lite.TFLiteConverter.from_saved_model(str(path))
        converter.allow_custom_ops = True
        model = set_custom_options(converter.convert(), "TFLite_Detection_PostProcess",
                                   {"detections_per_class": options.detections_per_class})
        interpreter = Interpreter(model_content=model)
        interpreter.allocate_tensors()

        def run(boxes, scores):
            inputs = sorted(interpreter.get_input_details(), key=lambda d: d["name"])
            interpreter.set_tensor(inputs[0]["index"], boxes[None])
            interpreter.set_tensor(inputs[1]["index"], scores[None])
            interpreter.invoke()
            # Output tensors are named <call>:0..3 = boxes, classes, scores, count.
            outs = sorted(interpreter.get_output_details(), key=lambda d: d["name"])
            return [interpreter.get_tensor(d["index"])[0] for d in outs]

        built[key] = run
        return run

    return anchors, build


def _compare(op_out, ours, exact_slots):
    boxes, classes, scores, count = op_out
    n = int(count)
    assert n == ours[3]
    k = exact_slots(n)
    np.testing.assert_array_equal(classes[:k], ours[1][:k])
    np.testing.assert_array_equal(scores[:k], ours[2][:k])
    np.testing.assert_array_equal(boxes[:k], ours[0][:k])


def _random_inputs(rng, kind):
    boxes = rng.normal(0, 1, (A, 4)).astype(np.float32)
    scores = rng.uniform(0, 1, (A, C + 1)).astype(np.float32)
    if kind == "ties":  # quantized-like scores: many exact ties across anchors
        scores = np.round(scores * 8) / 8
    elif kind == "duplicates":  # identical boxes and zero-area boxes
        boxes[10:20] = boxes[0]
        boxes[20:25, 2:] = -50.0  # exp(-10) * anchor: tiny but positive
    elif kind == "low":
        scores *= 0.31
    return boxes, scores.astype(np.float32)


@pytest.mark.parametrize("kind", ["random", "ties", "duplicates", "low"])
@pytest.mark.parametrize("iou", [0.3, 0.6])
def test_fast_mode_matches_kernel(op_models, kind, iou):
    anchors, build = op_models
    run = build(max_detections=10, nms_score_threshold=0.3, nms_iou_threshold=iou)
    rng = np.random.default_rng(hash((kind, iou)) % 2**32)
    for _ in range(20):
        boxes, scores = _random_inputs(rng, kind)
        ours = pp.detection_postprocess(boxes, scores, anchors, max_detections=10,
                                        nms_score_threshold=0.3, nms_iou_threshold=iou)
        _compare(run(boxes, scores), ours, lambda n: n)


def test_fast_mode_several_classes_per_detection(op_models):
    anchors, build = op_models
    run = build(max_detections=8, max_classes_per_detection=3, nms_score_threshold=0.2, nms_iou_threshold=0.5)
    rng = np.random.default_rng(5)
    for _ in range(20):
        boxes, scores = _random_inputs(rng, "random")  # continuous scores: no class ties
        ours = pp.detection_postprocess(boxes, scores, anchors, max_detections=8, max_classes_per_detection=3,
                                        nms_score_threshold=0.2, nms_iou_threshold=0.5)
        assert ours[0].shape == (24, 4)
        _compare(run(boxes, scores), ours, lambda n: 3 * n)


@pytest.mark.parametrize("per_class", [1, 2, 100])
@pytest.mark.parametrize("kind", ["random", "duplicates", "low"])
def test_regular_mode_matches_kernel(op_models, per_class, kind):
    anchors, build = op_models
    run = build(max_detections=7, detections_per_class=per_class, use_regular_nms=True,
                nms_score_threshold=0.25, nms_iou_threshold=0.45)
    rng = np.random.default_rng(per_class)
    for _ in range(15):
        boxes, scores = _random_inputs(rng, kind)
        ours = pp.detection_postprocess(boxes, scores, anchors, max_detections=7, detections_per_class=per_class,
                                        use_regular_nms=True, nms_score_threshold=0.25, nms_iou_threshold=0.45)
        _compare(run(boxes, scores), ours, lambda n: 7)  # padding slots are zeros in both


def test_thresholds_are_inclusive_for_scores_and_strict_for_iou():
    anchors = np.array([[0.5, 0.5, 0.2, 0.2]] * 3, np.float32)
    boxes = np.zeros((3, 4), np.float32)
    boxes[1, 1] = 10 / 3  # centre moved by a third of the width (tx / 10 * w): IoU 0.5
    boxes[2, 1] = -boxes[1, 1]
    scores = np.array([[0, 0.5], [0, 0.5], [0, 0.49]], np.float32)
    iou = iou_matrix(pp.decode_boxes(boxes, anchors)[:1], pp.decode_boxes(boxes, anchors)[1:])[0]
    assert iou[0] == pytest.approx(0.5, abs=1e-6)
    common = dict(max_detections=5, nms_score_threshold=0.5)
    _, _, s, n = pp.detection_postprocess(boxes, scores, anchors, nms_iou_threshold=float(np.float32(iou[0])), **common)
    assert n == 2 and list(s[:2]) == [0.5, 0.5]  # score 0.5 >= 0.5 kept; IoU == threshold not suppressed
    _, _, _, n = pp.detection_postprocess(boxes, scores, anchors, nms_iou_threshold=0.49, **common)
    assert n == 1


def test_empty_when_nothing_passes():
    anchors = _anchors(np.random.default_rng(1), 4)
    boxes, classes, scores, n = pp.detection_postprocess(
        np.zeros((4, 4), np.float32), np.full((4, 3), 0.1, np.float32), anchors,
        max_detections=3, nms_score_threshold=0.5, nms_iou_threshold=0.5)
    assert n == 0 and not boxes.any() and not classes.any() and not scores.any()


def _slow_nms(boxes, scores, iou_threshold, score_threshold):
    order = sorted((i for i in range(len(scores)) if scores[i] >= score_threshold), key=lambda i: -scores[i])
    kept = []
    for i in order:
        if all(iou_matrix(boxes[i:i + 1], boxes[j:j + 1])[0, 0] <= iou_threshold for j in kept):
            kept.append(i)
    return kept


def test_batched_nms_per_class_and_agnostic_match_reference():
    rng = np.random.default_rng(3)
    corner = rng.uniform(0, 0.6, (80, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0.1, 0.4, (80, 2))], 1).astype(np.float32)
    scores = rng.uniform(0, 1, 80).astype(np.float32)
    classes = rng.integers(0, 3, 80)
    agnostic = pp.batched_nms(boxes, scores, classes, 0.5, 0.2, max_output=100, class_agnostic=True)
    assert list(agnostic) == _slow_nms(boxes, scores, 0.5, 0.2)
    per_class = pp.batched_nms(boxes, scores, classes, 0.5, 0.2, max_output=100)
    expected = []
    for c in range(3):
        idx = np.flatnonzero(classes == c)
        expected += [idx[i] for i in _slow_nms(boxes[idx], scores[idx], 0.5, 0.2)]
    assert sorted(per_class) == sorted(expected)
    assert list(scores[per_class]) == sorted(scores[per_class], reverse=True)


def test_activations_and_dequantization():
    x = np.array([-100.0, 0.0, 100.0], np.float32)
    np.testing.assert_allclose(pp.activate(x, "sigmoid"), [0, 0.5, 1], atol=1e-7)
    np.testing.assert_allclose(pp.activate(x, "sigmoid", clip=1.0), 1 / (1 + np.exp(-np.array([-1, 0, 1]))), rtol=1e-6)
    np.testing.assert_allclose(pp.activate(np.array([[1.0, 1.0]]), "softmax"), [[0.5, 0.5]])
    np.testing.assert_allclose(pp.dequantize(np.array([0, 128, 255], np.uint8), 1 / 255, 0), [0, 128 / 255, 1], rtol=1e-6)
    np.testing.assert_allclose(pp.dequantize(np.array([-128, 0], np.int8), 0.5, -128), [0, 64])
    with pytest.raises(ValueError, match="unknown score activation 'relu'"):
        pp.activate(x, "relu")


def test_pixel_scaled_decoding_like_blazeface():
    anchors = np.array([[0.5, 0.25, 1.0, 1.0]], np.float32)  # (yc, xc, h, w); fixed size counts as 1
    raw = np.array([[12.8, -6.4, 32.0, 64.0]], np.float32)  # x, y, w, h in 128-pixel units
    box = pp.decode_pixel_scaled(raw, anchors, (128, 128, 128, 128))
    yc, xc, h, w = 0.5 - 0.05, 0.25 + 0.1, 0.5, 0.25
    np.testing.assert_allclose(box, [[yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2]], atol=1e-6)


def test_weighted_nms_blends_overlapping_boxes_by_score():
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 0.1, 1.0, 1.1], [2.0, 2.0, 3.0, 3.0]], np.float32)
    scores = np.array([0.9, 0.3, 0.8], np.float32)
    out, kept_scores, index = pp.weighted_nms(boxes, scores, iou_threshold=0.5)
    assert list(index) == [0, 2] and list(kept_scores) == [pytest.approx(0.9), pytest.approx(0.8)]
    np.testing.assert_allclose(out[0], [0.0, 0.3 * 0.1 / 1.2, 1.0, 1.0 + 0.3 * 0.1 / 1.2], atol=1e-6)
    np.testing.assert_allclose(out[1], boxes[2])
    _, _, index = pp.weighted_nms(boxes, scores, iou_threshold=0.5, score_threshold=0.85)
    assert list(index) == [0]
