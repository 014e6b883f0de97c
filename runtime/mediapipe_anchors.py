"""MediaPipe's ``SsdAnchorsCalculator`` in numpy (BlazeFace, palm, pose detectors).

Same options, defaults and arithmetic as mediapipe/calculators/tflite/
ssd_anchors_calculator.cc (its non-multiscale path; FPN-style multiscale
anchors are the OD API's ``multiscale_grid`` in ``spec.py``):

- layer ``i`` has scale ``min + (max - min) * i / (n - 1)`` (their mean when
  n = 1), n = the number of strides;
- consecutive layers with the same stride are merged: their anchors share
  the first layer's grid and come out together at each location;
- each layer adds one anchor per aspect ratio, plus (when
  ``interpolated_scale_aspect_ratio`` > 0) one of scale
  ``sqrt(scale * next_scale)`` (next_scale = 1 after the last layer); with
  ``reduce_boxes_in_lowest_layer`` layer 0 has (0.1, 1), (scale, 2), (scale, 0.5);
- a grid is ``ceil(input / stride)`` cells unless ``feature_map_*`` give it;
  centres are ``(x + anchor_offset_x) / grid_width``;
- with ``fixed_anchor_size`` every anchor is 1 x 1: the model predicts box
  sizes in pixels (BlazeFace), not relative to the anchor.

Arithmetic is float32 as in the C++ (the scale formula in double, rounded).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class MediaPipeSsdAnchors:
    """``SsdAnchorsCalculatorOptions`` (ssd_anchors_calculator.proto field names)."""

    input_size_height: int
    input_size_width: int
    min_scale: float
    max_scale: float
    num_layers: int
    strides: tuple[int, ...]
    aspect_ratios: tuple[float, ...] = (1.0,)
    feature_map_height: tuple[int, ...] = ()
    feature_map_width: tuple[int, ...] = ()
    anchor_offset_x: float = 0.5
    anchor_offset_y: float = 0.5
    reduce_boxes_in_lowest_layer: bool = False
    interpolated_scale_aspect_ratio: float = 1.0
    fixed_anchor_size: bool = False
    kind: Literal["mediapipe_ssd"] = "mediapipe_ssd"

    def __post_init__(self):
        # MediaPipe CHECK-fails (or, with feature maps but no strides, loops
        # forever); a clear error instead, in the spec file's field names.
        if len(self.strides) != self.num_layers:
            raise ValueError(f"anchors.strides is {list(self.strides)}, expected {self.num_layers} strides "
                             f"(one per layer: num_layers is {self.num_layers})")
        if self.feature_map_height or self.feature_map_width:
            if not len(self.feature_map_height) == len(self.feature_map_width) == self.num_layers:
                raise ValueError(f"anchors.feature_map_height/width are {list(self.feature_map_height)} and "
                                 f"{list(self.feature_map_width)}, expected {self.num_layers} values each")
        if not self.aspect_ratios and self.interpolated_scale_aspect_ratio <= 0:
            raise ValueError("anchors.aspect_ratios is [] and interpolated_scale_aspect_ratio is not positive, "
                             "expected one of them (else there are no anchors)")

    def _scale(self, index: int) -> np.float32:
        lo, hi, n = np.float32(self.min_scale), np.float32(self.max_scale), len(self.strides)
        if n == 1:
            return (lo + hi) * np.float32(0.5)
        return np.float32(float(lo) + float(hi - lo) * index / (n - 1.0))

    def _grid(self, layer: int) -> tuple[int, int]:
        if self.feature_map_height:
            return self.feature_map_height[layer], self.feature_map_width[layer]
        stride = self.strides[layer]
        return math.ceil(self.input_size_height / stride), math.ceil(self.input_size_width / stride)

    def center_size(self) -> np.ndarray:
        """[A, 4] float32 (ycenter, xcenter, h, w), normalized, in the model's prediction order."""
        blocks = []
        layer = 0
        while layer < self.num_layers:
            scales: list[np.float32] = []
            ratios: list[np.float32] = []
            last = layer
            while last < self.num_layers and self.strides[last] == self.strides[layer]:
                scale = self._scale(last)
                if last == 0 and self.reduce_boxes_in_lowest_layer:
                    ratios += [np.float32(1.0), np.float32(2.0), np.float32(0.5)]
                    scales += [np.float32(0.1), scale, scale]
                else:
                    ratios += [np.float32(r) for r in self.aspect_ratios]
                    scales += [scale] * len(self.aspect_ratios)
                    if self.interpolated_scale_aspect_ratio > 0:
                        following = np.float32(1.0) if last == self.num_layers - 1 else self._scale(last + 1)
                        scales.append(np.sqrt(scale * following))
                        ratios.append(np.float32(self.interpolated_scale_aspect_ratio))
                last += 1
            ratio_sqrts = np.sqrt(np.asarray(ratios, np.float32))
            heights = np.asarray(scales, np.float32) / ratio_sqrts
            widths = np.asarray(scales, np.float32) * ratio_sqrts
            if self.fixed_anchor_size:
                heights, widths = np.ones_like(heights), np.ones_like(widths)
            grid_h, grid_w = self._grid(layer)
            yc = (np.arange(grid_h, dtype=np.float32) + np.float32(self.anchor_offset_y)) / np.float32(grid_h)
            xc = (np.arange(grid_w, dtype=np.float32) + np.float32(self.anchor_offset_x)) / np.float32(grid_w)
            k = len(scales)
            block = np.empty((grid_h, grid_w, k, 4), np.float32)  # row, column, anchor: MediaPipe's loop order
            block[..., 0] = yc[:, None, None]
            block[..., 1] = xc[None, :, None]
            block[..., 2] = heights
            block[..., 3] = widths
            blocks.append(block.reshape(-1, 4))
            layer = last
        return np.concatenate(blocks)
