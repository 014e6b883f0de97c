"""SSD data augmentation in numpy: horizontal flip, SSD random crop, colour jitter.

Boxes are normalized (ymin, xmin, ymax, xmax). The crop follows the OD API's
``ssd_random_crop``: pick a minimum object coverage from (none, 0.1, 0.3, 0.5,
0.7, 0.9), sample a patch of 10-100% area and aspect 0.5-2 that covers some
box at least that much, keep the boxes whose centres fall inside, clip them.
"""
from __future__ import annotations

import numpy as np

_MIN_COVERAGE = (None, 0.1, 0.3, 0.5, 0.7, 0.9)


def flip(image, boxes):
    return image[:, ::-1], np.stack([boxes[:, 0], 1 - boxes[:, 3], boxes[:, 2], 1 - boxes[:, 1]], axis=1)


def random_crop(rng: np.random.Generator, image, boxes, classes, tries: int = 30):
    coverage = _MIN_COVERAGE[rng.integers(len(_MIN_COVERAGE))]
    if coverage is None or len(boxes) == 0:
        return image, boxes, classes
    h, w = image.shape[:2]
    for _ in range(tries):
        area = rng.uniform(0.1, 1.0)
        aspect = rng.uniform(0.5, 2.0)
        ch, cw = np.sqrt(area / aspect), np.sqrt(area * aspect)
        if ch > 1 or cw > 1:
            continue
        y0, x0 = rng.uniform(0, 1 - ch), rng.uniform(0, 1 - cw)
        patch = np.array([[y0, x0, y0 + ch, x0 + cw]])
        if _coverage(patch[0], boxes).max() < coverage:
            continue
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = np.all((centers >= patch[0, :2]) & (centers <= patch[0, 2:]), axis=1)
        if not inside.any():
            continue
        top, left = int(y0 * h), int(x0 * w)
        bottom, right = max(top + 1, int((y0 + ch) * h)), max(left + 1, int((x0 + cw) * w))
        new = (boxes[inside] - [y0, x0, y0, x0]) / [ch, cw, ch, cw]
        return image[top:bottom, left:right], np.clip(new, 0, 1).astype(np.float32), classes[inside]
    return image, boxes, classes


def _coverage(patch, boxes):
    """Fraction of each box inside the patch."""
    ih = np.clip(np.minimum(patch[2], boxes[:, 2]) - np.maximum(patch[0], boxes[:, 0]), 0, None)
    iw = np.clip(np.minimum(patch[3], boxes[:, 3]) - np.maximum(patch[1], boxes[:, 1]), 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return ih * iw / np.maximum(area, 1e-12)


def color_jitter(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Brightness, contrast and saturation jitter on float RGB in [0, 255]."""
    img = image.astype(np.float32)
    img = img + rng.uniform(-32, 32)
    mean = img.mean()
    img = (img - mean) * rng.uniform(0.5, 1.5) + mean
    gray = img.mean(axis=2, keepdims=True)
    img = (img - gray) * rng.uniform(0.5, 1.5) + gray
    return np.clip(img, 0, 255)


def augment(rng: np.random.Generator, image, boxes, classes):
    image, boxes, classes = random_crop(rng, image, boxes, classes)
    if rng.random() < 0.5:
        image, boxes = flip(image, boxes)
    return color_jitter(rng, image), boxes, classes
