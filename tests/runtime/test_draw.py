"""One drawing module for `ssdkit detect` and the camera: sizes follow the
image, labels sit on a filled box inside the image, OpenCV and Pillow both draw."""
import numpy as np
import pytest

from ssdkit.runtime.detector import Detection
from ssdkit.runtime.draw import PALETTE, Box, Label, Polyline, Style, annotate, place_label

ENGINES = ["pil", pytest.param("cv2", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("cv2") is None, reason="OpenCV not installed"))]


def _black(height, width):
    return np.zeros((height, width, 3), np.uint8)


def _mask(image, colour):
    return (image == np.array(colour, np.uint8)).all(axis=-1)


def test_line_width_and_text_height_follow_the_image():
    assert Style.for_image(96, 96) == Style(line=2, text=12, pad=2)
    photo = Style.for_image(3000, 4000)
    assert photo.line == 8 and photo.text == 100  # a 2-pixel line and 12-pixel text would vanish on a photo
    assert Style.for_image(1080, 1920).text == 36


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("side", [120, 2400])
def test_box_lines_and_label_scale_with_the_image(engine, side):
    style = Style.for_image(side, side)
    s = side / 120
    detection = Detection((40 * s, 30 * s, 100 * s, 90 * s), 0.9, 2, "dog")
    drawn = annotate(_black(side, side), [detection], engine=engine)
    colour = _mask(drawn, PALETTE[2])
    row = colour[int(70 * s)]  # crosses the box's left edge, not the label
    assert style.line - 1 <= len(np.flatnonzero(row[: int(60 * s)])) <= style.line + 2
    label_height = 40 * s - np.flatnonzero(colour.any(axis=1)).min()  # the label sits on the box's top edge
    assert style.text <= label_height <= style.text + 2 * style.pad + style.line


@pytest.mark.parametrize("engine", ENGINES)
def test_labels_stay_inside_the_image_on_a_filled_background(engine):
    detections = [Detection((0, 0, 20, 30), 0.9, 0, "person"), Detection((90, 150, 120, 160), 0.8, 1, "bicycle")]
    image = _black(120, 160)
    drawn = annotate(image, detections, engine=engine)
    assert not image.any()  # the caller's image is left as it was
    for d in detections:
        filled = _mask(drawn, PALETTE[d.class_id])
        ys, xs = np.nonzero(filled)
        assert ys.min() >= 0 and xs.max() < 160 and ys.max() < 120
        assert filled.sum() > 11 * 30  # a label background, not just a thin box
    text = drawn[_mask(drawn, (255, 255, 255)) | _mask(drawn, (0, 0, 0))]
    assert len(text)  # the caption's ink


def test_labels_of_overlapping_boxes_do_not_cover_each_other():
    size = (40, 15)
    first = place_label((50, 50, 150, 150), size, (400, 300))
    second = place_label((50, 50, 150, 150), size, (400, 300), [first])
    third = place_label((50, 50, 150, 150), size, (400, 300), [first, second])
    assert first == (50, 35, 90, 50)  # above the box
    assert second == (110, 35, 150, 50)  # above, at its right edge
    assert third == (50, 50, 90, 65)  # in its top
    corner = place_label((0, 0, 10, 10), (80, 20), (100, 100))
    assert corner[0] >= 0 and corner[1] >= 0 and corner[2] <= 100  # moved inside the image
    pinned = place_label((5, 5, 5, 5), (30, 12), (100, 100), [(0, 0, 100, 100)], inside_only=True)
    assert pinned == (5, 5, 35, 17)


@pytest.mark.parametrize("engine", ENGINES)
def test_extra_shapes_and_captions(engine):
    """What a tracker or zone counter draws: its own captions, boxes, polylines and free labels."""
    image = _black(200, 300)
    detections = [Detection((20, 20, 80, 80), 0.7, 0, "car")]
    zone = Polyline(((150, 20), (290, 20), (290, 180)), "zone A", key=4)
    drawn = annotate(image, detections, [Box((100, 20, 180, 120), "#7", key=5), zone, Label((200, 190), "3 cars", key=6)],
                     captions=["#12 car 0.70"], engine=engine)
    for key in (0, 4, 5, 6):
        assert _mask(drawn, PALETTE[key]).any(), key
    assert _mask(drawn, PALETTE[4])[20, 200]  # the zone's top edge
    with pytest.raises(ValueError, match="2 captions for 1 detections"):
        annotate(image, detections, captions=["a", "b"], engine=engine)


def test_bgr_frames_get_the_same_drawing():
    pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    detections = [Detection((10, 10, 60, 70), 0.5, 3, "cat")]
    for engine in ("cv2", "pil"):
        assert np.array_equal(annotate(rgb[..., ::-1], detections, channels="bgr", engine=engine)[..., ::-1],
                              annotate(rgb, detections, engine=engine))


def test_pillow_without_scalable_fonts_scales_its_bitmap_font(monkeypatch):
    """Raspberry Pi OS bookworm has Pillow 9.4: ``load_default`` takes no size."""
    from PIL import ImageFont

    original = ImageFont.load_default

    def old_load_default(*args, **kwargs):
        if args or kwargs:
            raise TypeError("load_default() takes 0 positional arguments")
        return original()

    monkeypatch.setattr(ImageFont, "load_default", old_load_default)
    side = 1200
    style = Style.for_image(side, side)
    drawn = annotate(_black(side, side), [Detection((300, 200, 900, 800), 0.9, 1, "dog")], engine="pil")
    filled = _mask(drawn, PALETTE[1])
    top = np.flatnonzero(filled.any(axis=1)).min()
    assert style.text <= 300 - top <= style.text + 2 * style.pad + style.line  # the label above the box
    caption = drawn[top:300, 200:800]
    ink = ~_mask(caption, PALETTE[1]) & caption.any(axis=-1)
    assert ink.sum() > style.text * 10  # the scaled caption, drawn on its background
