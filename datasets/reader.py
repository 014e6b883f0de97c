"""One entry point for annotated datasets, so every command that takes data
accepts the same formats: a COCO instances JSON or a Pascal VOC folder."""
from __future__ import annotations

from pathlib import Path

from .records import AnnotationError, Dataset
from .coco import read_coco
from .voc import read_voc


def is_voc(path: Path) -> bool:
    """A folder with Annotations/ is a VOC dataset; without, it is just images."""
    return path.is_dir() and (path / "Annotations").is_dir()


def read_dataset(path: str | Path, labels: tuple[str, ...] | None = None, skip_broken: bool = False) -> Dataset:
    """COCO JSON file, VOC folder (its trainval split if it has ImageSets/Main),
    or a VOC split file ``ROOT/ImageSets/Main/NAME.txt`` (that split)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: dataset not found")
    if path.is_file() and path.suffix.lower() == ".json":
        return read_coco(path, labels, "skip" if skip_broken else "raise")
    if is_voc(path):
        return read_voc(path, labels, skip_broken=skip_broken)
    if path.suffix == ".txt" and path.parent.name == "Main" and path.parent.parent.name == "ImageSets":
        return read_voc(path.parents[2], labels, split=path.stem, skip_broken=skip_broken)
    raise AnnotationError(f"{path}: not a dataset; expected a COCO JSON file, a Pascal VOC folder "
                          "(with Annotations/ and JPEGImages/) or a VOC split file (ImageSets/Main/NAME.txt)")
