"""Stable track ids across frames: ByteTrack from Roboflow's ``trackers``
library (the ``track`` extra), behind the one method the loop needs.

``trackers`` is the maintained home of the ByteTrack that ``supervision``
shipped until 0.30 (deprecated there in 0.28, removed in 0.31). It is
imported only when a loop asks for tracking: it brings supervision, SciPy
and matplotlib, about 2.5 s and 75 MB on a desktop CPU at start-up.

ByteTrack is class-agnostic; a track's label is that of its latest
detection. The tracker runs on a clock (seconds) rather than frame counts,
so frames the capture thread dropped do not shorten the time a lost track
is kept.

ByteTrack associates in two stages: detections at or above the display
threshold first (they alone start tracks), then the low-score ones (from
``--track-low`` up to their class's threshold) with the tracks still
unmatched, so an object whose score dips (occlusion, motion blur) keeps its
id instead of disappearing and coming back as a new track. Which stage a
detection belongs to is the detector's decision (its per-class thresholds,
``Detector.reported``), passed here as two lists; the library's own single
confidence threshold only sees that split (1.0 and 0.0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..detector import Detection

FRAMES_PER_BUFFER_UNIT = 30.0
_STAGE_SPLIT = 0.5  # reported detections go in with confidence 1, low-score ones with 0  # trackers counts its lost-track buffer in frames of a 30 FPS video


@dataclass(frozen=True)
class TrackerOptions:
    """How tracks start and end.

    Attributes:
      lost_seconds: how long a track that is no longer detected is kept
        (and can take its id back) before it has disappeared.
      min_frames: consecutive detections before a track gets its id (1: at once).
      min_iou: lowest IoU between a track's predicted box and a detection to match them.
    """

    lost_seconds: float = 1.0
    min_frames: int = 2
    min_iou: float = 0.1

    def __post_init__(self):
        if self.lost_seconds < 0:
            raise ValueError(f"--track-lost: expected at least 0 seconds, got {self.lost_seconds}")
        if self.min_frames < 1:
            raise ValueError(f"tracker min_frames: expected at least 1, got {self.min_frames}")


@dataclass(frozen=True)
class TrackUpdate:
    """One frame through the tracker.

    Attributes:
      ids: the track id of each input detection, in input order (None while
        a new track is unconfirmed or for a detection the tracker left out).
      low_ids: the same for the low-score detections (an id: it kept that track going).
      appeared: ids confirmed in this frame.
      disappeared: ids the tracker gave up in this frame (lost for longer than
        ``lost_seconds``).
    """

    ids: tuple[int | None, ...]
    low_ids: tuple[int | None, ...]
    appeared: tuple[int, ...]
    disappeared: tuple[int, ...]


class Tracker:
    """``update(detections, clock)`` once per frame, in order.

    Raises:
      ModuleNotFoundError: ``trackers`` is not installed (the CLI names the extra).
    """

    def __init__(self, options: TrackerOptions = TrackerOptions(), frame_rate: float = 30.0):
        import supervision as sv
        from trackers import ByteTrackTracker

        self.sv = sv  # the library the tracker and the zones share
        self.options = options
        self._tracker = ByteTrackTracker(
            lost_track_buffer=int(round(options.lost_seconds * FRAMES_PER_BUFFER_UNIT)),
            frame_rate=float(frame_rate),
            track_activation_threshold=_STAGE_SPLIT,
            high_conf_det_threshold=_STAGE_SPLIT,
            minimum_consecutive_frames=options.min_frames,
            minimum_iou_threshold=options.min_iou)
        self._alive: set[int] = set()

    def update(self, detections: Sequence[Detection], clock: float, low: Sequence[Detection] = ()) -> TrackUpdate:
        """``detections`` of one frame (boxes ymin, xmin, ymax, xmax in pixels)
        at or above their display threshold, and the ``low``-score ones that
        can only continue a track; ``clock`` in seconds, increasing (a video's
        time, or UNIX time for a live source)."""
        both = [*detections, *low]
        n = len(both)
        boxes = np.array([(d.box[1], d.box[0], d.box[3], d.box[2]) for d in both], np.float32).reshape(n, 4)
        stage = np.r_[np.ones(len(detections), np.float32), np.zeros(len(low), np.float32)]
        tracked = self._tracker.update(self.sv.Detections(
            xyxy=boxes, confidence=stage, class_id=np.array([d.class_id for d in both], int),
            data={"index": np.arange(n)}), timestamp=float(clock))
        ids: list[int | None] = [None] * n
        for index, track_id in zip(tracked.data.get("index", ()), tracked.tracker_id):
            if track_id >= 0:
                ids[int(index)] = int(track_id)
        # The library keeps a lost track among its tracks until it gives it up.
        alive = {int(t.tracker_id) for t in self._tracker.tracks if t.tracker_id >= 0}
        seen = {i for i in ids if i is not None}
        appeared = tuple(sorted(seen - self._alive))
        disappeared = tuple(sorted(self._alive - alive - seen))
        self._alive = (self._alive | seen) - set(disappeared)
        return TrackUpdate(tuple(ids[:len(detections)]), tuple(ids[len(detections):]), appeared, disappeared)
