"""Assembles a zoo model: backbone, feature maps, box predictor."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import tf_keras as keras

from ssdkit.runtime.spec import ModelSpec

from ..zoo import ModelDefinition
from .backbones import BackboneEndpoints, build_backbone, imagenet_weights_file
from .feature_maps import build_feature_maps
from .heads import build_box_predictor


class UntrainedWarning(UserWarning):
    """The exported model has randomly initialised (detection) weights."""


@dataclass
class SSDModel:
    """A built network with its definition. ``keras_model`` maps a normalized
    float image batch [B, H, W, 3] to {"box_encodings": [B, A, 4],
    "class_predictions": [B, A, C+1] logits}; with ``qat`` set it is the
    fake-quantized network of ``models/qat.py``."""

    keras_model: keras.Model
    definition: ModelDefinition
    backbone: keras.Model
    trained_on: str | None = None  # the checkpoint's training data (``checkpoint.training_data``); None: unknown
    qat: dict | None = None  # quantization-aware training: the checkpoint's record (models/qat.py)

    @property
    def spec(self) -> ModelSpec:
        return self.definition.spec


def build_model(definition: ModelDefinition) -> SSDModel:
    """The Keras network ``definition`` describes (a zoo model's:
    ``ModelConfig(...).definition()``; an imported one's: ``convert/odapi``).
    Raises RuntimeError when its feature maps do not come out at the sizes
    the spec's anchors sit on."""
    spec, arch = definition.spec, definition.architecture
    height, width = spec.input_size
    inputs = keras.Input(shape=(height, width, 3), name="normalized_image")
    if arch.variant == "odapi":
        from .odapi import build_odapi_backbone, build_odapi_feature_maps

        endpoints: BackboneEndpoints = build_odapi_backbone(arch, inputs, definition.width)
        feature_maps = build_odapi_feature_maps(arch, endpoints, definition.width)
    else:
        endpoints = build_backbone(arch.backbone, inputs, definition.width)
        feature_maps = build_feature_maps(arch, endpoints, definition.width)
    built_shapes = tuple(tuple(keras.backend.int_shape(f)[1:3]) for f in feature_maps)
    if built_shapes != spec.feature_map_shapes:
        raise RuntimeError(f"{spec.name}: network feature maps {built_shapes} differ from the spec's {spec.feature_map_shapes}")
    if arch.variant == "odapi" and arch.head == "weight_shared":
        from .odapi import build_odapi_weight_shared_predictor

        box_encodings, class_predictions = build_odapi_weight_shared_predictor(
            arch, feature_maps, spec.anchors.per_location(), spec.num_classes + 1)
    else:
        box_encodings, class_predictions = build_box_predictor(
            arch, feature_maps, spec.anchors.per_location(), spec.num_classes + 1
        )
    model = keras.Model(
        inputs, {"box_encodings": box_encodings, "class_predictions": class_predictions}, name=spec.name
    )
    return SSDModel(model, definition, endpoints.model)


def load_backbone_weights(model: SSDModel, source: str) -> Path | None:
    """Loads ImageNet weights into the backbone. ``source`` is ``"auto"`` (the
    Keras cache file if present), ``"none"``, or a path to a Keras .h5 file.
    Returns the file loaded, if any."""
    if source == "none":
        return None
    arch, width = model.definition.architecture, model.definition.width
    if arch.variant == "odapi":
        if source != "auto":
            raise ValueError(f"{model.spec.name} has OD API layer names: Keras ImageNet backbone weights do not "
                             "load into it (import a TF OD API model with `ssdkit import` instead)")
        return None
    path = imagenet_weights_file(arch.backbone, width) if source == "auto" else Path(source)
    if path is None:
        return None
    if not path.is_file():
        raise FileNotFoundError(f"{path}: backbone weights file not found")
    try:
        model.backbone.load_weights(str(path))
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: cannot load into the {arch.backbone} backbone at width {width}: {exc}") from exc
    return path


def warn_untrained(spec: ModelSpec, backbone_file: Path | None) -> None:
    what = f"ImageNet backbone from {backbone_file}, random head" if backbone_file else "random initialisation"
    warnings.warn(
        f"{spec.name} is untrained ({what}): it will not detect anything useful; "
        "pass --weights CHECKPOINT (see `ssdkit train`)",
        UntrainedWarning,
        stacklevel=2,
    )
