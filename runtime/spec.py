"""The model spec: everything besides the weights that turns a network's raw
outputs into detections.

One ``ModelSpec`` is defined per zoo model (``ssdkit.convert.zoo``) and written
into every artifact exported from it (SavedModel ``assets.extra``, TFLite
metadata, ONNX ``metadata_props``); the runtime reads it back, so no
anchors, scales, normalization or labels are ever copied by hand. A spec is
plain JSON (see ``to_json``) so that the runtime can read it without TensorFlow.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import numpy as np

from . import anchors as anchor_math
from .box_coder import SSD_SCALES

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
_ANCHOR_KINDS = {cls.kind: cls for cls in (MultipleGridAnchors, MultiscaleGridAnchors)}


@dataclass(frozen=True)
class BoxCoder:
    """Faster R-CNN box coder: encodings are (ty, tx, th, tw) times ``scales``."""

    scales: tuple[float, float, float, float] = SSD_SCALES


@dataclass(frozen=True)
class PostProcessing:
    """Defaults of the detection postprocessing a model was configured with."""

    score_activation: Literal["sigmoid", "softmax"] = "sigmoid"
    score_threshold: float = 1e-8
    iou_threshold: float = 0.6
    max_detections: int = 100
    detections_per_class: int = 100


@dataclass(frozen=True)
class OutputRoles:
    """Which output tensor of an exported file plays which role.

    ``kind`` is ``"raw"`` (roles ``box_encodings`` and ``class_predictions``;
    ``scores_activated`` says whether the class outputs are already scores) or
    ``"detections"`` (``detection_boxes``, ``detection_classes``,
    ``detection_scores``, ``num_detections``, as TFLite's postprocess op emits).
    ``names`` pairs each role with the tensor name in the file.
    """

    kind: Literal["raw", "detections"]
    names: tuple[tuple[str, str], ...]
    scores_activated: bool = False

    def name_of(self, role: str) -> str:
        return dict(self.names)[role]


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
    outputs: OutputRoles | None = None  # set in exported files, not in the zoo

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
        version = data.get("ssdkit_spec_version")
        if version != SPEC_VERSION:
            raise ValueError(f"model spec version {version!r} is not supported, expected {SPEC_VERSION}")
        anchors = dict(data["anchors"])
        kind = anchors.get("kind")
        if kind not in _ANCHOR_KINDS:
            raise ValueError(f"unknown anchor generator kind {kind!r}, expected one of {sorted(_ANCHOR_KINDS)}")
        return cls(
            name=data["name"],
            preprocessing=_build(Preprocessing, data["preprocessing"]),
            anchors=_build(_ANCHOR_KINDS[kind], anchors),
            feature_map_shapes=tuple(tuple(int(v) for v in s) for s in data["feature_map_shapes"]),
            labels=tuple(data["labels"]),
            box_coder=_build(BoxCoder, data.get("box_coder", {})),
            postprocessing=_build(PostProcessing, data.get("postprocessing", {})),
            outputs=_build(OutputRoles, data["outputs"]) if data.get("outputs") else None,
        )

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        return cls.from_dict(json.loads(text))


def _build(cls, values: dict[str, Any]):
    """Builds a frozen dataclass from JSON values, lists turned back into tuples."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {sorted(unknown)}, expected some of {sorted(names)}")
    return cls(**{k: _tuples(v) for k, v in values.items()})


def _tuples(value):
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
