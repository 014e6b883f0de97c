"""The model spec: everything besides the weights that turns a network's raw
outputs into detections.

One ``ModelSpec`` is defined per zoo model (``ssdkit.convert.zoo``) and written
into every artifact exported from it (SavedModel ``assets.extra``, TFLite
metadata, ONNX ``metadata_props``); the runtime reads it back, so no
anchors, scales, normalization or labels are ever copied by hand. A spec is
plain JSON (see ``to_json``) so that the runtime can read it without TensorFlow.

``build`` turns JSON into any of these dataclasses with every field checked
against its type: the one builder for ssdkit's own specs, third-party specs
(``detector_spec.py``) and checkpoints.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np

from . import anchors as anchor_math
from .box_coder import SSD_SCALES
from .roles import OutputRoles

SPEC_VERSION = 1


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB uint8 image becomes the network input.

    The network sees ``(pixel - mean) / std`` per channel in ``color_order``;
    for MobileNets mean = std = 127.5 maps [0, 255] to [-1, 1].
    """

    input_height: int
    input_width: int
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    color_order: Literal["RGB", "BGR"] = "RGB"
    resize: Literal["stretch", "letterbox"] = "stretch"


@dataclass(frozen=True)
class MultipleGridAnchors:
    """OD API ``ssd_anchor_generator`` (SSD's multiple-grid anchors)."""

    num_layers: int = 6
    min_scale: float = 0.2
    max_scale: float = 0.95
    scales: tuple[float, ...] = ()
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 0.3333)
    interpolated_scale_aspect_ratio: float = 1.0
    base_anchor_size: tuple[float, float] = (1.0, 1.0)
    reduce_boxes_in_lowest_layer: bool = True
    kind: Literal["multiple_grid"] = "multiple_grid"

    def box_specs(self) -> list[list[tuple[float, float]]]:
        return anchor_math.ssd_box_specs(
            self.num_layers, self.min_scale, self.max_scale, self.scales, self.aspect_ratios,
            self.interpolated_scale_aspect_ratio, self.reduce_boxes_in_lowest_layer,
        )

    def per_location(self) -> list[int]:
        return [len(specs) for specs in self.box_specs()]

    def generate(self, feature_map_shapes, im_height: int, im_width: int) -> np.ndarray:
        return anchor_math.multiple_grid_anchors(
            self.box_specs(), feature_map_shapes, self.base_anchor_size,
            im_height=im_height, im_width=im_width,
        )


@dataclass(frozen=True)
class MultiscaleGridAnchors:
    """OD API ``multiscale_anchor_generator`` (FPN levels min_level..max_level)."""

    min_level: int = 3
    max_level: int = 7
    anchor_scale: float = 4.0
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5)
    scales_per_octave: int = 2
    kind: Literal["multiscale_grid"] = "multiscale_grid"

    def per_location(self) -> list[int]:
        return [len(self.aspect_ratios) * self.scales_per_octave] * (self.max_level - self.min_level + 1)

    def generate(self, feature_map_shapes, im_height: int, im_width: int) -> np.ndarray:
        return anchor_math.multiscale_grid_anchors(
            feature_map_shapes, im_height, im_width, self.min_level, self.max_level,
            self.anchor_scale, self.aspect_ratios, self.scales_per_octave,
        )


AnchorGenerator = Union[MultipleGridAnchors, MultiscaleGridAnchors]


@dataclass(frozen=True)
class BoxCoder:
    """Faster R-CNN box coder: encodings are (ty, tx, th, tw) times ``scales``."""

    scales: tuple[float, float, float, float] = SSD_SCALES


@dataclass(frozen=True)
class PostProcessing:
    """Defaults of the detection postprocessing a model was configured with.

    The NMS defaults are the OD API's SSD configs' (score 1e-8, IoU 0.6, 100
    detections, 100 per class), those of third-party specs too (``Nms``).
    """

    score_activation: Literal["sigmoid", "softmax"] = "sigmoid"
    score_threshold: float = 1e-8
    iou_threshold: float = 0.6
    max_detections: int = 100
    detections_per_class: int = 100


