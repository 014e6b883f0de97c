"""Image files: which file names count as images wherever a command takes a
folder of them (``ssdkit detect``, calibration data), and listing them.

Video files are another set with another meaning (``calibration``'s
``VIDEO_SUFFIXES``: sources to sample frames from; the camera's ``FOURCC``:
containers it can write), so they live with their users.
"""
from __future__ import annotations

from pathlib import Path

# What both decoders the commands use (OpenCV, else Pillow) read.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (and its subfolders with ``recursive``), sorted by path."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
