"""Anchor generators of the TF Object Detection API, in numpy.

Every function returns anchors as corners ``[N, 4]`` = (ymin, xmin, ymax, xmax)
in the order the OD API produces them: feature map, then row, then column,
then box spec (the spec varies fastest). The box predictor reshapes its
outputs in the same order, so anchor ``i`` and prediction ``i`` belong together.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

Pair = tuple[float, float]


def tile_anchors(
    grid_height: int,
    grid_width: int,
    scales: Sequence[float],
    aspect_ratios: Sequence[float],
    base_anchor_size: Pair,
    anchor_stride: Pair,
    anchor_offset: Pair,
) -> np.ndarray:
    """Places one box per (scale, aspect ratio) pair at every cell of a grid.

    ``scales`` and ``aspect_ratios`` are paired element-wise. A box of scale s
    and aspect ratio a has height ``s / sqrt(a) * base_h`` and width
    ``s * sqrt(a) * base_w``; cell (i, j) is centred at
    ``offset + (i, j) * stride``.
    """
    scales = np.asarray(scales, np.float64)
    ratio_sqrts = np.sqrt(np.asarray(aspect_ratios, np.float64))
    heights = scales / ratio_sqrts * base_anchor_size[0]
    widths = scales * ratio_sqrts * base_anchor_size[1]
    y_centers = np.arange(grid_height) * anchor_stride[0] + anchor_offset[0]
    x_centers = np.arange(grid_width) * anchor_stride[1] + anchor_offset[1]
    # [H, W, K] grids, K (the box spec) varying fastest.
    yc = np.broadcast_to(y_centers[:, None, None], (grid_height, grid_width, len(scales)))
    xc = np.broadcast_to(x_centers[None, :, None], yc.shape)
    h = np.broadcast_to(heights[None, None, :], yc.shape)
    w = np.broadcast_to(widths[None, None, :], yc.shape)
    corners = np.stack([yc - 0.5 * h, xc - 0.5 * w, yc + 0.5 * h, xc + 0.5 * w], axis=-1)
    return corners.reshape(-1, 4)


def ssd_box_specs(
    num_layers: int = 6,
    min_scale: float = 0.2,
    max_scale: float = 0.95,
    scales: Sequence[float] = (),
    aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5, 3.0, 0.3333),
    interpolated_scale_aspect_ratio: float = 1.0,
    reduce_boxes_in_lowest_layer: bool = True,
) -> list[list[Pair]]:
    """The (scale, aspect ratio) box specs of OD API ``create_ssd_anchors``.

    Scales are spaced linearly from min_scale to max_scale over the layers
    unless given; each layer also gets one box of the geometric mean of its
    scale and the next (1.0 after the last). The lowest layer, when reduced,
    holds only three boxes: (0.1, 1), (s, 2) and (s, 0.5).
    """
    if scales:
        layer_scales = list(scales) + [1.0]
    else:
        layer_scales = [
            min_scale + (max_scale - min_scale) * i / (num_layers - 1) for i in range(num_layers)
        ] + [1.0]
    if len(layer_scales) != num_layers + 1:
        raise ValueError(f"{len(layer_scales) - 1} anchor scales given, expected num_layers={num_layers}")
    specs = []
    for layer in range(num_layers):
        scale, scale_next = layer_scales[layer], layer_scales[layer + 1]
        if layer == 0 and reduce_boxes_in_lowest_layer:
            specs.append([(0.1, 1.0), (scale, 2.0), (scale, 0.5)])
            continue
        layer_specs = [(scale, ratio) for ratio in aspect_ratios]
        if interpolated_scale_aspect_ratio > 0.0:
            layer_specs.append((float(np.sqrt(scale * scale_next)), interpolated_scale_aspect_ratio))
        specs.append(layer_specs)
    return specs


def multiple_grid_anchors(
    box_specs: Sequence[Sequence[Pair]],
    feature_map_shapes: Sequence[tuple[int, int]],
    base_anchor_size: Pair = (1.0, 1.0),
    anchor_strides: Sequence[Pair] | None = None,
    anchor_offsets: Sequence[Pair] | None = None,
    im_height: float = 1.0,
    im_width: float = 1.0,
) -> np.ndarray:
    """OD API ``MultipleGridAnchorGenerator.generate`` (no clip window).

    Without strides, a grid of n cells has stride 1/n and offset stride/2, so
    anchors come out normalized. Given strides and offsets are in pixels and
    divided by the image size. The base anchor size is normalized to the
    shorter image side so that square anchors stay square on non-square inputs.
    """
    if len(box_specs) != len(feature_map_shapes):
        raise ValueError(
            f"{len(feature_map_shapes)} feature maps given, expected {len(box_specs)} (one per box spec list)"
        )
    for name, arg in (("anchor_strides", anchor_strides), ("anchor_offsets", anchor_offsets)):
        if arg and len(arg) != len(box_specs):
            raise ValueError(f"{name} has {len(arg)} entries, expected {len(box_specs)}")
    min_side = min(im_height, im_width)
    base = (min_side / im_height * base_anchor_size[0], min_side / im_width * base_anchor_size[1])
    grids = []
    for i, (specs, (grid_h, grid_w)) in enumerate(zip(box_specs, feature_map_shapes)):
        if anchor_strides:
            stride = (anchor_strides[i][0] / im_height, anchor_strides[i][1] / im_width)
        else:
            stride = (1.0 / grid_h, 1.0 / grid_w)
        if anchor_offsets:
            offset = (anchor_offsets[i][0] / im_height, anchor_offsets[i][1] / im_width)
        else:
            offset = (0.5 * stride[0], 0.5 * stride[1])
        scales, ratios = zip(*specs)
        grids.append(tile_anchors(grid_h, grid_w, scales, ratios, base, stride, offset))
    return np.concatenate(grids, axis=0)


def grid_anchors(
    feature_map_shape: tuple[int, int],
    scales: Sequence[float],
    aspect_ratios: Sequence[float],
    base_anchor_size: Pair = (256.0, 256.0),
    anchor_stride: Pair = (16.0, 16.0),
    anchor_offset: Pair = (0.0, 0.0),
) -> np.ndarray:
    """OD API ``GridAnchorGenerator``: every aspect ratio with every scale.

    The order is aspect-ratio-major (all scales of the first ratio first).
    """
    ratio_grid, scale_grid = np.meshgrid(aspect_ratios, scales, indexing="ij")
    return tile_anchors(
        feature_map_shape[0], feature_map_shape[1], scale_grid.ravel(), ratio_grid.ravel(),
        base_anchor_size, anchor_stride, anchor_offset,
    )


def multiscale_grid_anchors(
    feature_map_shapes: Sequence[tuple[int, int]],
    im_height: int,
    im_width: int,
    min_level: int = 3,
    max_level: int = 7,
    anchor_scale: float = 4.0,
    aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5),
    scales_per_octave: int = 2,
    normalize_coordinates: bool = True,
) -> np.ndarray:
    """OD API ``MultiscaleGridAnchorGenerator`` (RetinaNet / FPN anchors).

    Level l has stride 2**l and base size anchor_scale * 2**l. Anchors are
    offset by half a stride only along an image side divisible by 2**l (or of
    size 1): at 320x320 the level-7 grid is *not* offset, as in the OD API.
    """
    num_levels = max_level - min_level + 1
    if len(feature_map_shapes) != num_levels:
        raise ValueError(f"{len(feature_map_shapes)} feature maps given, expected {num_levels} (levels {min_level}-{max_level})")
    if normalize_coordinates and (im_height == 1 or im_width == 1):
        raise ValueError("Normalized coordinates need the image size, got im_height/im_width of 1")
    octave_scales = [2.0 ** (i / scales_per_octave) for i in range(scales_per_octave)]
    grids = []
    for level, shape in zip(range(min_level, max_level + 1), feature_map_shapes):
        stride = float(2**level)
        offset = (
            stride / 2.0 if im_height % stride == 0 or im_height == 1 else 0.0,
            stride / 2.0 if im_width % stride == 0 or im_width == 1 else 0.0,
        )
        base = stride * anchor_scale
        grid = grid_anchors(shape, octave_scales, aspect_ratios, (base, base), (stride, stride), offset)
        if normalize_coordinates:
            grid = grid / np.array([im_height, im_width, im_height, im_width], np.float64)
        grids.append(grid)
    return np.concatenate(grids, axis=0)


def corners_to_center_size(corners: np.ndarray) -> np.ndarray:
    """(ymin, xmin, ymax, xmax) -> (ycenter, xcenter, height, width), the
    anchor layout TFLite's detection postprocess op expects."""
    ymin, xmin, ymax, xmax = np.moveaxis(np.asarray(corners), -1, 0)
    return np.stack([(ymin + ymax) / 2, (xmin + xmax) / 2, ymax - ymin, xmax - xmin], axis=-1)
