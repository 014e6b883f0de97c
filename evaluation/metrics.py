"""COCO-style mAP with pycocotools, from records and per-image detections."""
from __future__ import annotations

import contextlib
import io
from typing import Sequence

import numpy as np

from ssdkit.datasets.records import Record

STAT_NAMES = ("mAP", "mAP@0.5", "mAP@0.75", "mAP_small", "mAP_medium", "mAP_large")


def coco_map(records: Sequence[Record], labels: Sequence[str],
             detections: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, float]:
    """``detections[i]`` = (boxes [N, 4] normalized yxyx, class ids [N], scores [N]) for ``records[i]``.

    Returns mAP@[.5:.95], @.5, @.75 and by object size, plus per-class AP@[.5:.95].
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for image_id, (record, (boxes, classes, scores)) in enumerate(zip(records, detections), start=1):
        scale = np.array([record.height, record.width, record.height, record.width], np.float32)
        images.append({"id": image_id, "height": record.height, "width": record.width})
        for box, cls, crowd in zip(record.boxes * scale, record.classes, record.crowd):
            y0, x0, y1, x1 = (float(v) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls) + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                "iscrowd": int(crowd)})
        for box, cls, score in zip(np.asarray(boxes) * scale, classes, scores):
            y0, x0, y1, x1 = (float(v) for v in box)
            results.append({"image_id": image_id, "category_id": int(cls) + 1,
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": i + 1, "name": n} for i, n in enumerate(labels)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not results:
            return {**{name: 0.0 for name in STAT_NAMES}, **{f"AP/{label}": 0.0 for label in labels}}
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = {name: float(max(v, 0.0)) for name, v in zip(STAT_NAMES, evaluation.stats)}
    precision = evaluation.eval["precision"]  # [iou, recall, class, area, max_dets]
    for k, label in enumerate(labels):
        p = precision[:, :, k, 0, -1]
        stats[f"AP/{label}"] = float(p[p > -1].mean()) if (p > -1).any() else 0.0
    return stats
