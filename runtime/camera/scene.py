"""What happens in the picture: tracks, zones and lines turned into events.

``Scene.update`` takes one frame's detections and returns each detection's
track id and the frame's events, plain dicts ready for JSON:

    appeared      a track got its id                   disappeared  the tracker gave a track up
    zone_enter    a track's anchor entered a zone      zone_leave   ... left it (or the track disappeared in it)
    zone_dwell    a track has been in a zone for the zone's ``dwell`` seconds (once per visit)
    line_cross    a track crossed a counting line, ``direction`` "in" or "out"

Zone membership and line crossing are supervision's ``PolygonZone`` and
``LineZone`` (installed with the tracker); this module keeps the per-track
state that turns them into events and counts.

Times (``dwell``, ``seconds``) run on the scene's clock: the video's time for
a file (frame index / frame rate, so a file processed faster than real time
still measures real durations), UNIX time for a live source.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..detector import Detection
from ..draw import Polyline, Shape
from .tracking import Tracker
from .zones import ZonesConfig


ZONE_COLOUR, ZONE_OCCUPIED, LINE_COLOUR = (0, 200, 255), (255, 140, 0), (255, 0, 255)  # RGB


@dataclass
class _Visit:
    entered: float
    dwelt: bool = False


@dataclass
class ZoneState:
    """A zone in pixels with the tracks inside it now."""

    name: str
    polygon: np.ndarray  # [N, 2] x, y pixels
    inside: dict[int, _Visit] = field(default_factory=dict)
    entries: int = 0

    @property
    def count(self) -> int:
        return len(self.inside)


@dataclass
class LineState:
    name: str
    points: np.ndarray  # [2, 2] x, y pixels
    crossed_in: int = 0
    crossed_out: int = 0


class Scene:
    """Tracks plus zone and line bookkeeping for one video stream.

    Args:
      tracker: a ``Tracker``.
      zones: the zones and lines (None: tracking and appeared/disappeared only).
      video_clock: True for a video file: the clock is frame index / frame rate.
      floor: the lowest score of the low-score detections the loop feeds the
        tracker (``--track-low``); None: reported detections only.
    """

    def __init__(self, tracker: Tracker, zones: ZonesConfig | None = None, video_clock: bool = False,
                 floor: float | None = None):
        self.tracker, self.config, self.video_clock = tracker, zones, video_clock
        self.floor = floor  # the detector's candidates go down to this score for the tracker (None: no lower)
        self.zones: list[ZoneState] = []
        self.lines: list[LineState] = []
        self._sv_zones: list = []
        self._sv_lines: list = []
        self._size: tuple[int, int] | None = None
        self._last: dict[int, dict] = {}  # track id -> what the last detection said about it
        self._first_seen: dict[int, float] = {}

    def clock(self, frame) -> float:
        return frame.index / frame.fps if self.video_clock else frame.timestamp

    def update(self, frame, detections: Sequence[Detection],
               low: Sequence[Detection] = ()) -> tuple[tuple[int | None, ...], list[dict]]:
        """(track id per detection, events) for one frame (``capture.Frame``),
        its detections and its ``low``-score ones (ByteTrack's second stage:
        they keep tracks going; zones and lines count only ``detections``)."""
        if self._size is None:
            self._build((frame.image.shape[1], frame.image.shape[0]))
        now = self.clock(frame)
        update = self.tracker.update(detections, now, low)
        events: list[dict] = []

        def event(kind: str, track_id: int, **extra) -> None:
            events.append({"type": kind, "frame": frame.index, "timestamp": round(frame.timestamp, 4),
                           "track_id": track_id, **self._last[track_id], **extra})

        tracked = [(i, d, track_id) for i, (d, track_id) in enumerate(zip(detections, update.ids)) if track_id is not None]
        for _, d, track_id in tracked:
            self._last[track_id] = _described(d)
        for d, track_id in zip(low, update.low_ids):
            if track_id is not None and track_id not in self._last:  # confirmed by a low-score detection
                self._last[track_id] = _described(d)
        for track_id in update.appeared:
            self._first_seen[track_id] = now
            event("appeared", track_id)
        if self.config is not None and tracked:
            self._zones_and_lines(tracked, now, event)
        for track_id in update.disappeared:
            for zone in self.zones:
                visit = zone.inside.pop(track_id, None)
                if visit is not None:
                    event("zone_leave", track_id, zone=zone.name, seconds=round(now - visit.entered, 3), lost=True)
            if track_id in self._last:
                event("disappeared", track_id, seconds=round(now - self._first_seen.pop(track_id, now), 3))
                del self._last[track_id]
        return update.ids, events

    def _zones_and_lines(self, tracked, now: float, event) -> None:
        sv = self.tracker.sv
        boxes = np.array([(d.box[1], d.box[0], d.box[3], d.box[2]) for _, d, _ in tracked], np.float32)
        labels = [d.label for _, d, _ in tracked]
        ids = np.array([t for _, _, t in tracked], int)
        detections = sv.Detections(xyxy=boxes, tracker_id=ids, class_id=np.array([d.class_id for _, d, _ in tracked]))
        for spec, zone, sv_zone in zip(self.config.zones, self.zones, self._sv_zones):
            wanted = [spec.classes is None or label in spec.classes for label in labels]
            inside_now = {int(t) for t, hit, ok in zip(ids, sv_zone.trigger(detections), wanted) if hit and ok}
            present = {int(t) for t in ids}
            for track_id in sorted(inside_now - set(zone.inside)):
                zone.inside[track_id] = _Visit(now)
                zone.entries += 1
                event("zone_enter", track_id, zone=zone.name)
            # A track not detected in this frame keeps its place until it is seen elsewhere or disappears.
            for track_id in sorted((set(zone.inside) & present) - inside_now):
                visit = zone.inside.pop(track_id)
                event("zone_leave", track_id, zone=zone.name, seconds=round(now - visit.entered, 3))
            if spec.dwell is not None:
                for track_id, visit in sorted(zone.inside.items()):
                    if not visit.dwelt and now - visit.entered >= spec.dwell:
                        visit.dwelt = True
                        event("zone_dwell", track_id, zone=zone.name, seconds=round(now - visit.entered, 3))
        for spec, line, sv_line in zip(self.config.lines, self.lines, self._sv_lines):
            crossed_in, crossed_out = sv_line.trigger(detections)
            for track_id, label, went_in, went_out in zip(ids, labels, crossed_in, crossed_out):
                if spec.classes is not None and label not in spec.classes:
                    continue
                for direction, crossed in (("in", went_in), ("out", went_out)):
                    if crossed:
                        if direction == "in":
                            line.crossed_in += 1
                        else:
                            line.crossed_out += 1
                        event("line_cross", int(track_id), line=line.name, direction=direction)

    def _build(self, size: tuple[int, int]) -> None:
        """The library's zone and line objects, in pixels of the first frame."""
        self._size = size
        if self.config is None:
            return
        sv = self.tracker.sv
        config = self.config.in_pixels(*size)
        for zone in config.zones:
            polygon = np.array(zone.polygon, np.float64)
            self.zones.append(ZoneState(zone.name, polygon))
            self._sv_zones.append(sv.PolygonZone(np.round(polygon).astype(np.int64),
                                                 triggering_anchors=(sv.Position[zone.anchor.upper()],)))
        for line in config.lines:
            (x0, y0), (x1, y1) = line.points
            self.lines.append(LineState(line.name, np.array(line.points, np.float64)))
            self._sv_lines.append(sv.LineZone(start=sv.Point(x0, y0), end=sv.Point(x1, y1)))

    def shapes(self, states: dict | None = None) -> list[Shape]:
        """The zones (outlined, "name: count"; another colour while occupied)
        and lines ("name in N out M") for ``draw.annotate``, from ``states``
        (default: now)."""
        states = states or self.states()
        shapes: list[Shape] = []
        for zone in self.zones:
            count = states["zones"].get(zone.name, 0)
            shapes.append(Polyline(tuple(map(tuple, zone.polygon.tolist())), f"{zone.name}: {count}",
                                   colour=ZONE_OCCUPIED if count else ZONE_COLOUR))
        for line in self.lines:
            counts = states["lines"].get(line.name, {"in": 0, "out": 0})
            shapes.append(Polyline(tuple(map(tuple, line.points.tolist())),
                                   f"{line.name} in {counts['in']} out {counts['out']}", closed=False,
                                   colour=LINE_COLOUR))
        return shapes

    def states(self) -> dict:
        """Counts now: {"zones": {name: tracks inside}, "lines": {name: {"in": n, "out": n}}}."""
        return {"zones": {z.name: z.count for z in self.zones},
                "lines": {l.name: {"in": l.crossed_in, "out": l.crossed_out} for l in self.lines}}


def _described(d: Detection) -> dict:
    """What an event says about its track's latest detection."""
    return {"label": d.label, "class_id": d.class_id, "score": round(d.score, 4), "box": [round(v, 2) for v in d.box]}
