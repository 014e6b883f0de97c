"""Third-party spec JSON: anchors (MediaPipe, OD API grid, array files), shipped
specs, schema errors, output roles of TF1/TF2 detectors, and a real model run
through a third-party spec."""
import dataclasses
import json

import numpy as np
import pytest

from ssdkit.runtime import Detector
from ssdkit.runtime.backends.base import TensorInfo
from ssdkit.runtime.mediapipe_anchors import MediaPipeSsdAnchors
from ssdkit.runtime.model_files import read_spec
from ssdkit.runtime.detector_spec import load_spec, shipped_specs
from ssdkit.runtime.roles import find_roles, settle


def test_blazeface_short_range_anchors():
    # 16x16 grid (stride 8) with 2 anchors per cell, then strides 16, 16, 16
    # merged: an 8x8 grid with 6 anchors per cell. Fixed size: all 1 x 1.
    anchors = load_spec("blazeface_short_range").anchors.center_size()
    assert anchors.shape == (16 * 16 * 2 + 8 * 8 * 6, 4) == (896, 4)
    np.testing.assert_allclose(anchors[:2], [[0.03125, 0.03125, 1, 1]] * 2)
    np.testing.assert_allclose(anchors[2], [0.03125, 0.09375, 1, 1])  # next column, same row
    np.testing.assert_allclose(anchors[512:518], [[0.0625, 0.0625, 1, 1]] * 6)
    np.testing.assert_allclose(anchors[-1], [0.9375, 0.9375, 1, 1])


def test_mediapipe_anchor_sizes_follow_the_calculator():
    anchors = MediaPipeSsdAnchors(input_size_height=32, input_size_width=32, min_scale=0.2, max_scale=0.8,
                                  num_layers=2, strides=(8, 16), aspect_ratios=(1.0, 2.0)).center_size()
    # Layer 0 (4x4): scale 0.2 at ratios 1 and 2, then sqrt(0.2 * 0.8) = 0.4 at ratio 1.
    # Layer 1 (2x2): scale 0.8 at ratios 1 and 2, then sqrt(0.8 * 1.0) (the last layer's next scale is 1).
    r = np.sqrt(2)
    np.testing.assert_allclose(anchors[:3, 2:], [[0.2, 0.2], [0.2 / r, 0.2 * r], [0.4, 0.4]], rtol=1e-6)
    np.testing.assert_allclose(anchors[:3, :2], [[0.125, 0.125]] * 3)
    assert anchors.shape == (4 * 4 * 3 + 2 * 2 * 3, 4)
    s = np.sqrt(0.8)
    np.testing.assert_allclose(anchors[48:51, 2:], [[0.8, 0.8], [0.8 / r, 0.8 * r], [s, s]], rtol=1e-6)
    np.testing.assert_allclose(anchors[48, :2], [0.25, 0.25])
    reduced = MediaPipeSsdAnchors(input_size_height=32, input_size_width=32, min_scale=0.2, max_scale=0.8,
                                  num_layers=2, strides=(8, 16), reduce_boxes_in_lowest_layer=True).center_size()
    np.testing.assert_allclose(reduced[:3, 2:], [[0.1, 0.1], [0.2 / r, 0.2 * r], [0.2 * r, 0.2 / r]], rtol=1e-6)


def test_shipped_specs_load_by_name():
    assert {"blazeface_short_range", "ssd_mobilenet_v1_coco_tf1"} <= set(shipped_specs())
    tf1 = load_spec("ssd_mobilenet_v1_coco_tf1")
    assert tf1.anchors.center_size().shape == (1917, 4)  # the OD API's ssd_mobilenet_v1 300x300
    assert tf1.labels[0] == "person" and tf1.nms.kind == "tflite"


def _write(tmp_path, spec: dict, name="spec.json"):
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return path


MINIMAL = {"ssdkit_third_party_spec": 1, "name": "m", "preprocessing": {"input_height": 8, "input_width": 8}}


