"""Third-party spec values of the wrong type or out of range: one ValueError
from the API, one line and exit code 2 from the CLI, each naming the file
and the field (``spec.build`` checks types, ``detector_spec.validate`` ranges)."""
import json

import numpy as np
import pytest

from ssdkit.cli import main
from ssdkit.runtime import DetectorSpec, ModelSpec
from ssdkit.runtime.detector_spec import Nms, load_spec
from ssdkit.runtime.spec import Preprocessing

GRID = {"kind": "multiple_grid", "num_layers": 2, "feature_map_shapes": [[2, 2], [1, 1]]}
MINIMAL = {"ssdkit_third_party_spec": 1, "name": "m", "preprocessing": {"input_height": 8, "input_width": 8},
           "labels": ["a"], "anchors": GRID}


def _merged(base: dict, change: dict) -> dict:
    out = dict(base)
    for key, value in change.items():
        merge = isinstance(value, dict) and key in base and "kind" not in value  # a new kind replaces the section
        out[key] = _merged(base[key], value) if merge else value
    return out


# (change to MINIMAL, the message after "PATH: "); values a JSON file can hold.
CASES = {
    "string for a number": ({"preprocessing": {"input_height": "300"}},
                            'preprocessing.input_height is "300", expected an integer'),
    "non-integer size": ({"preprocessing": {"input_width": 8.5}},
                         "preprocessing.input_width is 8.5, expected an integer"),
    "bool for an integer": ({"nms": {"max_detections": True}}, "nms.max_detections is true, expected an integer"),
    "string for a list": ({"preprocessing": {"mean": "127.5"}},
                          'preprocessing.mean is "127.5", expected a list of 3 numbers'),
    "list of the wrong length": ({"preprocessing": {"std": [127.5, 127.5]}},
                                 "preprocessing.std is [127.5, 127.5], expected a list of 3 numbers"),
    "string in a list of numbers": ({"box_coder": {"scales": [10, "10", 5, 5]}},
                                    'box_coder.scales[1] is "10", expected a number'),
    "string for a list of labels": ({"labels": "cat"}, 'labels is "cat", expected a list of strings'),
    "number among the labels": ({"labels": ["a", 3]}, "labels[1] is 3, expected a string"),
    "empty label": ({"labels": ["a", ""]}, "spec 'm': labels is [\"a\", \"\"], expected non-empty names"),
    "object for a section": ({"nms": [0.5]}, "nms is [0.5], expected an object"),
    "unknown value of a choice": ({"preprocessing": {"color_order": "rgb"}},
                                  'preprocessing.color_order is "rgb", expected one of "RGB", "BGR"'),
    "NaN": ({"nms": {"iou_threshold": float("nan")}}, "nms.iou_threshold is NaN, expected a number"),
    "negative threshold": ({"nms": {"score_threshold": -0.1}},
                           "spec 'm': nms.score_threshold is -0.1, expected a number from 0 to 1"),
    "threshold above 1": ({"nms": {"score_threshold": 1.5}},
                          "spec 'm': nms.score_threshold is 1.5, expected a number from 0 to 1"),
    "IoU threshold 0": ({"nms": {"iou_threshold": 0}}, "spec 'm': nms.iou_threshold is 0.0, expected a number above 0 and at most 1"),
    "zero detections": ({"nms": {"max_detections": 0}}, "spec 'm': nms.max_detections is 0, expected an integer from 1 to 10000"),
    "zero input size": ({"preprocessing": {"input_height": 0}},
                        "spec 'm': preprocessing.input_height is 0, expected a positive integer"),
    "zero std": ({"preprocessing": {"std": [127.5, 0, 127.5]}},
                 "spec 'm': preprocessing.std is [127.5, 0.0, 127.5], expected 3 nonzero numbers"),
    "zero box scale": ({"box_coder": {"scales": [10, 10, 0, 5]}},
                       "spec 'm': box_coder.scales is [10.0, 10.0, 0.0, 5.0], expected 4 positive numbers"),
    "negative score clip": ({"scores": {"clip": -1}}, "spec 'm': scores.clip is -1.0, expected a positive number or null"),
    "negative class offset": ({"class_offset": -1},
                              "spec 'm': class_offset is -1, expected 0 or a positive integer"),
    "float class offset": ({"class_offset": 0.5}, "class_offset is 0.5, expected an integer"),
    "missing field": ({"preprocessing": {"input_width": None}}, "preprocessing.input_width is missing"),
    "missing name": ({"name": None}, "name is missing"),
    "null name": ({"name": "null"}, "name is null, expected a string"),
    "missing labels file": ({"labels": None, "labels_file": "labels.txt"},
                            'labels_file "labels.txt" cannot be read (looked in {dir}: No such file or directory)'),
    "missing anchors file": ({"anchors": {"kind": "file", "path": "anchors.npy"}},
                             'spec \'m\': anchors.path "anchors.npy" is not a file (looked in {dir})'),
    "string for an anchor scale": ({"anchors": {"min_scale": "0.2"}}, 'anchors.min_scale is "0.2", expected a number'),
    "anchor scales out of order": ({"anchors": {"min_scale": 0.9, "max_scale": 0.2}},
                                   "spec 'm': anchors.min_scale/max_scale is [0.9, 0.2], expected 0 < min_scale <= "
                                   "max_scale"),
    "feature map of one number": ({"anchors": {"feature_map_shapes": [[2, 2], [1]]}},
                                  "anchors.feature_map_shapes[1] is [1], expected a list of 2 integers"),
    "feature maps for another layer count": ({"anchors": {"feature_map_shapes": [[2, 2]]}},
                                             "spec 'm': anchors.feature_map_shapes is [[2, 2]], expected 2 [height, "
                                             "width] pairs of positive integers (one per layer)"),
    "negative output index": ({"outputs": {"box_encodings": -1, "class_predictions": 1}},
                              "outputs.box_encodings is -1, expected a tensor name or an output index (0, 1, ...)"),
}


