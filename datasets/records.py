"""The annotated-dataset types every reader returns: ``Dataset`` of ``Record``s,
and ``AnnotationError`` for a broken annotation (its message names the file
and the record)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Record:
    """One image and its boxes (normalized ymin, xmin, ymax, xmax; 0-based classes)."""

    path: Path
    height: int
    width: int
    boxes: np.ndarray
    classes: np.ndarray
    crowd: np.ndarray
    image_id: int = 0


@dataclass(frozen=True)
class Dataset:
    labels: tuple[str, ...]
    records: tuple[Record, ...]
    source: Path
    skipped: int = 0

    def load_image(self, record: Record) -> np.ndarray:
        from PIL import Image

        with Image.open(record.path) as img:
            return np.asarray(img.convert("RGB"))


class AnnotationError(ValueError):
    """A broken annotation; the message names the file and the record."""
