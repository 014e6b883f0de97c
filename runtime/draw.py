"""Boxes, labels and extra shapes drawn on an image: one look for ``ssdkit
detect``'s annotated images and the camera's video, preview stream and window.

Sizes follow the image: line width and text height are fractions of its
shorter side, so boxes stay visible on a 4000-pixel photo and labels stay
legible on a 96-pixel clip. Each label sits on a filled box of its shape's
colour (white or black text, whichever reads better), above the box or
inside it, moved to stay inside the image and, where one of the candidate
places is free, off the labels drawn before it (best detections first, so
they get the best places on crowded photos).

OpenCV draws when it is installed; devices without it (a Raspberry Pi with
only Pillow) draw with Pillow, with the same layout. What to draw is plain
data: ``annotate(image, detections, shapes=[Box(...), Polyline(...), Label(...)])``
takes extra boxes (a tracker's ids), polylines (zones, counting lines) and
free-standing labels besides the detections.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence, Union

import numpy as np

RGB = tuple[int, int, int]

# Distinct colours (RGB), picked by a shape's ``key`` (class id, track id).
PALETTE: tuple[RGB, ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40),
    (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128),
)
LINE_FRACTION = 1 / 400  # line width: this share of the shorter side, at least 2 px
TEXT_FRACTION = 1 / 30  # text height (cap to descender): this share of the shorter side, at least 12 px


@dataclass(frozen=True)
class Box:
    """A box (ymin, xmin, ymax, xmax in pixels, like ``Detection.box``) with a caption."""

    box: tuple[float, float, float, float]
    caption: str = ""
    key: int = 0  # picks the colour from PALETTE
    colour: RGB | None = None  # overrides ``key``


@dataclass(frozen=True)
class Polyline:
    """Points (x, y in pixels) joined by lines: a zone (``closed``) or a
    counting line; its caption sits at the first point."""

    points: tuple[tuple[float, float], ...]
    caption: str = ""
    closed: bool = True
    key: int = 0
    colour: RGB | None = None


@dataclass(frozen=True)
class Label:
    """A caption on its own (a counter, a status line), its top-left corner at (x, y) pixels."""

    position: tuple[float, float]
    caption: str
    key: int = 0
    colour: RGB | None = None


Shape = Union[Box, Polyline, Label]


@dataclass(frozen=True)
class Style:
    """Line width and text height for an image of ``height`` x ``width``."""

    line: int
    text: int
    pad: int

    @classmethod
    def for_image(cls, height: int, width: int) -> "Style":
        side = min(height, width)
        text = max(12, round(side * TEXT_FRACTION))
        return cls(line=max(2, round(side * LINE_FRACTION)), text=text, pad=max(1, text // 6))


def detection_boxes(detections: Sequence, captions: Sequence[str] | None = None) -> list[Box]:
    """``Detection``s as ``Box``es: "label 0.87" (or ``captions``), coloured by class."""
    if captions is not None and len(captions) != len(detections):
        raise ValueError(f"{len(captions)} captions for {len(detections)} detections")
    return [Box(tuple(d.box), captions[i] if captions is not None else f"{d.label} {d.score:.2f}", d.class_id)
            for i, d in enumerate(detections)]


def annotate(image: np.ndarray, detections: Sequence = (), shapes: Sequence[Shape] = (), *,
             captions: Sequence[str] | None = None, channels: Literal["rgb", "bgr"] = "rgb",
             engine: Literal["cv2", "pil"] | None = None) -> np.ndarray:
    """A copy of ``image`` (uint8 HxWx3 in ``channels`` order) with the
    detections' boxes and labels (``captions`` replaces "label score"), then
    ``shapes``. The image passed in is left as it was. ``engine``: ``cv2``
    or ``pil``; default OpenCV if it is installed, else Pillow."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image of dtype {image.dtype} and shape {image.shape}, expected uint8 HxWx3")
    if channels not in ("rgb", "bgr"):
        raise ValueError(f"channels {channels!r}, expected rgb or bgr")
    items = [*detection_boxes(detections, captions), *shapes]
    painter = _painter(engine, image, channels)
    style = Style.for_image(*image.shape[:2])
    height, width = image.shape[:2]
    labels = []  # (anchor (x0, y0, x1, y1), caption, colour, free-standing)
    for item in items:
        colour = item.colour or PALETTE[item.key % len(PALETTE)]
        if isinstance(item, Box):
            ymin, xmin, ymax, xmax = item.box
            painter.rectangle((xmin, ymin, xmax, ymax), colour, style.line)
            anchor = (xmin, ymin, xmax, ymax)
        elif isinstance(item, Polyline):
            painter.polyline(item.points, item.closed, colour, style.line)
            x, y = item.points[0]
            anchor = (x, y, x, y)
        elif isinstance(item, Label):
            x, y = item.position
            anchor = (x, y, x, y)
        else:
            raise TypeError(f"cannot draw {type(item).__name__}; expected Box, Polyline or Label")
        if item.caption:
            labels.append((anchor, item.caption, colour, isinstance(item, Label)))
    placed: list[tuple[int, int, int, int]] = []
    labels.sort(key=lambda label: not label[3])  # free-standing labels are pinned: the others make way
    for anchor, caption, colour, free in labels:
        text_w, text_h = painter.text_size(caption, style.text)
        size = (text_w + 2 * style.pad, text_h + 2 * style.pad)
        rect = place_label(anchor, size, (width, height), placed, inside_only=free)
        placed.append(rect)
        painter.label(rect, caption, colour, style)
    return painter.result()