@pytest.mark.parametrize("change, message", [
    ({"ssdkit_third_party_spec": 2}, "third-party spec version 2 is not supported, expected 1"),
    ({"colour": "RGB"}, r"unknown field\(s\) \['colour'\]"),
    ({"nms": {"kind": "soft"}}, 'nms.kind is "soft", expected one of "tflite", "tflite_regular", "hard", "weighted"'),
    ({"box_coder": {"kind": "pixel", "scales": [8, 8, 8, 8]}, "nms": {"kind": "tflite"}},
     'nms.kind is "tflite", expected "hard" or "weighted" with the "pixel" box coder'),
    ({"anchors": {"kind": "ring"}}, 'anchors.kind is "ring", expected one of file, mediapipe_ssd'),
    ({"anchors": {"kind": "multiple_grid"}}, "anchors of kind 'multiple_grid' need 'feature_map_shapes'"),
    ({"anchors": {"kind": "mediapipe_ssd", "input_size_height": 8, "input_size_width": 8, "min_scale": 0.1,
                  "max_scale": 0.9, "num_layers": 2, "strides": [8]}},
     r"anchors.strides is \[8\], expected 2 strides \(one per layer: num_layers is 2\)"),
    ({"outputs": {"box_encodings": "a"}}, r"outputs \['box_encodings'\], expected"),
    ({"labels": ["a"], "labels_file": "l.txt"}, "give 'labels' or 'labels_file', not both"),
])
def test_schema_errors_name_the_file_and_the_problem(tmp_path, change, message):
    path = _write(tmp_path, {**MINIMAL, **change})
    with pytest.raises(ValueError, match=message) as error:
        load_spec(path)
    assert str(error.value).startswith(str(path))


def test_missing_spec_file_lists_the_shipped_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="shipped specs: .*blazeface_short_range"):
        load_spec(tmp_path / "nope.json")


def test_anchor_files_in_each_layout_agree(tmp_path):
    rng = np.random.default_rng(0)
    yxhw = rng.uniform(0.1, 0.9, (20, 4)).astype(np.float32)
    np.save(tmp_path / "yxhw.npy", yxhw)
    np.save(tmp_path / "xywh.npy", yxhw[:, [1, 0, 3, 2]])
    np.savetxt(tmp_path / "yxhw.csv", yxhw, delimiter=",")
    corners = np.concatenate([yxhw[:, :2] - yxhw[:, 2:] / 2, yxhw[:, :2] + yxhw[:, 2:] / 2], axis=1)
    np.save(tmp_path / "corners.npy", corners)
    for name, layout in (("yxhw.npy", "yxhw"), ("xywh.npy", "xywh"), ("yxhw.csv", "yxhw"), ("corners.npy", "corners")):
        spec = load_spec(_write(tmp_path, {**MINIMAL, "anchors": {"kind": "file", "path": name, "layout": layout}}))
        np.testing.assert_allclose(spec.anchors.center_size(), yxhw, atol=1e-6, err_msg=name)
    np.save(tmp_path / "bad.npy", yxhw[:, :3])
    spec = load_spec(_write(tmp_path, {**MINIMAL, "anchors": {"kind": "file", "path": "bad.npy"}}))
    with pytest.raises(ValueError, match=r"bad.npy: anchors of shape \(20, 3\), expected \[anchors, 4\]"):
        spec.anchors.center_size()


def _info(name, shape):
    return TensorInfo(name, shape, np.dtype(np.float32))


def test_tf1_and_tf2_detector_output_orders():
    # TF1's export_tflite_ssd_graph: boxes, classes, scores, count.
    tf1 = [_info("TFLite_Detection_PostProcess", (1, 10, 4)), _info("TFLite_Detection_PostProcess:1", (1, 10)),
           _info("TFLite_Detection_PostProcess:2", (1, 10)), _info("TFLite_Detection_PostProcess:3", (1,))]
    roles, certain = find_roles(tf1)
    assert dict(roles.names)["detection_classes"] == "TFLite_Detection_PostProcess:1" and not certain
    # TF2's export_tflite_graph_tf2: scores, boxes, count, classes.
    tf2 = [_info("StatefulPartitionedCall:1", (1, 10)), _info("StatefulPartitionedCall:3", (1, 10, 4)),
           _info("StatefulPartitionedCall:0", (1,)), _info("StatefulPartitionedCall:2", (1, 10))]
    roles, certain = find_roles(tf2)
    names = dict(roles.names)
    assert (names["detection_scores"], names["detection_boxes"], names["num_detections"],
            names["detection_classes"]) == ("StatefulPartitionedCall:1", "StatefulPartitionedCall:3",
                                            "StatefulPartitionedCall:0", "StatefulPartitionedCall:2")
    # The values confirm the guess, or swap classes and scores when it was wrong.
    values = {"StatefulPartitionedCall:1": np.array([[0.9, 0.4] + [0] * 8]),
              "StatefulPartitionedCall:2": np.array([[3.0, 1.0] + [0] * 8]),
              "StatefulPartitionedCall:0": np.array([2.0]), "StatefulPartitionedCall:3": np.zeros((1, 10, 4))}
    assert settle(roles, values) == roles
    swapped = {**values, "StatefulPartitionedCall:1": values["StatefulPartitionedCall:2"],
               "StatefulPartitionedCall:2": values["StatefulPartitionedCall:1"]}
    fixed = dict(settle(roles, swapped).names)
    assert fixed["detection_classes"] == "StatefulPartitionedCall:1"
    assert settle(roles, {**values, "StatefulPartitionedCall:0": np.array([0.0])}) is None  # nothing to tell by


