"""Image -> network input, the one implementation used on device and in calibration.

Calibration (``ssdkit.calibration``) imports this module, so an int8 model is
calibrated on exactly the tensors it will see on the device.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import Preprocessing


@dataclass(frozen=True)
class Transform:
    """Maps normalized boxes of the network input back to pixels of the image."""

    image_height: int
    image_width: int
    # Fraction of the input each image side covers, and where it starts
    # (1 and 0 for stretch; letterbox pads the short side symmetrically).
    scale_y: float = 1.0
    scale_x: float = 1.0
    offset_y: float = 0.0
    offset_x: float = 0.0

    def to_pixels(self, boxes: np.ndarray) -> np.ndarray:
        """[N, 4] normalized (ymin, xmin, ymax, xmax) of the input -> pixel corners, clipped."""
        b = np.asarray(boxes, np.float32)
        y = (b[:, [0, 2]] - self.offset_y) / self.scale_y * self.image_height
        x = (b[:, [1, 3]] - self.offset_x) / self.scale_x * self.image_width
        y = np.clip(y, 0, self.image_height)
        x = np.clip(x, 0, self.image_width)
        return np.stack([y[:, 0], x[:, 0], y[:, 1], x[:, 1]], axis=1)


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of HxWxC with half-pixel centres (as OpenCV's INTER_LINEAR), float32 out."""
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return image.astype(np.float32)

    def axis(dst: int, src: int):
        pos = (np.arange(dst, dtype=np.float32) + 0.5) * (src / dst) - 0.5
        pos = np.clip(pos, 0, src - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, src - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, wy = axis(height, src_h)
    x0, x1, wx = axis(width, src_w)
    img = image.astype(np.float32)
    top = img[y0][:, x0] * (1 - wx)[None, :, None] + img[y0][:, x1] * wx[None, :, None]
    bottom = img[y1][:, x0] * (1 - wx)[None, :, None] + img[y1][:, x1] * wx[None, :, None]
    return top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]


def preprocess(
    image: np.ndarray, pre: Preprocessing, input_dtype=np.float32, quantization: tuple[float, int] = (0.0, 0)
) -> tuple[np.ndarray, Transform]:
    """RGB uint8 HxWx3 -> the network's [1, H, W, 3] input and the box transform.

    ``input_dtype``/``quantization`` are the model input's; an integer input
    with scale s and zero point z receives ``round(normalized / s) + z``.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image of shape {image.shape}, expected HxWx3 RGB")
    h, w = image.shape[:2]
    out_h, out_w = pre.input_height, pre.input_width
    if pre.resize == "letterbox":
        ratio = min(out_h / h, out_w / w)
        new_h, new_w = max(1, round(h * ratio)), max(1, round(w * ratio))
        canvas = np.zeros((out_h, out_w, 3), np.float32)
        top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
        canvas[top:top + new_h, left:left + new_w] = resize_bilinear(image, new_h, new_w)
        resized = canvas
        transform = Transform(h, w, new_h / out_h, new_w / out_w, top / out_h, left / out_w)
    else:
        resized = resize_bilinear(image, out_h, out_w)
        transform = Transform(h, w)
    if pre.color_order == "BGR":
        resized = resized[..., ::-1]
    normalized = (resized - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    scale, zero_point = quantization
    dtype = np.dtype(input_dtype)
    if dtype.kind in "iu" and scale:
        info = np.iinfo(dtype)
        tensor = np.clip(np.round(normalized / scale) + zero_point, info.min, info.max).astype(dtype)
    else:
        tensor = normalized.astype(dtype)
    return tensor[None], transform
