"""Boxes and labels drawn on a BGR frame, for the video, the stream and the window."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..detector import Detection

BOX_COLOUR = (40, 40, 255)  # BGR red
TEXT_COLOUR = (255, 255, 255)


def annotate(image: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """A copy of ``image`` with each detection's box and "label score" (the
    captured frame is left as it was)."""
    canvas = image.copy()
    scale = max(0.35, min(image.shape[:2]) / 960)  # legible on 48 px test clips and on 1080p cameras
    thickness = max(1, round(scale * 2))
    for d in detections:
        ymin, xmin, ymax, xmax = (int(round(v)) for v in d.box)
        cv2.rectangle(canvas, (xmin, ymin), (xmax, ymax), BOX_COLOUR, thickness)
        cv2.putText(canvas, f"{d.label} {d.score:.2f}", (xmin + 2, max(ymin + int(30 * scale), 12)),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOUR, 1, cv2.LINE_AA)
    return canvas