def place_label(anchor: tuple[float, float, float, float], size: tuple[int, int], image_size: tuple[int, int],
                taken: Sequence[tuple[int, int, int, int]] = (), inside_only: bool = False) -> tuple[int, int, int, int]:
    """Where a label of ``size`` (w, h) goes for a box ``anchor`` (x0, y0, x1,
    y1) in an image of ``image_size`` (w, h). Candidates, in order: above the
    box, in its top, below it, in its bottom, each at its left then its right
    edge, every one moved to lie inside the image; the first that overlaps no
    rectangle in ``taken`` wins, else the one overlapping least.
    ``inside_only``: at the anchor's corner only. Returns (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = anchor
    w, h = size
    width, height = image_size
    tops = [y0] if inside_only else [y0 - h, y0, y1, y1 - h]
    lefts = [x0] if inside_only else [x0, x1 - w]
    candidates = []
    for top in tops:
        for left in lefts:
            left = int(round(min(max(left, 0), max(width - w, 0))))
            top_ = int(round(min(max(top, 0), max(height - h, 0))))
            rect = (left, top_, left + w, top_ + h)
            if rect not in candidates:
                candidates.append(rect)
    covered = [sum(_overlap_area(rect, other) for other in taken) for rect in candidates]
    return candidates[covered.index(min(covered))]


def _overlap_area(a, b) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _text_colour(background: RGB) -> RGB:
    """Black on light backgrounds, white on dark (ITU-R BT.601 luma)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def _painter(engine: str | None, image: np.ndarray, channels: str):
    if engine not in (None, "cv2", "pil"):
        raise ValueError(f"engine {engine!r}, expected cv2 or pil")
    if engine in (None, "cv2"):
        try:
            import cv2
        except ImportError:
            if engine == "cv2":
                raise
        else:
            return _CV2Painter(cv2, image, channels)
    return _PILPainter(image, channels)


