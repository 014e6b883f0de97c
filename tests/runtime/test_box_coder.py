"""Faster R-CNN box coder: the TF OD API's test cases, ported."""
import numpy as np

from ssdkit.runtime import box_coder

BOXES = np.array([[10.0, 10.0, 20.0, 15.0], [0.2, 0.1, 0.5, 0.4]], np.float32)
ANCHORS = np.array([[15.0, 12.0, 30.0, 18.0], [0.1, 0.0, 0.7, 0.9]], np.float32)
CODES = [[-0.5, -0.416666, -0.405465, -0.182321], [-0.083333, -0.222222, -0.693147, -1.098612]]
SCALED_CODES = [[-1., -1.25, -1.62186, -0.911608], [-0.166667, -0.666667, -2.772588, -5.493062]]


def test_encode_matches_od_api():
    np.testing.assert_allclose(box_coder.encode(BOXES, ANCHORS, None), CODES, rtol=1e-4, atol=1e-4)


def test_encode_with_scaling_matches_od_api():
    np.testing.assert_allclose(box_coder.encode(BOXES, ANCHORS, [2, 3, 4, 5]), SCALED_CODES, rtol=1e-4, atol=1e-4)


def test_decode_matches_od_api():
    np.testing.assert_allclose(box_coder.decode(np.array(CODES, np.float32), ANCHORS, None), BOXES, rtol=1e-4, atol=1e-4)


def test_decode_with_scaling_matches_od_api():
    out = box_coder.decode(np.array(SCALED_CODES, np.float32), ANCHORS, [2, 3, 4, 5])
    np.testing.assert_allclose(out, BOXES, rtol=1e-4, atol=1e-4)


def test_very_small_width_gives_finite_codes_like_od_api():
    boxes = np.array([[10.0, 10.0, 10.0000001, 20.0]], np.float32)
    codes = box_coder.encode(boxes, np.array([[15.0, 12.0, 30.0, 18.0]], np.float32), None)
    np.testing.assert_allclose(codes, [[-0.833333, 0., -21.128731, 0.510826]], rtol=1e-4, atol=1e-4)


def test_ssd_scales_round_trip():
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 0.7, (50, 2))
    anchors = np.concatenate([corner, corner + rng.uniform(0.05, 0.3, (50, 2))], axis=1)
    box_corner = corner + rng.uniform(-0.05, 0.05, (50, 2))
    boxes = np.concatenate([box_corner, box_corner + rng.uniform(0.02, 0.4, (50, 2))], axis=1)
    np.testing.assert_allclose(box_coder.decode(box_coder.encode(boxes, anchors), anchors), boxes, atol=1e-6)
