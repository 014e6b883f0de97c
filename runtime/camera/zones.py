"""Zones and counting lines from a small JSON file (``ssdkit camera --zones``).

    {
      "coordinates": "pixels",                      # or "normalized" (0..1 of the frame's width, height)
      "zones": [{"name": "driveway", "polygon": [[x, y], [x, y], [x, y], ...],
                 "dwell": 5, "classes": ["person", "car"], "anchor": "bottom_center"}],
      "lines": [{"name": "door", "points": [[x, y], [x, y]], "classes": ["person"]}]
    }

A zone is a polygon: a track is in it while its box's ``anchor`` point is
(bottom_center by default: where an object stands); it gives ``zone_enter``,
``zone_leave`` and, once per visit after ``dwell`` seconds inside, ``zone_dwell``.
A line counts the tracks whose box crosses it, by direction (the library's
four-corner rule: every corner of the box must have changed side), within
the segment's extent. ``classes`` (optional) limits either to those labels.

Every error is one line naming the file and the field, e.g.
``zones.json: zones[1].polygon: expected at least 3 [x, y] points, got 2``.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

ANCHORS = ("bottom_center", "center", "top_center", "center_left", "center_right")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # safe in MQTT topics and Home Assistant ids


@dataclass(frozen=True)
class Zone:
    name: str
    polygon: tuple[tuple[float, float], ...]
    dwell: float | None = None  # seconds inside before a zone_dwell event
    classes: tuple[str, ...] | None = None
    anchor: str = "bottom_center"


@dataclass(frozen=True)
class Line:
    name: str
    points: tuple[tuple[float, float], tuple[float, float]]
    classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ZonesConfig:
    zones: tuple[Zone, ...] = ()
    lines: tuple[Line, ...] = ()
    normalized: bool = False  # coordinates are fractions of the frame's width and height

    def in_pixels(self, width: int, height: int) -> "ZonesConfig":
        """The same zones with pixel coordinates for a frame of this size."""
        if not self.normalized:
            return self

        def scale(points):
            return tuple((x * width, y * height) for x, y in points)

        return ZonesConfig(tuple(Zone(z.name, scale(z.polygon), z.dwell, z.classes, z.anchor) for z in self.zones),
                           tuple(Line(l.name, scale(l.points), l.classes) for l in self.lines), normalized=False)


def load_zones(path: str | os.PathLike) -> ZonesConfig:
    """Reads and checks a zones file; raises ValueError (one line) or FileNotFoundError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"--zones {path}: no such file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    return parse_zones(data, str(path))


def parse_zones(data: object, source: str = "zones") -> ZonesConfig:
    """Checks ``data`` (a zones file's JSON) field by field."""

    def fail(field: str, problem: str) -> ValueError:
        return ValueError(f"{source}: {field}: {problem}")

    if not isinstance(data, dict):
        raise fail("(top level)", f"expected an object with \"zones\" and/or \"lines\", got {_kind(data)}")
    unknown = sorted(set(data) - {"coordinates", "zones", "lines"})
    if unknown:
        raise fail(unknown[0], "unknown field (expected coordinates, zones, lines)")
    coordinates = data.get("coordinates", "pixels")
    if coordinates not in ("pixels", "normalized"):
        raise fail("coordinates", f"expected \"pixels\" or \"normalized\", got {coordinates!r}")
    normalized = coordinates == "normalized"
    names: dict[str, str] = {}

    def items(key: str) -> list:
        value = data.get(key, [])
        if not isinstance(value, list):
            raise fail(key, f"expected a list, got {_kind(value)}")
        return value

    def points(field: str, value: object, minimum: int, maximum: int | None = None) -> tuple:
        expected = f"exactly {minimum}" if maximum == minimum else f"at least {minimum}"
        if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2 for p in value):
            raise fail(field, f"expected a list of [x, y] points, got {json.dumps(value)[:60]}")
        if len(value) < minimum or (maximum is not None and len(value) > maximum):
            raise fail(field, f"expected {expected} [x, y] points, got {len(value)}")
        for i, p in enumerate(value):
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p):
                raise fail(f"{field}[{i}]", f"expected two numbers, got {json.dumps(p)}")
            if any(v < 0 for v in p) or (normalized and any(v > 1 for v in p)):
                limit = "between 0 and 1 (coordinates: normalized)" if normalized else "at least 0 (pixels)"
                raise fail(f"{field}[{i}]", f"expected coordinates {limit}, got {json.dumps(p)}")
        return tuple((float(x), float(y)) for x, y in value)

    def common(field: str, item: object, allowed: set[str]) -> tuple[str, tuple[str, ...] | None]:
        if not isinstance(item, dict):
            raise fail(field, f"expected an object, got {_kind(item)}")
        extra = sorted(set(item) - allowed)
        if extra:
            raise fail(f"{field}.{extra[0]}", f"unknown field (expected {', '.join(sorted(allowed))})")
        name = item.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise fail(f"{field}.name", f"expected letters, digits, _ or - (at most 64, first a letter or digit), "
                                        f"got {json.dumps(name)}")
        if name in names:
            raise fail(f"{field}.name", f"{name!r} is already the name of {names[name]}")
        names[name] = field
        classes = item.get("classes")
        if classes is not None:
            if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
                raise fail(f"{field}.classes", f"expected a non-empty list of labels, got {json.dumps(classes)}")
            classes = tuple(classes)
        return name, classes

    zones = []
    for i, item in enumerate(items("zones")):
        field = f"zones[{i}]"
        name, classes = common(field, item, {"name", "polygon", "dwell", "classes", "anchor"})
        polygon = points(f"{field}.polygon", item.get("polygon"), 3)
        dwell = item.get("dwell")
        if dwell is not None and (isinstance(dwell, bool) or not isinstance(dwell, (int, float)) or dwell <= 0):
            raise fail(f"{field}.dwell", f"expected seconds above 0, got {json.dumps(dwell)}")
        anchor = item.get("anchor", "bottom_center")
        if anchor not in ANCHORS:
            raise fail(f"{field}.anchor", f"expected one of {', '.join(ANCHORS)}, got {json.dumps(anchor)}")
        zones.append(Zone(name, polygon, None if dwell is None else float(dwell), classes, anchor))
    lines = []
    for i, item in enumerate(items("lines")):
        field = f"lines[{i}]"
        name, classes = common(field, item, {"name", "points", "classes"})
        ends = points(f"{field}.points", item.get("points"), 2, 2)
        if ends[0] == ends[1]:
            raise fail(f"{field}.points", f"the two points are the same, {list(ends[0])}")
        lines.append(Line(name, ends, classes))
    if not zones and not lines:
        raise fail("(top level)", "no zones and no lines")
    return ZonesConfig(tuple(zones), tuple(lines), normalized)


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")
