"""COCO instances JSON -> annotated records, with errors that name the record.

Boxes become normalized (ymin, xmin, ymax, xmax); categories map to
contiguous 0-based class ids in category-id order (or as ``labels`` names them).
Crowd annotations are kept but flagged: training ignores anchors on them,
evaluation treats them as COCO does.

The file's structure is checked first, because a structural error would be
blamed on the wrong record later: image, category and annotation ids must be
unique (two images sharing an id would each get the other's boxes), category
names unique, and every annotation must point to an image and a category of
the file. Those raise whatever ``on_error`` says. A broken record (missing
image file, box outside the image, category not among ``labels``, malformed
bbox) raises, naming the file and the record; with ``on_error="skip"`` it is
skipped with a warning and counted instead: never silently lost.
"""
from __future__ import annotations

import json
import math
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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"{path}: cannot read COCO JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: not a COCO instances file (a JSON {type(data).__name__}, not an object)")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise AnnotationError(f"{path}: not a COCO instances file (no '{key}')")
        if not isinstance(data[key], list) or not all(isinstance(item, dict) for item in data[key]):
            raise AnnotationError(f"{path}: '{key}' must be a list of objects")
    images, categories = _unique(path, data["images"], "image"), _unique(path, data["categories"], "category")
    _unique(path, data["annotations"], "annotation")
    names: dict[int, str] = {}
    for cid, category in sorted(categories.items()):
        name = category.get("name")
        if not isinstance(name, str) or not name:
            raise AnnotationError(f"{path}: category {cid} has no name")
        if name in names.values():
            other = next(i for i, n in names.items() if n == name)
            raise AnnotationError(f"{path}: categories {other} and {cid} are both named {name!r}; names must be unique")
        names[cid] = name
    if labels is None:
        labels = tuple(names.values())
    class_of = {cid: labels.index(name) for cid, name in names.items() if name in labels}
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        where = f"{path}: annotation {ann['id']}"
        if ann.get("image_id") not in images:
            raise AnnotationError(f"{where} is for image id {ann.get('image_id')!r}, which is not in 'images'")
        if ann.get("category_id") not in names:
            raise AnnotationError(f"{where} has category id {ann.get('category_id')!r}, which is not in 'categories'")
        by_image.setdefault(ann["image_id"], []).append(ann)

    records, skipped = [], 0
    for image_id, image in images.items():
        try:
            records.append(_record(path, image, by_image.get(image_id, []), class_of, names))
        except AnnotationError as exc:
            if on_error == "raise":
                raise
            warnings.warn(f"{exc}; skipped", stacklevel=2)
            skipped += 1
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} of {len(images)} images with broken annotations", stacklevel=2)
    return Dataset(tuple(labels), tuple(records), path, skipped)


def _unique(path: Path, items: list[dict], kind: str) -> dict[int, dict]:
    """``items`` by their integer ``id``; a missing, non-integer or repeated id raises."""
    by_id: dict[int, dict] = {}
    for position, item in enumerate(items):
        item_id = item.get("id")
        if isinstance(item_id, bool) or not isinstance(item_id, int):
            raise AnnotationError(f"{path}: {kind} {position + 1} has id {item_id!r}, expected an integer")
        if item_id in by_id:
            raise AnnotationError(f"{path}: {kind} id {item_id} is used twice (entries "
                                  f"{list(by_id).index(item_id) + 1} and {position + 1}); ids must be unique")
        by_id[item_id] = item
    return by_id


def _record(path: Path, image: dict, annotations: list[dict], class_of: dict[int, int],
            names: dict[int, str]) -> Record:
    where = f"{path}: image id {image['id']} ({image.get('file_name')})"
    file = path.parent / str(image.get("file_name", ""))
    if not isinstance(image.get("file_name"), str) or not file.is_file():
        raise AnnotationError(f"{where}: image file {file} is missing")
    height, width = image.get("height"), image.get("width")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (height, width)):
        raise AnnotationError(f"{where}: height {height!r} and width {width!r} must be positive integers")
    boxes, classes, crowd = [], [], []
    for ann in annotations:
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
            raise AnnotationError(f"{where}: annotation {ann.get('id')} has a malformed bbox {bbox!r}")
        x, y, w, h = bbox
        if w <= 0 or h <= 0 or x < -0.5 or y < -0.5 or x + w > width + 0.5 or y + h > height + 0.5:
            raise AnnotationError(f"{where}: annotation {ann.get('id')} box {bbox} is outside the {width}x{height} image")
        if ann["category_id"] not in class_of:
            raise AnnotationError(f"{where}: annotation {ann['id']} has category {names[ann['category_id']]!r}, "
                                  "which is not among the classes asked for")
        boxes.append((max(y, 0) / height, max(x, 0) / width, min(y + h, height) / height, min(x + w, width) / width))
        classes.append(class_of[ann["category_id"]])
        crowd.append(bool(ann.get("iscrowd", 0)))
    return Record(file, height, width, np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64),
                  np.array(crowd, bool), image["id"])
