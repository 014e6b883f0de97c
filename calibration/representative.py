"""Representative images for int8 calibration, from wherever the user has them.

A source yields RGB uint8 HxWx3 arrays; sizing and normalization happen in
``ssdkit.runtime.preprocess``, the code the device runs. Sources: an image
folder, a video file (every Nth frame), a COCO JSON or Pascal VOC dataset
(its images), or nothing: the built-in synthetic images. Unreadable files and
records with broken annotations are reported and skipped; fewer images than
asked is a warning, none is an error.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from ssdkit.datasets.reader import is_voc, read_dataset
from ssdkit.runtime.images import image_files

# Files to sample frames from (the camera's FOURCC table is another set: containers it writes).
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
SYNTH_CALIBRATION_SEED = 2  # not the train (0) or validation (1) split


def _read_image(path: Path) -> np.ndarray | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        warnings.warn(f"{path}: cannot read image, skipped ({exc})", stacklevel=3)
        return None


def _image_files(source: Path) -> list[Path]:
    if source.is_dir() and not is_voc(source):
        return image_files(source, recursive=True)
    # Calibration needs the images, not the boxes: a broken record is reported, not fatal.
    return [record.path for record in read_dataset(source, skip_broken=True).records]


def _video_frames(path: Path, every_nth: int) -> Iterator[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open this video")
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            if index % every_nth == 0:
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()


def _collect(source: str | Path | None, count: int, seed: int, shuffle: bool, every_nth: int,
             image_size: int) -> list[np.ndarray]:
    if count < 1:
        raise ValueError(f"calibration sample count {count} must be at least 1")
    if source is None:
        from ssdkit.datasets.synth import iter_images

        return list(iter_images(SYNTH_CALIBRATION_SEED + seed, count, image_size))
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: calibration data not found")
    images = []
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        for frame in _video_frames(path, every_nth):
            images.append(frame)
            if len(images) == count:
                break
    else:
        files = _image_files(path)
        if shuffle:
            np.random.default_rng(seed).shuffle(files)
        for file in files:
            image = _read_image(file)
            if image is not None:
                images.append(image)
                if len(images) == count:
                    break
    if not images:
        raise ValueError(f"{path}: no usable calibration images")
    return images


def representative_images(
    source: str | Path | None = None, count: int = 100, seed: int = 0, shuffle: bool = True,
    every_nth: int = 10, image_size: int = 320,
) -> list[np.ndarray]:
    """Up to ``count`` RGB images from ``source`` (None: synthetic shapes)."""
    images = _collect(source, count, seed, shuffle, every_nth, image_size)
    if len(images) < count:
        warnings.warn(f"{source}: only {len(images)} calibration images, {count} asked for", stacklevel=2)
    return images


def representative_split(
    source: str | Path | None, count: int, held_out: int, seed: int = 0, shuffle: bool = True,
    every_nth: int = 10, image_size: int = 320,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``representative_images`` and up to ``held_out`` further images of the
    same source, read in one pass: the calibration images are the ones
    ``representative_images`` gives, the others were not calibrated on (the
    quantization report measures on them when it has no other data). With
    no image to spare the second list is empty."""
    images = _collect(source, count + held_out, seed, shuffle, every_nth, image_size)
    if len(images) < count:
        warnings.warn(f"{source}: only {len(images)} calibration images, {count} asked for", stacklevel=2)
    return images[:count], images[count:]
