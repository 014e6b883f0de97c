"""COCO instances JSON -> annotated records, with errors that name the record.

Boxes become normalized (ymin, xmin, ymax, xmax); categories map to
contiguous 0-based class ids in sorted id order (or as ``labels`` names them).
Crowd annotations are kept but flagged: training ignores anchors on them,
evaluation treats them as COCO does. A broken record (missing image file, box
outside the image, unknown category, malformed bbox) raises, naming the file
and the record; with ``on_error="skip"`` it is skipped with a warning and
counted instead: never silently lost.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Literal

import numpy as np

from .records import AnnotationError, Dataset, Record


def read_coco(path: str | Path, labels: tuple[str, ...] | None = None,
              on_error: Literal["raise", "skip"] = "raise") -> Dataset:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"{path}: cannot read COCO JSON ({exc})") from exc
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise AnnotationError(f"{path}: not a COCO instances file (no '{key}')")
    categories = sorted(data["categories"], key=lambda c: c["id"])
    names = {c["id"]: c["name"] for c in categories}
    if labels is None:
        labels = tuple(names[i] for i in sorted(names))
    class_of = {cid: labels.index(name) for cid, name in names.items() if name in labels}
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann.get("image_id"), []).append(ann)

    records, skipped = [], 0
    for image in data["images"]:
        try:
            records.append(_record(path, image, by_image.get(image.get("id"), []), class_of))
        except AnnotationError as exc:
            if on_error == "raise":
                raise
            warnings.warn(f"{exc}; skipped", stacklevel=2)
            skipped += 1
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} of {len(data['images'])} images with broken annotations", stacklevel=2)
    return Dataset(tuple(labels), tuple(records), path, skipped)


def _record(path: Path, image: dict, annotations: list[dict], class_of: dict[int, int]) -> Record:
    where = f"{path}: image id {image.get('id')} ({image.get('file_name')})"
    file = path.parent / str(image.get("file_name", ""))
    if not file.is_file():
        raise AnnotationError(f"{where}: image file {file} is missing")
    height, width = int(image["height"]), int(image["width"])
    boxes, classes, crowd = [], [], []
    for ann in annotations:
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise AnnotationError(f"{where}: annotation {ann.get('id')} has a malformed bbox {bbox!r}")
        x, y, w, h = bbox
        if w <= 0 or h <= 0 or x < -0.5 or y < -0.5 or x + w > width + 0.5 or y + h > height + 0.5:
            raise AnnotationError(f"{where}: annotation {ann.get('id')} box {bbox} is outside the {width}x{height} image")
        if ann.get("category_id") not in class_of:
            raise AnnotationError(f"{where}: annotation {ann.get('id')} has unknown category {ann.get('category_id')!r}")
        boxes.append((max(y, 0) / height, max(x, 0) / width, min(y + h, height) / height, min(x + w, width) / width))
        classes.append(class_of[ann["category_id"]])
        crowd.append(bool(ann.get("iscrowd", 0)))
    return Record(file, height, width, np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64),
                  np.array(crowd, bool), int(image.get("id", 0)))
