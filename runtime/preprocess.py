"""Image -> network input: the one implementation used on the device, in
calibration and in training, so an int8 model is calibrated on exactly the
tensors it will see.

Steps: resize (stretch, or letterbox: keep the aspect ratio, pad with black),
colour order, ``(pixel - mean) / std``, then the model input's quantization
``round(value / scale) + zero_point`` (TFLite's rounding: half away from
zero). uint8 images stay uint8 through the resize (rounded, as OpenCV and PIL
resize them), so the last two steps are one 256-entry table lookup; float
images (training augmentation) take the same arithmetic elementwise.

The resize is bilinear with half-pixel centres (OpenCV's ``INTER_LINEAR``,
TF2's ``tf.image.resize``): OpenCV's when it is installed (several times
faster on a Raspberry Pi), else numpy; the two agree to within one grey
level on uint8 images (``tests/runtime/test_preprocess.py``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .backends.base import TensorInfo
from .spec import Preprocessing


@dataclass(frozen=True)
class Transform:
    """Maps boxes normalized to the network input back to pixels of the image.

    ``scale_*`` is the fraction of the input each image side covers and
    ``offset_*`` where it starts (1 and 0 when stretched; letterbox pads the
    short side symmetrically).
    """

    image_height: int
    image_width: int
    scale_y: float = 1.0
    scale_x: float = 1.0
    offset_y: float = 0.0
    offset_x: float = 0.0

    def to_pixels(self, boxes: np.ndarray) -> np.ndarray:
        """[N, 4] normalized (ymin, xmin, ymax, xmax) of the input -> float32
        pixel corners in the image, clipped to it."""
        b = np.asarray(boxes, np.float32).reshape(-1, 4)
        y = (b[:, [0, 2]] - self.offset_y) / self.scale_y * self.image_height
        x = (b[:, [1, 3]] - self.offset_x) / self.scale_x * self.image_width
        y = np.clip(y, 0, self.image_height)
        x = np.clip(x, 0, self.image_width)
        return np.stack([y[:, 0], x[:, 0], y[:, 1], x[:, 1]], axis=1)


def preprocess(
    image: np.ndarray, pre: Preprocessing, input_details: TensorInfo | np.dtype | type | None = None,
    quantization: tuple[float, int] = (0.0, 0), scratch: dict | None = None,
) -> tuple[np.ndarray, Transform]:
    """RGB HxWx3 image (uint8, or float in [0, 255]) -> the network's [1, H, W, 3]
    input tensor ([1, 3, H, W] for an NCHW model) and the box transform.

    ``input_details`` is the model input (a backend's ``TensorInfo``: dtype,
    quantization, layout); without it the tensor is float32. A dtype with
    ``quantization=(scale, zero_point)`` is also accepted. An integer input
    without quantization takes the resized pixels as they are.

    ``scratch``: a dict the caller keeps between calls (the ``Detector``
    does), holding the intermediate resized image. A fresh 300x300x3 buffer
    per frame costs page faults that double the preprocessing time (0.34 vs
    0.17 ms for a 640x480 frame, x86); the returned tensor is always new.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"image of shape {image.shape}, expected HxWx3 RGB")
    if image.dtype != np.uint8 and image.dtype.kind != "f":
        raise ValueError(f"image of dtype {image.dtype}, expected uint8 (or float in [0, 255])")
    if isinstance(input_details, TensorInfo):
        dtype, scale, zero_point = input_details.dtype, input_details.scale, input_details.zero_point
        nchw = len(input_details.shape) == 4 and input_details.shape[1] == 3 and input_details.shape[3] != 3
    else:
        dtype, (scale, zero_point), nchw = np.dtype(input_details or np.float32), quantization, False
    resized, transform = _fit(image, pre, scratch)
    if pre.color_order == "BGR":
        resized = resized[..., ::-1]
    if dtype.kind in "iu" and not scale:
        tensor = resized.astype(dtype)
    elif resized.dtype == np.uint8:
        tensor = _lookup(resized, _table(tuple(pre.mean), tuple(pre.std), dtype.str, float(scale), int(zero_point)))
    else:
        tensor = _normalize(resized, pre.mean, pre.std, dtype, scale, zero_point)
    if nchw:
        tensor = tensor.transpose(2, 0, 1)
    return np.ascontiguousarray(tensor[None]), transform


def _fit(image: np.ndarray, pre: Preprocessing, scratch: dict | None = None) -> tuple[np.ndarray, Transform]:
    h, w = image.shape[:2]
    out_h, out_w = pre.input_height, pre.input_width
    if pre.resize == "stretch":
        out = None
        if scratch is not None and image.dtype == np.uint8:
            out = scratch.setdefault((out_h, out_w), np.empty((out_h, out_w, 3), np.uint8))
        return resize_bilinear(image, out_h, out_w, out=out), Transform(h, w)
    if pre.resize != "letterbox":
        raise ValueError(f"unknown resize {pre.resize!r}, expected 'stretch' or 'letterbox'")
    ratio = min(out_h / h, out_w / w)
    new_h, new_w = min(out_h, max(1, round(h * ratio))), min(out_w, max(1, round(w * ratio)))
    top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
    resized = resize_bilinear(image, new_h, new_w)
    canvas = np.zeros((out_h, out_w, 3), resized.dtype)
    canvas[top:top + new_h, left:left + new_w] = resized
    return canvas, Transform(h, w, new_h / out_h, new_w / out_w, top / out_h, left / out_w)


