"""Box utilities against slow per-box references, on grid boxes that sit at exact IoU values."""
import numpy as np

from ssdkit.runtime import boxes as bx


def _slow_iou(a, b):
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    return 0.0 if area_a <= 0 or area_b <= 0 else ih * iw / (area_a + area_b - ih * iw)


def _grid(rng, n):
    corner = rng.integers(0, 8, (n, 2)) / 8
    size = rng.integers(0, 4, (n, 2)) / 8  # zero sizes included
    return np.concatenate([corner, corner + size], 1)


def test_iou_matrix_and_kernel_iou_match_reference():
    rng = np.random.default_rng(0)
    a, b = _grid(rng, 25), _grid(rng, 30)
    expected = np.array([[_slow_iou(x, y) for y in b] for x in a])
    np.testing.assert_array_equal(bx.iou_matrix(a, b), expected)  # dyadic inputs: exact
    got = bx.iou(a.astype(np.float32)[:, None], b.astype(np.float32)[None])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_array_equal(bx.iou(a[3].astype(np.float32), b.astype(np.float32)), got[3])
    assert (bx.iou_matrix(a, b)[:, (b[:, 2] == b[:, 0]) | (b[:, 3] == b[:, 1])] == 0).all()


def test_iou_of_a_box_with_itself_is_one_and_of_an_empty_box_zero():
    box = np.array([0.1, 0.2, 0.5, 0.7], np.float32)
    assert bx.iou(box, box[None])[0] == 1.0
    empty = np.array([[0.3, 0.3, 0.3, 0.6]], np.float32)
    assert bx.iou(empty[0], empty)[0] == 0.0 and bx.iou_matrix(empty, empty)[0, 0] == 0.0


def test_conversions_round_trip_and_area():
    rng = np.random.default_rng(1)
    corners = _grid(rng, 20)
    np.testing.assert_array_equal(bx.center_size_to_corners(bx.corners_to_center_size(corners)), corners)
    np.testing.assert_array_equal(bx.xywh_to_corners(bx.corners_to_xywh(corners)), corners)
    xywh = bx.corners_to_xywh(corners)
    np.testing.assert_array_equal(bx.area(corners), xywh[:, 2] * xywh[:, 3])
    np.testing.assert_array_equal(bx.corners_to_xywh([[1, 2, 4, 8]]), [[2, 1, 6, 3]])


def test_clip_and_pixels():
    boxes = np.array([[-0.5, 0.25, 0.5, 1.5]])
    np.testing.assert_array_equal(bx.clip(boxes), [[0, 0.25, 0.5, 1]])
    np.testing.assert_array_equal(bx.scale_to_pixels(bx.clip(boxes), 100, 200), [[0, 50, 50, 200]])