class _CV2Painter:
    CAP = 0.8  # cap height as a share of the text height (Pillow's default font: about the same)

    def __init__(self, cv2, image: np.ndarray, channels: str):
        self.cv2, self.bgr = cv2, channels == "bgr"
        self.canvas = np.ascontiguousarray(image).copy()
        (_, self._cap_at_1), _ = cv2.getTextSize("A", cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)

    def _colour(self, rgb: RGB) -> tuple[int, int, int]:
        return tuple(int(c) for c in (rgb[::-1] if self.bgr else rgb))

    def _font(self, text_height: int) -> tuple[float, int]:
        scale = self.CAP * text_height / self._cap_at_1
        return scale, max(1, round(scale * 1.8))

    def rectangle(self, corners, colour: RGB, line: int) -> None:
        x0, y0, x1, y1 = (int(round(v)) for v in corners)
        self.cv2.rectangle(self.canvas, (x0, y0), (x1, y1), self._colour(colour), line, self.cv2.LINE_AA)

    def polyline(self, points, closed: bool, colour: RGB, line: int) -> None:
        pts = np.round(np.asarray(points, np.float64)).astype(np.int32).reshape(-1, 1, 2)
        self.cv2.polylines(self.canvas, [pts], closed, self._colour(colour), line, self.cv2.LINE_AA)

    def text_size(self, text: str, text_height: int) -> tuple[int, int]:
        """(width of ``text``, ``text_height``): every label of a size is as tall."""
        scale, thickness = self._font(text_height)
        (w, _), _ = self.cv2.getTextSize(text, self.cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        return w, text_height

    def label(self, rect, text: str, colour: RGB, style: Style) -> None:
        x0, y0, x1, y1 = rect
        self.cv2.rectangle(self.canvas, (x0, y0), (x1 - 1, y1 - 1), self._colour(colour), -1)
        scale, thickness = self._font(style.text)
        baseline = y0 + style.pad + round(self.CAP * style.text)  # descenders use the rest
        self.cv2.putText(self.canvas, text, (x0 + style.pad, baseline), self.cv2.FONT_HERSHEY_SIMPLEX,
                         scale, self._colour(_text_colour(colour)), thickness, self.cv2.LINE_AA)

    def result(self) -> np.ndarray:
        return self.canvas


class _PILPainter:
    """Pillow >= 10.1 scales its built-in font to any size; older Pillow (9.4
    on Raspberry Pi OS bookworm) has only a small bitmap font, which is drawn
    at its own size and scaled up to the text height."""

    def __init__(self, image: np.ndarray, channels: str):
        from PIL import Image, ImageDraw, ImageFont

        self.Image, self.ImageDraw, self.ImageFont = Image, ImageDraw, ImageFont
        self.bgr = channels == "bgr"
        self.img = Image.fromarray(np.ascontiguousarray(image[..., ::-1] if self.bgr else image))
        self.draw = ImageDraw.Draw(self.img)
        self._fonts: dict[int, object] = {}

    def _font(self, text_height: int):
        if text_height not in self._fonts:
            try:
                self._fonts[text_height] = self.ImageFont.load_default(size=text_height)
            except (TypeError, ImportError, OSError):  # Pillow < 10.1, or without FreeType
                self._fonts[text_height] = None
        return self._fonts[text_height]

    def rectangle(self, corners, colour: RGB, line: int) -> None:
        x0, y0, x1, y1 = (int(round(v)) for v in corners)
        self.draw.rectangle([x0, y0, max(x1, x0), max(y1, y0)], outline=tuple(colour), width=line)

    def polyline(self, points, closed: bool, colour: RGB, line: int) -> None:
        pts = [(float(x), float(y)) for x, y in points]
        self.draw.line(pts + pts[:1] if closed else pts, fill=tuple(colour), width=line, joint="curve")

    def text_size(self, text: str, text_height: int) -> tuple[int, int]:
        """(width of ``text``, the font's height): every label of a size is as tall."""
        font = self._font(text_height)
        if font is None:  # the bitmap font, scaled from its own height to ``text_height``
            font, factor = self.ImageFont.load_default(), text_height / self._line_box(self.ImageFont.load_default())[3]
        else:
            factor = 1.0
        left, _, right, _ = font.getbbox(text)
        return round((right - left) * factor), round(self._line_box(font)[3] * factor)

    @staticmethod
    def _line_box(font) -> tuple[int, int, int, int]:
        """(left, top, 0, height) of the font's tallest letters and deepest descender."""
        left, top, _, bottom = font.getbbox("Ag")
        return left, top, 0, max(bottom - top, 1)

    def label(self, rect, text: str, colour: RGB, style: Style) -> None:
        x0, y0, x1, y1 = rect
        self.draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=tuple(colour))
        ink = _text_colour(colour)
        font = self._font(style.text)
        if font is not None:
            _, top, _, _ = self._line_box(font)
            left = font.getbbox(text)[0]
            self.draw.text((x0 + style.pad - left, y0 + style.pad - top), text, fill=ink, font=font)
            return
        bitmap = self.ImageFont.load_default()
        _, top, _, height = self._line_box(bitmap)
        left, _, right, _ = bitmap.getbbox(text)
        mask = self.Image.new("L", (max(right - left, 1), height), 0)
        self.ImageDraw.Draw(mask).text((-left, -top), text, fill=255, font=bitmap)
        size = (max(x1 - x0 - 2 * style.pad, 1), max(y1 - y0 - 2 * style.pad, 1))
        self.img.paste(ink, (x0 + style.pad, y0 + style.pad), mask.resize(size, self.Image.BILINEAR))

    def result(self) -> np.ndarray:
        array = np.asarray(self.img)
        return np.ascontiguousarray(array[..., ::-1]) if self.bgr else array
