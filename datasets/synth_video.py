"""A video of the synthetic shapes moving along known paths, with the truth
for every frame: for tracking, zone and line-counting tests and benchmarks.

The script (320x320, 20 FPS, a 120-frame cycle that repeats):

- a circle (56 px) goes right along y=70 from x=50 to x=270 in 60 frames and back;
- a square (56 px) goes down along x=60 from y=150 to y=270 and back up;
- a triangle (56 px) stands at (240, 250).

``SCRIPT_ZONES`` puts a counting line across the circle's path, a zone on
the square's lower turn and one around the triangle, so a cycle has two
crossings and one visit to each zone, and ``expected_crossings`` computes
the crossings of any line from the paths alone. Shapes never overlap, so a
tracker has no excuse to switch ids.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .synth import _BASE_COLORS, LABELS, _draw

SIZE = 320
FPS = 20.0
CYCLE = 120
SIDE = 56

# Line "gate": circle crosses it going right (in) and coming back (out). Zone "pad": the square's lower
# turn. Zone "bay": around the standing triangle (in it from the first frame).
SCRIPT_ZONES = {
    "lines": [{"name": "gate", "points": [[160, 0], [160, 120]]}],
    "zones": [{"name": "pad", "polygon": [[0, 230], [130, 230], [130, 320], [0, 320]], "dwell": 1.0},
              {"name": "bay", "polygon": [[180, 180], [320, 180], [320, 320], [180, 320]], "dwell": 2.0}],
}


@dataclass(frozen=True)
class ScriptObject:
    name: str
    class_id: int

    @property
    def label(self) -> str:
        return LABELS[self.class_id]


OBJECTS = (ScriptObject("circle", 0), ScriptObject("square", 1), ScriptObject("triangle", 2))


def _triangle_wave(frame: int) -> float:
    """0 -> 1 over the first half of a cycle, 1 -> 0 over the second."""
    phase = (frame % CYCLE) / (CYCLE / 2)
    return phase if phase <= 1 else 2 - phase


def centres(frame: int) -> np.ndarray:
    """[3, 2] x, y centre of each object of ``OBJECTS`` in ``frame``."""
    t = _triangle_wave(frame)
    return np.array([[50 + 220 * t, 70.0], [60.0, 150 + 120 * t], [240.0, 250.0]])


def boxes(frame: int) -> np.ndarray:
    """[3, 4] ymin, xmin, ymax, xmax pixels of each object in ``frame``."""
    c = centres(frame)
    half = SIDE / 2
    return np.stack([c[:, 1] - half, c[:, 0] - half, c[:, 1] + half, c[:, 0] + half], axis=1)


@functools.lru_cache(maxsize=4)
def _background(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(70, 180, 3) + rng.normal(0, 18, (SIZE, SIZE, 3))


def render_frame(frame: int, seed: int = 0) -> np.ndarray:
    """RGB uint8 [320, 320, 3]: a fixed noisy background, the shapes at their places."""
    image = _background(seed).copy()
    window = SIDE + 4
    for obj, (ymin, xmin, ymax, xmax) in zip(OBJECTS, boxes(frame)):
        # synth's painter works on a square image: give it a square window around the box.
        top = int(np.clip(np.floor(ymin) - 2, 0, SIZE - window))
        left = int(np.clip(np.floor(xmin) - 2, 0, SIZE - window))
        _draw(image[top:top + window, left:left + window], obj.class_id,
              (ymin - top, xmin - left, ymax - top, xmax - left), _BASE_COLORS[obj.class_id])
    return np.clip(image, 0, 255).astype(np.uint8)


def write_video(path: str | os.PathLike, frames: int, seed: int = 0) -> Path:
    """The script as an MJPG AVI (every OpenCV with FFmpeg reads it back)."""
    import cv2

    path = Path(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (SIZE, SIZE))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write MJPG video")
    try:
        for i in range(frames):
            writer.write(cv2.cvtColor(render_frame(i, seed), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def expected_crossings(line: tuple[tuple[float, float], tuple[float, float]], frames: int) -> dict[str, int]:
    """Crossings of ``line`` ((x, y), (x, y)) by the script's boxes over ``frames``, counted as
    supervision's ``LineZone`` counts them: a box crosses when all four corners have changed
    side and its path is within the segment; "in" is towards the left of the line seen from its
    first point to its second (negative cross product, image y pointing down)."""
    (x0, y0), (x1, y1) = line
    direction = np.array([x1 - x0, y1 - y0], float)
    counts = {"in": 0, "out": 0}
    previous = [None] * len(OBJECTS)
    for frame in range(frames):
        for i, (ymin, xmin, ymax, xmax) in enumerate(boxes(frame)):
            corners = np.array([[xmin, ymin], [xmax, ymin], [xmin, ymax], [xmax, ymax]]) - (x0, y0)
            along = corners @ direction / (direction @ direction)
            if along.max() < 0 or along.min() > 1:
                continue  # beside the segment, not across it
            cross = direction[0] * corners[:, 1] - direction[1] * corners[:, 0]
            side = -1 if (cross < 0).all() else 1 if (cross > 0).all() else 0
            if side == 0:
                continue
            if previous[i] is not None and side != previous[i]:
                counts["in" if side < 0 else "out"] += 1
            previous[i] = side
    return counts
