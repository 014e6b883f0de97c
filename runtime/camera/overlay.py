"""Track ids, zones and lines drawn over an annotated frame.

Kept to one function so it can move into the shared drawing module as it is.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

ZONE_COLOUR, ZONE_OCCUPIED, LINE_COLOUR = (255, 200, 0), (0, 200, 255), (255, 0, 255)  # BGR


def draw_scene(image: np.ndarray, boxes: Sequence[tuple[float, float, float, float]],
               track_ids: Sequence[int | None], states: dict, zones: Sequence, lines: Sequence) -> np.ndarray:
    """Draws on ``image`` in place and returns it: each zone's polygon and count
    (another colour while occupied), each line and its in/out counts, and
    ``#id`` above each tracked box (ymin, xmin, ymax, xmax pixels)."""
    scale = max(0.35, min(image.shape[:2]) / 960)
    thickness = max(1, round(scale * 2))
    font = cv2.FONT_HERSHEY_SIMPLEX
    for zone in zones:
        count = states["zones"].get(zone.name, 0)
        points = np.round(zone.polygon).astype(np.int32)
        cv2.polylines(image, [points], True, ZONE_OCCUPIED if count else ZONE_COLOUR, thickness, cv2.LINE_AA)
        x, y = points.min(axis=0)
        cv2.putText(image, f"{zone.name}: {count}", (int(x) + 3, int(y) + int(22 * scale) + 3), font, scale,
                    ZONE_OCCUPIED if count else ZONE_COLOUR, 1, cv2.LINE_AA)
    for line in lines:
        (x0, y0), (x1, y1) = np.round(line.points).astype(int)
        counts = states["lines"].get(line.name, {"in": 0, "out": 0})
        cv2.line(image, (x0, y0), (x1, y1), LINE_COLOUR, thickness, cv2.LINE_AA)
        cv2.putText(image, f"{line.name} in {counts['in']} out {counts['out']}",
                    (min(x0, x1) + 3, max(min(y0, y1) - 4, int(16 * scale) + 2)),
                    font, scale, LINE_COLOUR, 1, cv2.LINE_AA)
    for box, track_id in zip(boxes, track_ids):
        if track_id is not None:
            ymin, xmin = int(round(box[0])), int(round(box[1]))
            cv2.putText(image, f"#{track_id}", (xmin + 2, max(ymin - 4, 10)), font, scale, (255, 255, 255), 1,
                        cv2.LINE_AA)
    return image
