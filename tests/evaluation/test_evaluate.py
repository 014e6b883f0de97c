"""``ssdkit eval``'s metric: COCO mAP with classes matched by name, on datasets with known answers."""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from ssdkit.datasets.records import Record  # noqa: E402
from ssdkit.evaluation.evaluate import class_mapping, evaluate, load_dataset  # noqa: E402

LABELS = ("circle", "square")
CIRCLE = [0.0, 0.5, 0.2, 0.7]  # normalized (ymin, xmin, ymax, xmax) in a 100x100 image: a 20x20 px box
SQUARE = [0.0, 0.0, 0.2, 0.2]


def _record(box, cls):
    return Record(Path("x.jpg"), 100, 100, np.array([box], np.float32), np.array([cls]), np.zeros(1, bool))


def _detection(box, cls):
    return np.array([box], np.float32), np.array([cls]), np.array([0.9], np.float32)


RECORDS = [_record(CIRCLE, 0), _record(SQUARE, 1)]
NOTHING = (np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32))


def test_perfect_detections_score_one():
    stats = evaluate(RECORDS, LABELS, [_detection(CIRCLE, 0), _detection(SQUARE, 1)], class_mapping(LABELS, LABELS))
    assert stats["metrics"]["mAP"] == pytest.approx(1.0)
    assert stats["metrics"]["mAP@0.5"] == pytest.approx(1.0) and stats["metrics"]["mAP@0.75"] == pytest.approx(1.0)
    assert stats["per_class_AP"] == {"circle": pytest.approx(1.0), "square": pytest.approx(1.0)}


def test_shifted_box_scores_the_hand_computed_map():
    # The square's detection is shifted 4 px right: x 4..24 against 0..20, y 0..20 in both.
    # IoU = overlap 16*20 / union (400 + 400 - 320) = 320/480 = 0.667. COCO's thresholds are
    # 0.50, 0.55, ..., 0.95: it is a true positive at 0.50, 0.55, 0.60, 0.65 (4 of 10) and a
    # false positive above, where the square has no other detection: AP(square) = 4/10 = 0.4
    # (one ground truth, one detection: precision 1 at recall 1, else recall 0).
    # The circle is found exactly: AP 1. mAP = (1 + 0.4) / 2 = 0.7; at IoU 0.5 both hit: 1;
    # at 0.75 only the circle: 0.5. Both boxes are 400 px^2 < 32^2: "small", so
    # mAP_small = 0.7 and medium/large (no ground truth) report 0.
    shifted = [0.0, 0.04, 0.2, 0.24]
    stats = evaluate(RECORDS, LABELS, [_detection(CIRCLE, 0), _detection(shifted, 1)], class_mapping(LABELS, LABELS))
    metrics = stats["metrics"]
    assert metrics["mAP"] == pytest.approx(0.7)
    assert metrics["mAP@0.5"] == pytest.approx(1.0)
    assert metrics["mAP@0.75"] == pytest.approx(0.5)
    assert metrics["mAP_small"] == pytest.approx(0.7)
    assert metrics["mAP_medium"] == 0.0 and metrics["mAP_large"] == 0.0
    assert stats["per_class_AP"] == {"circle": pytest.approx(1.0), "square": pytest.approx(0.4)}


def test_classes_are_matched_by_name_not_position():
    # The model orders its labels differently and knows a class the dataset lacks:
    # its "dog" detection is not scored, and the result is the perfect one.
    model_labels = ("dog", "square", "circle")
    mapping = class_mapping(model_labels, LABELS)
    assert mapping.tolist() == [-1, 1, 0]
    predictions = [_detection(CIRCLE, 2), (np.array([SQUARE, CIRCLE], np.float32), np.array([1, 0]),
                                           np.array([0.9, 0.95], np.float32))]
    assert evaluate(RECORDS, LABELS, predictions, mapping)["metrics"]["mAP"] == pytest.approx(1.0)


def test_dataset_classes_the_model_lacks_score_zero_with_a_warning():
    with pytest.warns(UserWarning, match="no class for square"):
        mapping = class_mapping(("circle",), LABELS)
    stats = evaluate(RECORDS, LABELS, [_detection(CIRCLE, 0), NOTHING], mapping)
    assert stats["per_class_AP"] == {"circle": pytest.approx(1.0), "square": 0.0}
    assert stats["metrics"]["mAP"] == pytest.approx(0.5)


def test_no_label_in_common_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model's labels \(a, b\) and the dataset's \(circle, square\) have no name"):
        class_mapping(("a", "b"), LABELS)


def test_no_detections_at_all_score_zero_per_class_too():
    stats = evaluate(RECORDS, LABELS, [NOTHING, NOTHING], class_mapping(LABELS, LABELS))
    assert stats["metrics"]["mAP"] == 0.0 and stats["per_class_AP"] == {"circle": 0.0, "square": 0.0}


def test_default_data_is_the_synthetic_validation_split():
    dataset = load_dataset()
    assert dataset.source.parent.name.startswith("val-seed1")
    assert dataset.labels == ("circle", "square", "triangle", "cross")