def test_roles_by_name_and_unknown_layouts():
    roles, certain = find_roles([_info("classificators", (1, 896, 1)), _info("regressors", (1, 896, 16))])
    assert certain and dict(roles.names) == {"box_encodings": "regressors", "class_predictions": "classificators"}
    with pytest.raises(ValueError, match=r"cannot tell which output is which \(a \[1, 5\], b \[1, 5\], c \[1, 5\]\)"):
        find_roles([_info("a", (1, 5)), _info("b", (1, 5)), _info("c", (1, 5))])


@pytest.fixture(scope="module")
def raw_model(tiny_tflite):
    return tiny_tflite(quant="fp32", nms=False, score_threshold=0.0)


def test_a_model_runs_the_same_through_a_third_party_spec(raw_model, tmp_path):
    """The embedded spec, the same model described as a third-party OD API
    model, and with its anchors from a file: identical detections."""
    path = raw_model
    spec = read_spec(path)  # as embedded: the export adds the output roles
    grid = dataclasses.asdict(spec.anchors)
    base = {
        "ssdkit_third_party_spec": 1, "name": "described",
        "preprocessing": dataclasses.asdict(spec.preprocessing), "labels": list(spec.labels),
        "box_coder": {"kind": "faster_rcnn", "scales": list(spec.box_coder.scales)},
        # The raw TFLite export outputs activated scores, as TF OD API raw exports do.
        "scores": {"activation": "none" if spec.outputs.scores_activated else spec.postprocessing.score_activation},
        "nms": {"kind": "tflite", "score_threshold": 0.0, "iou_threshold": spec.postprocessing.iou_threshold,
                "max_detections": spec.postprocessing.max_detections},
    }
    np.save(tmp_path / "anchors.npy", spec.anchors_center_size())
    described = [
        _write(tmp_path, {**base, "anchors": {**grid, "feature_map_shapes": [list(s) for s in spec.feature_map_shapes]}},
               "grid.json"),
        _write(tmp_path, {**base, "anchors": {"kind": "file", "path": "anchors.npy"}}, "file.json"),
    ]
    image = np.random.default_rng(3).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    with Detector(path, score_threshold=0.0) as detector:
        expected = detector.detect(image)
    assert expected
    for spec_path in described:
        with Detector(path, spec=str(spec_path), score_threshold=0.0) as detector:
            got = detector.detect(image)
        assert [(d.class_id, d.label) for d in got] == [(d.class_id, d.label) for d in expected]
        np.testing.assert_allclose([d.box for d in got], [d.box for d in expected], atol=1e-3)
        np.testing.assert_allclose([d.score for d in got], [d.score for d in expected], atol=1e-6)


def test_a_spec_that_does_not_fit_the_model_is_a_clear_error(raw_model, tmp_path):
    path = raw_model
    spec = _write(tmp_path, {**MINIMAL, "name": "wrong", "preprocessing": {"input_height": 96, "input_width": 96},
                             "anchors": {"kind": "mediapipe_ssd", "input_size_height": 96, "input_size_width": 96,
                                         "min_scale": 0.1, "max_scale": 0.9, "num_layers": 1, "strides": [8]}})
    with pytest.raises(ValueError, match=r"raw outputs \[1, \d+, 4\] and \[1, \d+, 3\], expected \[1, 288, 4\]"):
        Detector(path, spec=str(spec))
