"""COCO mAP on tiny datasets with known answers."""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from ssdkit.datasets.records import Record  # noqa: E402
from ssdkit.evaluation.metrics import coco_map  # noqa: E402


def _record(boxes, classes):
    boxes = np.array(boxes, np.float32)
    return Record(Path("x.jpg"), 100, 100, boxes, np.array(classes), np.zeros(len(boxes), bool))


def test_perfect_detections_score_one():
    records = [_record([[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.8]], [0, 1]), _record([[0.2, 0.3, 0.7, 0.9]], [1])]
    detections = [(r.boxes, r.classes, np.ones(len(r.boxes))) for r in records]
    stats = coco_map(records, ("a", "b"), detections)
    assert stats["mAP"] == pytest.approx(1.0) and stats["mAP@0.5"] == pytest.approx(1.0)
    assert stats["AP/a"] == pytest.approx(1.0) and stats["AP/b"] == pytest.approx(1.0)


def test_shifted_detection_scores_the_thresholds_it_passes():
    # A 40x40 box shifted by 12 px: IoU = 28*40 / (2*1600 - 1120) = 0.538, a hit at
    # threshold 0.50 only, so mAP@[.5:.95] = 1/10 and mAP@0.5 = 1.
    records = [_record([[0.1, 0.1, 0.5, 0.5]], [0])]
    stats = coco_map(records, ("a",), [(np.array([[0.22, 0.1, 0.62, 0.5]]), np.array([0]), np.array([0.9]))])
    assert stats["mAP@0.5"] == pytest.approx(1.0)
    assert stats["mAP@0.75"] == pytest.approx(0.0)
    assert stats["mAP"] == pytest.approx(0.1)


def test_no_detections_score_zero():
    stats = coco_map([_record([[0.1, 0.1, 0.5, 0.5]], [0])], ("a",), [(np.zeros((0, 4)), np.zeros(0), np.zeros(0))])
    assert stats["mAP"] == 0.0