def _normalize(values: np.ndarray, mean, std, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    """float32 ``(values - mean) / std``, then quantized to an integer ``dtype``."""
    normalized = (values.astype(np.float32, copy=False) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    if dtype.kind not in "iu":
        return normalized.astype(dtype, copy=False)
    scaled = normalized / np.float32(scale)
    rounded = np.trunc(scaled + np.copysign(np.float32(0.5), scaled))  # half away from zero, as TFLite
    info = np.iinfo(dtype)
    return np.clip(rounded + zero_point, info.min, info.max).astype(dtype)


@functools.lru_cache(maxsize=8)
def _table(mean: tuple, std: tuple, dtype: str, scale: float, zero_point: int) -> np.ndarray:
    """[3, 256]: the input value of each uint8 pixel value per channel."""
    pixels = np.repeat(np.arange(256, dtype=np.float32)[:, None], 3, axis=1)
    return np.ascontiguousarray(_normalize(pixels, mean, std, np.dtype(dtype), scale, zero_point).T)


def _lookup(pixels: np.ndarray, table: np.ndarray) -> np.ndarray:
    cv2 = _opencv()
    if cv2 is not None and table.dtype != np.int32:
        # cv2.LUT is ~6x faster than np.take on a 300x300x3 image (0.02 vs
        # 0.14 ms, x86): the difference between the runtime's overhead being
        # 7% or 14% of an int8 ssd_mnv2 inference (benchmarks/RESULTS.md).
        lut = table[0] if (table == table[0]).all() else np.ascontiguousarray(table.T[None])
        return cv2.LUT(np.ascontiguousarray(pixels), lut).reshape(pixels.shape)
    if (table == table[0]).all():  # the same normalization on every channel: one flat lookup
        return np.take(table[0], pixels)
    out = np.empty(pixels.shape, table.dtype)
    for channel in range(3):
        out[..., channel] = np.take(table[channel], pixels[..., channel])
    return out


def resize_bilinear(image: np.ndarray, height: int, width: int, opencv: bool | None = None,
                    out: np.ndarray | None = None) -> np.ndarray:
    """Bilinear resize of HxWxC with half-pixel centres; edge pixels repeat.

    uint8 stays uint8 (rounded); any other dtype comes out float32.
    ``opencv``: None uses OpenCV if installed, False forces numpy, True
    requires OpenCV. ``out``: a uint8 [height, width, C] buffer OpenCV
    writes into (reused by ``preprocess``'s scratch).
    """
    if image.shape[:2] == (height, width):
        return image if image.dtype == np.uint8 else image.astype(np.float32)
    cv2 = _opencv() if opencv is not False else None
    if opencv and cv2 is None:
        raise RuntimeError("OpenCV is not installed; install it with: pip install 'ssdkit[camera]'")
    if cv2 is None:
        return _resize_numpy(image, height, width)
    src = image if image.dtype == np.uint8 else image.astype(np.float32)
    if out is not None and src.dtype == np.uint8:
        return cv2.resize(np.ascontiguousarray(src), (width, height), dst=out, interpolation=cv2.INTER_LINEAR)
    return cv2.resize(np.ascontiguousarray(src), (width, height), interpolation=cv2.INTER_LINEAR)


@functools.cache
def _opencv():
    try:
        import cv2
    except ImportError:
        return None
    return cv2


@functools.lru_cache(maxsize=32)
def _taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index along one axis: the two source indices and the weight
    of the second. Positions outside the image clamp to the edge, as OpenCV."""
    pos = np.clip((np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5, 0.0, src - 1)
    low = np.floor(pos).astype(np.intp)
    return low, np.minimum(low + 1, src - 1), (pos - low).astype(np.float32)


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """a + (b - a) * t in float32; ``a`` and ``b`` are fresh gathers, so ``b`` is reused in place."""
    a = a.astype(np.float32, copy=False)
    b = b.astype(np.float32, copy=False)
    b -= a
    b *= t
    b += a
    return b


def _resize_numpy(image: np.ndarray, height: int, width: int) -> np.ndarray:
    src_h, src_w, channels = image.shape
    y0, y1, wy = _taps(src_h, height)
    x0, x1, wx = _taps(src_w, width)
    # Separable, on [rows, columns * channels] views: whole-row gathers are
    # memory copies, and both passes broadcast one weight vector. The first
    # pass runs on the axis that leaves the smaller intermediate.
    flat = image.reshape(src_h, src_w * channels)
    offsets = np.arange(channels)
    left, right = (x0[:, None] * channels + offsets).ravel(), (x1[:, None] * channels + offsets).ravel()
    wxc = np.repeat(wx, channels)
    if height * src_w <= src_h * width:
        rows = _lerp(flat[y0], flat[y1], wy[:, None])
        out = _lerp(np.take(rows, left, axis=1), np.take(rows, right, axis=1), wxc)
    else:
        columns = _lerp(np.take(flat, left, axis=1), np.take(flat, right, axis=1), wxc)
        out = _lerp(columns[y0], columns[y1], wy[:, None])
    out = out.reshape(height, width, channels)
    if image.dtype != np.uint8:
        return out
    out += 0.5  # non-negative, so truncation rounds half up
    return out.astype(np.uint8)
