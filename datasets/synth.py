"""The built-in synthetic detection dataset: the embedded default for training,
calibration and evaluation, so nothing needs the user's data to show it works.

Four classes that stay distinct when small (a red circle, a blue square, a
green triangle, a yellow cross) on textured backgrounds (noise, gradients,
stripes, checkers), 5%-60% of the image side, overlapping (later shapes
occlude earlier ones; a box is the shape's full extent), with lighting and
colour jitter. Everything derives from one ``numpy`` generator seeded per
image, so a seed gives byte-identical files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from ssdkit.fileio import atomic_path
from ssdkit.log import progress
from ssdkit.runtime import limits

LABELS = ("circle", "square", "triangle", "cross")
_BASE_COLORS = np.array([[220, 40, 40], [40, 80, 220], [40, 180, 60], [235, 200, 30]], np.float32)

# The embedded default splits: different seeds, so validation images are unseen.
DEFAULT_SPLITS = {"train": (0, 2000), "val": (1, 200)}
DEFAULT_SIZE = 320


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    kind = rng.integers(4)
    base = rng.uniform(40, 215, 3).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == 0:  # noise
        img = base + rng.normal(0, 25, (size, size, 3))
    elif kind == 1:  # gradient
        other = rng.uniform(40, 215, 3)
        t = (yy * rng.uniform(-1, 1) + xx * rng.uniform(-1, 1))[..., None]
        t = (t - t.min()) / (np.ptp(t) + 1e-6)
        img = base * (1 - t) + other * t
    elif kind == 2:  # stripes
        period = rng.uniform(0.03, 0.15)
        angle = rng.uniform(0, np.pi)
        wave = np.sin((yy * np.cos(angle) + xx * np.sin(angle)) / period * 2 * np.pi)[..., None]
        img = base + 35 * wave
    else:  # checkers
        cells = rng.integers(4, 16)
        board = ((np.floor(yy * cells) + np.floor(xx * cells)) % 2)[..., None]
        img = base + (board - 0.5) * 60
    return img + rng.normal(0, 6, (size, size, 3))


def _draw(img: np.ndarray, cls: int, box: tuple[float, float, float, float], color: np.ndarray) -> None:
    """Paints shape ``cls`` filling ``box`` (pixel corners) into ``img`` in place."""
    size = img.shape[0]
    y0, x0, y1, x1 = box
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    v = (ys - y0) / (y1 - y0)  # 0..1 inside the box
    u = (xs - x0) / (x1 - x0)
    inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    if cls == 0:
        mask = (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    elif cls == 1:
        mask = inside
    elif cls == 2:
        mask = inside & (np.abs(u - 0.5) <= 0.5 * v)
    else:
        mask = inside & ((np.abs(u - 0.5) <= 0.17) | (np.abs(v - 0.5) <= 0.17))
    img[mask] = color


def render(seed: int, index: int, size: int = DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image: (RGB uint8 [size, size, 3], boxes [N, 4] normalized, class ids [N])."""
    rng = np.random.default_rng([seed, index])
    img = _background(rng, size)
    boxes, classes = [], []
    for _ in range(rng.integers(1, 7)):
        cls = int(rng.integers(len(LABELS)))
        side = rng.uniform(0.05, 0.6) * size
        aspect = rng.uniform(0.75, 1.33)
        h, w = side * np.sqrt(aspect), side / np.sqrt(aspect)
        h, w = min(h, size), min(w, size)
        y0, x0 = rng.uniform(0, size - h), rng.uniform(0, size - w)
        color = np.clip(_BASE_COLORS[cls] * rng.uniform(0.75, 1.2) + rng.normal(0, 12, 3), 0, 255)
        _draw(img, cls, (y0, x0, y0 + h, x0 + w), color)
        boxes.append((y0 / size, x0 / size, (y0 + h) / size, (x0 + w) / size))
        classes.append(cls)
    # Lighting: a global gain and a colour cast over everything.
    img = img * rng.uniform(0.7, 1.25) + rng.normal(0, 10, 3)
    return (np.clip(img, 0, 255).astype(np.uint8), np.array(boxes, np.float32).reshape(-1, 4),
            np.array(classes, np.int64))


def iter_images(seed: int, count: int, size: int = DEFAULT_SIZE) -> Iterator[np.ndarray]:
    """Rendered images without writing files (for calibration)."""
    for i in range(count):
        yield render(seed, i, size)[0]


def generate(out_dir: str | Path, n: int, seed: int, size: int = DEFAULT_SIZE) -> Path:
    """Writes ``images/*.jpg`` and a COCO ``annotations.json`` to ``out_dir`` atomically."""
    from PIL import Image

    limits.check(dataset_size=n, seed=seed, image_side=size)
    out_dir = Path(out_dir)
    images, annotations = [], []
    with atomic_path(out_dir, directory=True) as tmp:
        (tmp / "images").mkdir()
        for i in progress(range(n), f"synthetic images (seed {seed})"):
            img, boxes, classes = render(seed, i, size)
            name = f"{i:06d}.jpg"
            Image.fromarray(img).save(tmp / "images" / name, quality=90)
            images.append({"id": i + 1, "file_name": f"images/{name}", "height": size, "width": size})
            for box, cls in zip(boxes * size, classes):
                y0, x0, y1, x1 = (float(v) for v in box)
                annotations.append({
                    "id": len(annotations) + 1, "image_id": i + 1, "category_id": int(cls) + 1,
                    "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                    "area": round((x1 - x0) * (y1 - y0), 2), "iscrowd": 0,
                })
        categories = [{"id": i + 1, "name": name} for i, name in enumerate(LABELS)]
        info = {"description": f"ssdkit synthetic shapes, seed {seed}", "seed": seed}
        (tmp / "annotations.json").write_text(json.dumps(
            {"info": info, "images": images, "annotations": annotations, "categories": categories}))
    return out_dir


def cache_dir() -> Path:
    return Path(os.environ.get("SSDKIT_CACHE", Path.home() / ".cache" / "ssdkit"))


def default_split(name: str, root: str | Path | None = None) -> Path:
    """The embedded ``train`` or ``val`` split, generated once into the cache."""
    if name not in DEFAULT_SPLITS:
        raise ValueError(f"unknown synthetic split {name!r}, expected one of {sorted(DEFAULT_SPLITS)}")
    seed, n = DEFAULT_SPLITS[name]
    path = Path(root or cache_dir() / "synth") / f"{name}-seed{seed}-n{n}-{DEFAULT_SIZE}px"
    if not (path / "annotations.json").is_file():
        generate(path, n, seed)
    return path