@dataclass(frozen=True)
class ModelSpec:
    """One model's single source of truth for input, anchors, coder and labels.

    ``labels`` are the class names without the background class; the network
    predicts ``len(labels) + 1`` scores per anchor, column 0 the background.
    ``feature_map_shapes`` are the (height, width) of the predictor's feature
    maps at this input size, in the order the predictions are concatenated.
    """

    name: str
    preprocessing: Preprocessing
    anchors: AnchorGenerator
    feature_map_shapes: tuple[tuple[int, int], ...]
    labels: tuple[str, ...]
    box_coder: BoxCoder = field(default_factory=BoxCoder)
    postprocessing: PostProcessing = field(default_factory=PostProcessing)
    outputs: Optional[OutputRoles] = None  # set in exported files, not in the zoo

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.preprocessing.input_height, self.preprocessing.input_width)

    def anchor_corners(self) -> np.ndarray:
        """[A, 4] normalized (ymin, xmin, ymax, xmax), in prediction order."""
        return self.anchors.generate(list(self.feature_map_shapes), *self.input_size)

    def anchors_center_size(self) -> np.ndarray:
        """[A, 4] normalized (ycenter, xcenter, h, w) as TFLite's NMS op takes them."""
        return anchor_math.corners_to_center_size(self.anchor_corners()).astype(np.float32)

    @property
    def num_anchors(self) -> int:
        return sum(h * w * k for (h, w), k in zip(self.feature_map_shapes, self.anchors.per_location()))

    def to_dict(self) -> dict[str, Any]:
        return {"ssdkit_spec_version": SPEC_VERSION, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        """The spec ``to_dict`` wrote; a wrong type or an unknown field is a ValueError naming the field."""
        if not isinstance(data, dict):
            raise ValueError(f"a model spec is a JSON object, not {_shown(data)}")
        version = data.get("ssdkit_spec_version")
        if version != SPEC_VERSION:
            raise ValueError(f"model spec version {version!r} is not supported, expected {SPEC_VERSION}")
        return build(cls, {key: value for key, value in data.items() if key != "ssdkit_spec_version"})

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        return cls.from_dict(json.loads(text))


def build(cls, values: Any, where: str = ""):
    """The frozen dataclass ``cls`` from a JSON object, every field checked
    against its type hint: bool, int (not 8.5, not "8"), float (finite), str,
    a ``Literal``'s values, ``Path``, tuples (from JSON lists), ``Optional``,
    nested dataclasses, and unions of dataclasses told apart by their
    ``kind``. Unknown and missing fields are errors. Every error is one
    ``ValueError`` naming the field by its path (``where``, e.g. "nms" gives
    "nms.iou_threshold is "0.5", expected a number"). Ranges are the
    caller's to check: types say what a field is, not what it may be."""
    if not isinstance(values, dict):
        raise ValueError(f"{where or 'the spec'} is {_shown(values)}, expected an object")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown {where + ' ' if where else ''}field(s) {unknown}, expected some of {sorted(fields)}")
    given = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name in values:
            given[name] = json_value(hints[name], values[name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{path} is missing")
    return cls(**given)


_UNIONS = (Union, types.UnionType)  # Optional[int] and int | None


def json_value(hint, value: Any, path: str):
    """``value`` as type ``hint`` (lists become tuples), or a ValueError naming ``path``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path)
    if origin in _UNIONS:
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return json_value(options[0], value, path)
        kinds = {_kind(a): a for a in options if dataclasses.is_dataclass(a)}
        if len(kinds) == len(options) and dataclasses.MISSING not in kinds:  # dataclasses told apart by "kind"
            kind = value.get("kind") if isinstance(value, dict) else None
            if kind not in kinds:
                raise ValueError(f"{path}.kind is {_shown(kind)}, expected one of {', '.join(map(repr, kinds))}")
            return build(kinds[kind], value, path)
        for option in options:
            try:
                return json_value(option, value, path)
            except ValueError:
                continue
        raise ValueError(f"{path} is {_shown(value)}, expected {_described(hint)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{path} is {_shown(value)}, expected {_described(hint)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(json_value(args[0], item, f"{path}[{i}]") for i, item in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{path} is {_shown(value)}, expected {_described(hint)}")
        return tuple(json_value(a, item, f"{path}[{i}]") for i, (a, item) in enumerate(zip(args, value)))
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        str: isinstance(value, str),
        Path: isinstance(value, str) and bool(value),
    }
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
    elif hint in ok:
        if ok[hint]:
            return float(value) if hint is float else Path(value) if hint is Path else value
    else:
        raise TypeError(f"{path}: no JSON rule for the type {hint!r}")
    raise ValueError(f"{path} is {_shown(value)}, expected {_described(hint)}")


def _kind(cls):
    """The default of a dataclass's ``kind`` field (``dataclasses.MISSING`` without one)."""
    return next((f.default for f in dataclasses.fields(cls) if f.name == "kind"), dataclasses.MISSING)


def _described(hint) -> str:
    """What a value of type ``hint`` looks like in JSON, for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin in _UNIONS:
        return " or ".join("null" if a is type(None) else _described(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        if len(set(args)) == 1:
            return f"a list of {len(args)} {_plural(args[0])}"
        return f"a list of {len(args)} values"
    if dataclasses.is_dataclass(hint):
        return "an object"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            Path: "a file name"}.get(hint, str(hint))


def _plural(hint) -> str:
    described = _described(hint)
    for article in ("an ", "a "):
        if described.startswith(article):
            return described[len(article):] + "s"
    return described


def _shown(value: Any, limit: int = 60) -> str:
    """``value`` as JSON, shortened: how the user wrote it."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
