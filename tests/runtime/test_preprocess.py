"""Shared preprocessing: resize, normalization, quantization, letterbox box mapping."""
import numpy as np
import pytest

from ssdkit.runtime.preprocess import preprocess, resize_bilinear
from ssdkit.runtime.spec import Preprocessing


def test_bilinear_resize_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    exact = cv2.resize(image.astype(np.float32), (40, 30), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(resize_bilinear(image.astype(np.float32), 30, 40, opencv=False), exact, atol=1e-3)
    # uint8 stays uint8, rounded: numpy and OpenCV's fixed-point path agree to one grey level.
    for opencv in (False, True):
        ours = resize_bilinear(image, 30, 40, opencv=opencv)
        assert ours.dtype == np.uint8
        assert np.abs(ours.astype(np.float32) - exact).max() <= 1.0


def test_normalization_and_input_quantization():
    image = np.array([[[0, 127, 255]]], np.uint8).repeat(4, 0).repeat(4, 1)
    pre = Preprocessing(input_height=4, input_width=4)
    tensor, _ = preprocess(image, pre)
    np.testing.assert_allclose(tensor[0, 0, 0], [-1, -0.5 / 127.5, 1], atol=1e-6)
    quantized, _ = preprocess(image, pre, np.uint8, (1 / 127.5, 127))
    # 127 normalizes to -0.5 quantization steps: TFLite rounds half away from zero.
    assert quantized.dtype == np.uint8 and list(quantized[0, 0, 0]) == [0, 126, 254]


def test_letterbox_maps_boxes_back_to_the_image():
    image = np.zeros((100, 200, 3), np.uint8)
    image[25:75, 50:150] = 255
    pre = Preprocessing(input_height=64, input_width=64, resize="letterbox")
    tensor, transform = preprocess(image, pre)
    # 200x100 -> 64x32, padded 16 rows above and below.
    rows = np.flatnonzero(tensor[0, :, 32, 0] > 0)
    assert rows.min() >= 16 and rows.max() <= 47
    box = np.array([[(16 + 8) / 64, 16 / 64, (16 + 24) / 64, 48 / 64]])  # the white block in the input
    np.testing.assert_allclose(transform.to_pixels(box), [[25, 50, 75, 150]], atol=1e-4)


def test_stretch_maps_normalized_boxes_to_pixels():
    _, transform = preprocess(np.zeros((30, 60, 3), np.uint8), Preprocessing(input_height=16, input_width=16))
    np.testing.assert_allclose(transform.to_pixels(np.array([[0.5, 0.25, 1.2, 1.0]])), [[15, 15, 30, 60]])


def test_rejects_non_rgb_images():
    with pytest.raises(ValueError, match=r"image of shape \(4, 4\), expected HxWx3 RGB"):
        preprocess(np.zeros((4, 4), np.uint8), Preprocessing(input_height=4, input_width=4))
