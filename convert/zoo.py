"""The model zoo: each SSD-MobileNet variant's architecture and spec.

The reference configurations are the TF Object Detection API's published
pipeline configs (``ssd_mobilenet_v1_coco``, ``ssd_mobilenet_v2_coco``,
``ssdlite_mobilenet_v2_coco``, ``ssdlite_mobilenet_v3_{small,large}_320x320``,
``ssd_mobilenet_v2_fpnlite_320x320``). This module needs no TensorFlow, so
``ssdkit models`` can list the zoo and the runtime can trust the specs.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Literal

from ssdkit.runtime import limits
from ssdkit.runtime.limits import MAX_INPUT_SIDE, MIN_INPUT_SIDE
from ssdkit.runtime.spec import (ModelSpec, MultipleGridAnchors, MultiscaleGridAnchors, PostProcessing, Preprocessing,
                                 build, json_value)

Backbone = Literal["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"]


@dataclass(frozen=True)
class Architecture:
    """How a zoo model's network is put together (read by ``convert.models``).

    ``feature_maps`` is ``"ssd"`` (two backbone endpoints at strides 16 and
    32, then ``extra_depths`` stride-2 layers) or ``"fpn"`` (FPN-lite on
    strides 8-32, then stride-2 layers up to ``fpn_max_level``). ``head`` is
    the OD API box predictor: ``"conv"`` (one conv per map), ``"separable"``
    (SSDLite: depthwise 3x3 + pointwise) or ``"weight_shared"`` (the FPN
    models' separable tower shared across levels).
    """

    backbone: Backbone
    feature_maps: Literal["ssd", "fpn"]
    head: Literal["conv", "separable", "weight_shared"]
    extra_depths: tuple[int, ...] = (512, 256, 256, 128)
    separable_extra_layers: bool = False
    head_kernel_size: int = 1
    fpn_min_level: int = 3
    fpn_max_level: int = 7
    fpn_depth: int = 128
    tower_layers: int = 4
    class_bias_init: float = 0.0
    min_depth: int = 16
    classification_loss: Literal["sigmoid_hard_negatives", "sigmoid_focal"] = "sigmoid_hard_negatives"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0

    @property
    def size_multiple(self) -> int:
        """Input sides must be a multiple of this: FPN-lite adds an upsampled
        coarse map to the next finer one, so every backbone level must halve exactly."""
        return 2 ** min(self.fpn_max_level, 5) if self.feature_maps == "fpn" else 1


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    architecture: Architecture
    input_size: int
    anchors: MultipleGridAnchors | MultiscaleGridAnchors


DEFAULT_MODEL = "ssd_mnv2"  # what export and train build without --model or a checkpoint

_SSD_ANCHORS = MultipleGridAnchors()  # min 0.2, max 0.95, ratios 1, 2, 1/2, 3, 1/3

ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry(
            "ssd_mnv1", "SSD MobileNetV1 1.0, conv box predictor",
            Architecture("mobilenet_v1", "ssd", "conv"), 300, _SSD_ANCHORS,
        ),
        ZooEntry(
            "ssd_mnv2", "SSD MobileNetV2 1.0, conv box predictor",
            Architecture("mobilenet_v2", "ssd", "conv"), 300, _SSD_ANCHORS,
        ),
        ZooEntry(
            "ssdlite_mnv2", "SSDLite MobileNetV2 1.0, depthwise-separable extra layers and predictor",
            Architecture("mobilenet_v2", "ssd", "separable", separable_extra_layers=True, head_kernel_size=3),
            300, _SSD_ANCHORS,
        ),
        ZooEntry(
            "ssdlite_mnv3_small", "SSDLite MobileNetV3-Small",
            Architecture(
                "mobilenet_v3_small", "ssd", "separable", separable_extra_layers=True,
                head_kernel_size=3, classification_loss="sigmoid_focal", focal_alpha=0.75,
            ),
            320, _SSD_ANCHORS,
        ),
        ZooEntry(
            "ssdlite_mnv3_large", "SSDLite MobileNetV3-Large",
            Architecture(
                "mobilenet_v3_large", "ssd", "separable", separable_extra_layers=True,
                head_kernel_size=3, classification_loss="sigmoid_focal", focal_alpha=0.75,
            ),
            320, _SSD_ANCHORS,
        ),
        ZooEntry(
            "ssd_mnv2_fpnlite", "SSD MobileNetV2 FPN-lite, weight-shared separable head",
            Architecture(
                "mobilenet_v2", "fpn", "weight_shared", separable_extra_layers=True, head_kernel_size=3,
                class_bias_init=-4.6, classification_loss="sigmoid_focal",
            ),
            320, MultiscaleGridAnchors(),
        ),
    )
}


def coco_labels() -> tuple[str, ...]:
    """The 90 COCO category slots (ids 1-90; unused ids are named "???")."""
    text = resources.files("ssdkit.convert").joinpath("data/coco_labels.txt").read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def zoo_costs() -> dict[str, dict[str, int]]:
    """Parameters and multiply-adds of one image per zoo model (default input
    size and width, 90 classes), measured once by ``tools/zoo_costs.py``."""
    return json.loads(resources.files("ssdkit.convert").joinpath("data/zoo_costs.json").read_text())


# Checkpoints shipped in convert/weights/ (see its README.md: recipe and scores).
SHIPPED_WEIGHTS = {"ssd_mnv2": "ssd_mnv2_shapes.npz"}


def uses_shipped_weights(name: str, weights: str | None, customised: bool) -> bool:
    """Whether ``--weights`` (a path, "none", or "auto"/None) means the demo
    checkpoint shipped for ``name``: "auto" on a network that is not customised."""
    return weights in (None, "auto") and not customised and name in SHIPPED_WEIGHTS


def shipped_weights(name: str) -> Traversable | None:
    """The demo checkpoint shipped for zoo model ``name``, or None."""
    if name not in SHIPPED_WEIGHTS:
        return None
    path = resources.files("ssdkit.convert").joinpath(f"weights/{SHIPPED_WEIGHTS[name]}")
    if not path.is_file():
        raise RuntimeError(f"the shipped weights of {name} ({path}) are missing from this install; "
                           "reinstall ssdkit or pass --weights none")
    return path


def get_entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; the zoo has: {', '.join(ZOO)}")
    return ZOO[name]


def feature_map_shapes(arch: Architecture, height: int, width: int) -> tuple[tuple[int, int], ...]:
    """Predictor feature-map sizes; every stride-2 layer pads SAME, i.e. ceil(n / 2)."""

    def halve(side: int, times: int) -> int:
        for _ in range(times):
            side = math.ceil(side / 2)
        return side

    if arch.feature_maps == "ssd":
        strides_log2 = [4, 5] + [5 + i + 1 for i in range(len(arch.extra_depths))]
    else:
        strides_log2 = list(range(arch.fpn_min_level, arch.fpn_max_level + 1))
    return tuple((halve(height, s), halve(width, s)) for s in strides_log2)


@dataclass(frozen=True)
class ModelDefinition:
    """Everything that rebuilds a network and turns its outputs into
    detections: the ``architecture``, the ``width`` multiplier and the
    ``spec`` (input size and normalization, anchors and the feature maps they
    sit on, box coder, labels, NMS settings).

    A version 2 checkpoint records it beside the weights, so ``ssdkit export
    --weights CKPT`` and ``ssdkit train --weights CKPT`` need no ``--model``.
    Zoo models get theirs from ``ModelConfig.definition()``; an importer (the
    TF OD API's pipeline configs) builds one from what it read, including an
    architecture or anchors the zoo does not have.
    """

    architecture: Architecture
    width: float
    spec: ModelSpec

    @property
    def name(self) -> str:
        return self.spec.name

    def to_dict(self) -> dict:
        return {"architecture": dataclasses.asdict(self.architecture), "width": self.width,
                "spec": self.spec.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelDefinition":
        """The definition ``to_dict`` wrote; a ValueError names a field of the wrong type."""
        if not isinstance(data, dict):
            raise ValueError(f"the model definition is {type(data).__name__}, expected an object")
        if not {"architecture", "width", "spec"} <= set(data):
            raise ValueError(f"the model definition has {sorted(data)}, expected architecture, width and spec")
        width = json_value(float, data["width"], "model.width")
        if not width > 0:
            raise ValueError(f"model.width is {width}, expected a positive number")
        return cls(build(Architecture, data["architecture"], "model.architecture"), width,
                   ModelSpec.from_dict(data["spec"]))


@dataclass(frozen=True)
class ModelConfig:
    """A zoo model and the options every model takes: what the command line
    asks for. ``definition()`` resolves it; version 1 checkpoints stored it."""

    model: str
    width: float = 1.0
    input_size: tuple[int, int] | None = None  # (height, width); None: the zoo default
    labels: tuple[str, ...] | None = None  # None: the 90 COCO slots

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def definition(self) -> ModelDefinition:
        """The zoo entry's architecture at this width, with its validated spec."""
        return ModelDefinition(get_entry(self.model).architecture, self.width, model_spec(self))

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        size = data.get("input_size")
        labels = data.get("labels")
        return cls(
            model=data["model"], width=float(data.get("width", 1.0)),
            input_size=tuple(size) if size else None, labels=tuple(labels) if labels else None,
        )


def model_spec(config: ModelConfig) -> ModelSpec:
    """The spec of a zoo model with the given options, validated."""
    entry = get_entry(config.model)
    arch = entry.architecture
    height, width = config.input_size or (entry.input_size, entry.input_size)
    multiple = arch.size_multiple
    for side in (height, width):
        if not MIN_INPUT_SIDE <= side <= MAX_INPUT_SIDE or side % multiple:
            hint = (f"a multiple of {multiple} " if multiple > 1 else "") + f"from {MIN_INPUT_SIDE} to {MAX_INPUT_SIDE}"
            raise ValueError(f"input size {height}x{width} is not supported by {entry.name}: each side must be {hint}")
    limits.check(width=config.width)
    labels = config.labels if config.labels is not None else coco_labels()
    if not labels:
        raise ValueError("a model needs at least one class label")
    limits.check(num_classes=len(labels))
    return ModelSpec(
        name=entry.name,
        preprocessing=Preprocessing(input_height=height, input_width=width),
        anchors=entry.anchors,
        feature_map_shapes=feature_map_shapes(arch, height, width),
        labels=tuple(labels),
        postprocessing=PostProcessing(),
    )
