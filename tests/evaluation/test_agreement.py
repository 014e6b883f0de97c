"""The agreement of one model's detections with a reference's: the shared
measure of the quantization report, ``ssdkit verify`` and importers."""
import numpy as np
import pytest

from ssdkit.evaluation.agreement import detection_agreement
from ssdkit.evaluation.evaluate import parse_class_map, strict_class_mapping


def _image(*detections):
    """(ymin, xmin, ymax, xmax, class, score) tuples -> one image's Prediction."""
    rows = np.array(detections, np.float32).reshape(-1, 6)
    return rows[:, :4], rows[:, 4].astype(np.int64), rows[:, 5]


def test_identical_detections_agree_fully():
    image = _image((0, 0, 0.5, 0.5, 0, 0.9), (0.5, 0.5, 1, 1, 1, 0.8))
    agreement = detection_agreement([image], [image])
    assert (agreement.precision, agreement.recall, agreement.mean_iou) == (1.0, 1.0, pytest.approx(1.0))
    assert (agreement.matched, agreement.reference, agreement.candidate) == (2, 2, 2)


def test_precision_recall_and_mean_iou_count_one_to_one_matches():
    reference = [_image((0, 0, 0.4, 0.4, 0, 0.9), (0.5, 0.5, 0.9, 0.9, 1, 0.9)), _image((0, 0, 1, 1, 0, 0.7))]
    candidate = [
        # first image: the class-0 box shifted (IoU 0.6), a duplicate of it (matches nothing: one to one),
        # the class-1 box found as class 0 (wrong class: no match)
        _image((0, 0.1, 0.4, 0.5, 0, 0.8), (0, 0.1, 0.4, 0.5, 0, 0.6), (0.5, 0.5, 0.9, 0.9, 0, 0.9)),
        # second image: found, and one extra detection below the score threshold (not counted)
        _image((0, 0, 1, 1, 0, 0.95), (0.2, 0.2, 0.3, 0.3, 1, 0.4)),
    ]
    agreement = detection_agreement(reference, candidate)
    assert (agreement.matched, agreement.reference, agreement.candidate) == (2, 3, 4)
    assert agreement.recall == pytest.approx(2 / 3)
    assert agreement.precision == pytest.approx(2 / 4)
    assert agreement.mean_iou == pytest.approx((0.6 + 1.0) / 2)


def test_a_box_below_the_iou_threshold_is_a_miss_and_empty_sides_are_perfect():
    reference = [_image((0, 0, 0.4, 0.4, 0, 0.9))]
    far = [_image((0, 0.2, 0.4, 0.6, 0, 0.9))]  # IoU 1/3
    agreement = detection_agreement(reference, far)
    assert (agreement.recall, agreement.precision, agreement.mean_iou) == (0.0, 0.0, 0.0)
    nothing = [_image()]
    assert detection_agreement(nothing, nothing).as_dict()["recall"] == 1.0
    assert detection_agreement(reference, nothing).precision == 1.0  # no candidate detection is wrong


def test_different_image_counts_are_refused():
    with pytest.raises(ValueError, match="1 images .* reference's 2"):
        detection_agreement([_image(), _image()], [_image()])


def test_class_map_pairs_and_json(tmp_path):
    assert parse_class_map("a=dog, b = cat") == {"a": "dog", "b": "cat"}
    (tmp_path / "map.json").write_text('{"a": "dog"}')
    assert parse_class_map(str(tmp_path / "map.json")) == {"a": "dog"}
    with pytest.raises(ValueError, match="MODEL_LABEL=DATASET_LABEL"):
        parse_class_map("a:dog")


def test_strict_mapping_names_the_labels_that_do_not_match():
    assert strict_class_mapping(("a", "b", "c"), ("b", "a")).tolist() == [1, 0, -1]  # extra model labels are fine
    assert strict_class_mapping(("a", "b"), ("cat", "dog"), {"a": "dog", "b": "cat"}).tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"categories cat, dog match no label .*unmatched model labels: a, b.*--class-map"):
        strict_class_mapping(("a", "b"), ("cat", "dog"), source="voc")
    with pytest.raises(ValueError, match="names zebra, which the model does not have"):
        strict_class_mapping(("a", "b"), ("a", "b"), {"zebra": "a"})