def _write(folder, spec: dict):
    """The spec as a file; None leaves a field out, the string "null" writes null."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        return None if value == "null" else value

    path = folder / "spec.json"
    path.write_text(json.dumps(clean(spec)))
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_bad_value_is_one_value_error_naming_the_field(tmp_path, case):
    change, message = CASES[case]
    path = _write(tmp_path, _merged(MINIMAL, change))
    with pytest.raises(ValueError) as error:
        load_spec(path)
    assert str(error.value) == f"{path}: " + message.format(dir=tmp_path)


def test_the_command_line_says_it_in_one_line_with_exit_code_2(tmp_path, capsys):
    """The spec is checked before the model is opened (here: a file that is not a model)."""
    path = _write(tmp_path, _merged(MINIMAL, {"nms": {"score_threshold": -0.1}}))
    (tmp_path / "model.tflite").write_bytes(b"not a model")
    (tmp_path / "image.png").write_bytes(b"")
    assert main(["detect", str(tmp_path / "model.tflite"), str(tmp_path / "image.png"), "--spec", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"ssdkit detect: error: {path}: spec 'm': nms.score_threshold is -0.1, expected a number from 0 to 1\n"


def test_a_valid_spec_still_loads(tmp_path):
    spec = load_spec(_write(tmp_path, MINIMAL))
    assert spec.labels == ("a",) and spec.anchors.center_size().shape == (2 * 2 * 3 + 1 * 1 * 6, 4)


def test_specs_built_in_code_are_checked_too():
    with pytest.raises(ValueError, match=r"^spec 'x': nms.iou_threshold is 2, expected a number above 0 and at most 1$"):
        DetectorSpec("x", Preprocessing(8, 8), nms=Nms(iou_threshold=2))


def test_an_ssdkit_spec_is_checked_by_the_same_builder():
    good = json.loads(ModelSpec.from_json(json.dumps(_zoo_like())).to_json())
    assert good["feature_map_shapes"] == [[2, 2], [1, 1]]
    roles = {"kind": "raw", "names": [["box_encodings", "a"], ["class_predictions", "b"]], "scores_activated": True}
    assert json.loads(ModelSpec.from_dict({**_zoo_like(), "outputs": roles}).to_json())["outputs"] == roles
    with pytest.raises(ValueError, match=r'^outputs.kind is "logits", expected one of "raw", "detections"$'):
        ModelSpec.from_dict({**_zoo_like(), "outputs": {**roles, "kind": "logits"}})
    with pytest.raises(ValueError, match=r'^feature_map_shapes\[0\]\[1\] is "2", expected an integer$'):
        ModelSpec.from_dict({**_zoo_like(), "feature_map_shapes": [[2, "2"], [1, 1]]})
    with pytest.raises(ValueError, match=r'^anchors.kind is "ring", expected one of'):
        ModelSpec.from_dict({**_zoo_like(), "anchors": {"kind": "ring"}})


def _zoo_like() -> dict:
    return {"ssdkit_spec_version": 1, "name": "m", "preprocessing": {"input_height": 8, "input_width": 8},
            "anchors": {"kind": "multiple_grid", "num_layers": 2}, "feature_map_shapes": [[2, 2], [1, 1]],
            "labels": ["a"]}


def test_the_spec_json_ssdkit_writes_is_unchanged():
    """The embedded spec of every artifact: the same bytes as before the spec
    module was re-cut (ssd_mnv2 at 300x300 with the COCO slots: key order, floats, layout)."""
    pytest.importorskip("ssdkit.convert.zoo")
    from ssdkit.convert.zoo import ModelConfig, model_spec

    text = model_spec(ModelConfig("ssd_mnv2", labels=("a", "b"))).to_json()
    assert text == EXPECTED_SSD_MNV2_JSON
    assert ModelSpec.from_json(text).to_json() == text
    np.testing.assert_array_equal(ModelSpec.from_json(text).anchor_corners()[:2],
                                  model_spec(ModelConfig("ssd_mnv2", labels=("a", "b"))).anchor_corners()[:2])


# ModelConfig("ssd_mnv2", labels=("a", "b")) as the code before the re-cut wrote it.
EXPECTED_SSD_MNV2_JSON = (
    '{\n'
    ' "ssdkit_spec_version": 1,\n'
    ' "name": "ssd_mnv2",\n'
    ' "preprocessing": {\n'
    '  "input_height": 300,\n'
    '  "input_width": 300,\n'
    '  "mean": [\n'
    '   127.5,\n'
    '   127.5,\n'
    '   127.5\n'
    '  ],\n'
    '  "std": [\n'
    '   127.5,\n'
    '   127.5,\n'
    '   127.5\n'
    '  ],\n'
    '  "color_order": "RGB",\n'
    '  "resize": "stretch"\n'
    ' },\n'
    ' "anchors": {\n'
    '  "num_layers": 6,\n'
    '  "min_scale": 0.2,\n'
    '  "max_scale": 0.95,\n'
    '  "scales": [],\n'
    '  "aspect_ratios": [\n'
    '   1.0,\n'
    '   2.0,\n'
    '   0.5,\n'
    '   3.0,\n'
    '   0.3333\n'
    '  ],\n'
    '  "interpolated_scale_aspect_ratio": 1.0,\n'
    '  "base_anchor_size": [\n'
    '   1.0,\n'
    '   1.0\n'
    '  ],\n'
    '  "reduce_boxes_in_lowest_layer": true,\n'
    '  "kind": "multiple_grid"\n'
    ' },\n'
    ' "feature_map_shapes": [\n'
    '  [\n'
    '   19,\n'
    '   19\n'
    '  ],\n'
    '  [\n'
    '   10,\n'
    '   10\n'
    '  ],\n'
    '  [\n'
    '   5,\n'
    '   5\n'
    '  ],\n'
    '  [\n'
    '   3,\n'
    '   3\n'
    '  ],\n'
    '  [\n'
    '   2,\n'
    '   2\n'
    '  ],\n'
    '  [\n'
    '   1,\n'
    '   1\n'
    '  ]\n'
    ' ],\n'
    ' "labels": [\n'
    '  "a",\n'
    '  "b"\n'
    ' ],\n'
    ' "box_coder": {\n'
    '  "scales": [\n'
    '   10.0,\n'
    '   10.0,\n'
    '   5.0,\n'
    '   5.0\n'
    '  ]\n'
    ' },\n'
    ' "postprocessing": {\n'
    '  "score_activation": "sigmoid",\n'
    '  "score_threshold": 1e-08,\n'
    '  "iou_threshold": 0.6,\n'
    '  "max_detections": 100,\n'
    '  "detections_per_class": 100\n'
    ' },\n'
    ' "outputs": null\n'
    '}'
)
