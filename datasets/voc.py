"""Pascal VOC folder -> the same annotated records as COCO, so training,
calibration and evaluation share one code path.

Layout: ``root/Annotations/*.xml``, ``root/JPEGImages/``, and optionally
``root/ImageSets/Main/<split>.txt`` (one image id per line). VOC boxes are
1-based inclusive pixel indices: pixel ``xmin`` starts at ``xmin - 1`` and
pixel ``xmax`` ends at ``xmax`` in the continuous coordinates COCO uses, so
both readers produce the same normalized (ymin, xmin, ymax, xmax) box for the
same pixels. ``xmin = 0`` (written by 0-based tools) is accepted and clamped.
``difficult`` objects are flagged as crowd, so training ignores anchors on
them and evaluation does not count them, as VOC's own evaluation does.
A broken record raises ``AnnotationError`` naming the XML file and the
object; with ``skip_broken`` it is skipped with a warning instead.
"""
from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from .records import AnnotationError, Dataset, Record

BOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


def read_voc(root: str | Path, labels: tuple[str, ...] | None = None, split: str | None = "trainval",
             skip_broken: bool = False, include_difficult: bool = False) -> Dataset:
    """Records of ``split`` (None, or a dataset without ImageSets/Main: every XML file).

    Without ``labels`` the classes are the sorted names found in the split.
    """
    root = Path(root)
    files = _annotation_files(root, split)
    skipped = 0

    def broken(exc: AnnotationError) -> None:
        nonlocal skipped
        if not skip_broken:
            raise exc
        warnings.warn(f"{exc}; skipped", stacklevel=3)
        skipped += 1

    parsed: list[tuple[int, Path, ET.Element]] = []
    for image_id, xml in enumerate(files, start=1):
        try:
            parsed.append((image_id, xml, _parse(xml)))
        except AnnotationError as exc:
            broken(exc)
    if labels is None:
        labels = tuple(sorted({(obj.findtext("name") or "").strip() for _, _, annotation in parsed
                               for obj in annotation.findall("object")} - {""}))
    class_of = {name: i for i, name in enumerate(labels)}
    records = []
    for image_id, xml, annotation in parsed:
        try:
            records.append(_record(root, xml, annotation, class_of, include_difficult, image_id))
        except AnnotationError as exc:
            broken(exc)
    if skipped:
        warnings.warn(f"{root}: skipped {skipped} of {len(files)} images with broken annotations", stacklevel=2)
    return Dataset(tuple(labels), tuple(records), root, skipped)


def _annotation_files(root: Path, split: str | None) -> list[Path]:
    annotations = root / "Annotations"
    if not annotations.is_dir():
        raise AnnotationError(f"{root}: not a Pascal VOC dataset (no Annotations/ folder)")
    sets = root / "ImageSets" / "Main"
    if split is None or not sets.is_dir():
        return sorted(annotations.glob("*.xml"))
    split_file = sets / f"{split}.txt"
    if not split_file.is_file():
        found = ", ".join(sorted(p.stem for p in sets.glob("*.txt"))) or "none"
        raise AnnotationError(f"{split_file}: no split '{split}' in this VOC dataset (splits found: {found})")
    ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    return [annotations / f"{image_id}.xml" for image_id in ids]


def _parse(xml: Path) -> ET.Element:
    try:
        return ET.parse(xml).getroot()
    except ET.ParseError as exc:
        raise AnnotationError(f"{xml}: malformed XML ({exc})") from exc
    except OSError as exc:
        raise AnnotationError(f"{xml}: cannot read annotation file ({exc.strerror})") from exc


def _image_size(xml: Path, file: Path, annotation: ET.Element) -> tuple[int, int]:
    """(width, height) of the image file, checked against the XML's <size>:
    boxes normalized by a wrong size would train on wrong targets."""
    from PIL import Image, UnidentifiedImageError

    if not file.is_file():
        raise AnnotationError(f"{xml}: image file {file} is missing")
    try:
        with Image.open(file) as img:
            width, height = img.size
    except (OSError, UnidentifiedImageError) as exc:
        raise AnnotationError(f"{xml}: cannot read image file {file} ({exc})") from exc
    size = annotation.find("size")
    if size is not None:
        try:
            stated = int(float(size.findtext("width", ""))), int(float(size.findtext("height", "")))
        except ValueError as exc:
            raise AnnotationError(f"{xml}: malformed <size> (width and height must be numbers)") from exc
        if stated != (0, 0) and stated != (width, height):  # 0x0: some tools leave <size> unset
            raise AnnotationError(f"{xml}: <size> says {stated[0]}x{stated[1]} but {file.name} is {width}x{height}")
    return width, height


def _record(root: Path, xml: Path, annotation: ET.Element, class_of: dict[str, int],
            include_difficult: bool, image_id: int) -> Record:
    file = root / "JPEGImages" / (annotation.findtext("filename") or f"{xml.stem}.jpg").strip()
    width, height = _image_size(xml, file, annotation)
    boxes, classes, crowd = [], [], []
    for index, obj in enumerate(annotation.findall("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise AnnotationError(f"{xml}: object {index}: no <name>")
        where = f"{xml}: object {index} ({name})"
        if name not in class_of:
            raise AnnotationError(f"{where}: unknown class (labels: {', '.join(class_of)})")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise AnnotationError(f"{where}: no <bndbox>")
        values = []
        for field in BOX_FIELDS:
            text = bndbox.findtext(field)
            try:
                values.append(float(text))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise AnnotationError(f"{where}: bndbox {field} is missing or not a number ({text!r})") from None
        xmin, ymin, xmax, ymax = values
        shown = f"xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g}"
        if xmin < 0 or ymin < 0 or xmax > width + 0.5 or ymax > height + 0.5:
            raise AnnotationError(f"{where}: box {shown} is outside the {width}x{height} image")
        x0, y0, x1, y1 = max(xmin - 1, 0), max(ymin - 1, 0), min(xmax, width), min(ymax, height)
        if x1 <= x0 or y1 <= y0:
            raise AnnotationError(f"{where}: box {shown} is empty")
        boxes.append((y0 / height, x0 / width, y1 / height, x1 / width))
        classes.append(class_of[name])
        difficult = (obj.findtext("difficult") or "0").strip().lower() in ("1", "true")
        crowd.append(difficult and not include_difficult)
    return Record(file, height, width, np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64),
                  np.array(crowd, bool), image_id)
