"""Which ssdkit network an OD API model is, and how its weights map onto it.

The OD API names each SSD by its ``feature_extractor.type`` (TF1
``ssd_mobilenet_v2``, TF2 ``ssd_mobilenet_v2_keras``...) plus box predictor
settings; a lone frozen graph says the same through its variable scopes. Both
resolve to one of the zoo's OD API-exact entries (``*_odapi``) with the
model's own width, input size, anchors, box coder and NMS settings in its
``ModelDefinition`` (which the imported checkpoint records). Layer names of those entries are the TF1 scopes, so the TF1
map is a rename of the last path component; TF2 checkpoints map through
``tf2.py``.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import numpy as np

from ssdkit.runtime.spec import BoxCoder, MultipleGridAnchors, MultiscaleGridAnchors, PostProcessing

from ..zoo import ZOO, ModelDefinition, define, feature_map_shapes
from .config import OdapiConfig, UnsupportedModel

# feature_extractor.type -> (backbone, feature maps); TF2 types end in _keras.
FEATURE_EXTRACTORS = {
    "ssd_mobilenet_v1": ("mobilenet_v1", "ssd"),
    "ssd_mobilenet_v1_keras": ("mobilenet_v1", "ssd"),
    "ssd_mobilenet_v2": ("mobilenet_v2", "ssd"),
    "ssd_mobilenet_v2_keras": ("mobilenet_v2", "ssd"),
    "ssd_mobilenet_v3_small": ("mobilenet_v3_small", "ssd"),
    "ssd_mobilenet_v3_large": ("mobilenet_v3_large", "ssd"),
    "ssd_mobilenet_v2_fpn": ("mobilenet_v2", "fpn"),
    "ssd_mobilenet_v2_fpn_keras": ("mobilenet_v2", "fpn"),
    "ssd_mobilenet_v1_fpn": ("mobilenet_v1", "fpn"),
    "ssd_mobilenet_v1_fpn_keras": ("mobilenet_v1", "fpn"),
}
# Known OD API SSD feature extractors ssdkit has no network for, with the reason.
NOT_YET = {
    "ssd_mobilenet_v1_ppn": "the pooling pyramid (PPN) feature maps are not implemented",
    "ssd_mobilenet_edgetpu": "MobileNet-EdgeTPU is not implemented",
    "ssd_mobiledet_cpu": "MobileDet is not implemented",
    "ssd_mobiledet_edgetpu": "MobileDet is not implemented",
    "ssd_mobiledet_dsp": "MobileDet is not implemented",
    "ssd_inception_v2": "Inception backbones are not implemented (ssdkit is MobileNet-only)",
    "ssd_inception_v3": "Inception backbones are not implemented (ssdkit is MobileNet-only)",
    "ssd_resnet50_v1_fpn": "ResNet backbones are not implemented (ssdkit is MobileNet-only)",
    "ssd_resnet50_v1_fpn_keras": "ResNet backbones are not implemented (ssdkit is MobileNet-only)",
    "ssd_resnet101_v1_fpn_keras": "ResNet backbones are not implemented (ssdkit is MobileNet-only)",
    "ssd_resnet152_v1_fpn_keras": "ResNet backbones are not implemented (ssdkit is MobileNet-only)",
}

# TF1 variable name (last component) -> Keras weight attribute.
_TF1_TO_KERAS = {"weights": "kernel", "depthwise_weights": "depthwise_kernel", "pointwise_weights": "pointwise_kernel",
                 "biases": "bias", "gamma": "gamma", "beta": "beta", "moving_mean": "moving_mean",
                 "moving_variance": "moving_variance"}
_KERAS_TO_TF1 = {v: k for k, v in _TF1_TO_KERAS.items()}


@dataclass(frozen=True)
class Network:
    """The network the source holds: a zoo entry and the options on it."""

    zoo_name: str
    tf_version: int
    width: float = 1.0
    architecture: tuple[tuple[str, object], ...] = ()

    def definition(self, input_size, labels, anchors, box_coder, postprocessing) -> ModelDefinition:
        """The zoo entry with the source's own settings: what the imported
        checkpoint records, so export and train rebuild exactly this network."""
        return define(self.zoo_name, width=self.width, input_size=tuple(input_size), labels=tuple(labels),
                      architecture=dict(self.architecture), anchors=anchors, box_coder=box_coder,
                      postprocessing=postprocessing)


def zoo_entry_for(backbone: str, feature_maps: str, head: str, separable_extra: bool, source: str) -> str:
    """The zoo's OD API-exact entry with this backbone, feature maps and head."""
    for name, entry in ZOO.items():
        arch = entry.architecture
        if (arch.variant == "odapi" and arch.backbone == backbone and arch.feature_maps == feature_maps
                and arch.head == head and (feature_maps == "fpn" or arch.separable_extra_layers == separable_extra)):
            return name
    extra = "depthwise" if separable_extra else "regular"
    raise UnsupportedModel(f"{source}: {backbone} with {feature_maps} feature maps ({extra} extra layers) and a "
                           f"{head} box predictor is not an architecture ssdkit imports (yet)")


def network_from_config(config: OdapiConfig, tf_version: int) -> Network:
    kind = config.feature_extractor
    if kind in NOT_YET:
        raise UnsupportedModel(f"{config.source}: feature_extractor.type {kind!r} does not import yet: {NOT_YET[kind]}")
    if kind not in FEATURE_EXTRACTORS:
        raise UnsupportedModel(f"{config.source}: feature_extractor.type {kind!r} is not a MobileNet SSD ssdkit knows; "
                               f"supported: {', '.join(sorted(FEATURE_EXTRACTORS))}")
    if config.bn_epsilon != 0.001:
        raise UnsupportedModel(f"{config.source}: feature_extractor.conv_hyperparams.batch_norm.epsilon is "
                               f"{config.bn_epsilon}; ssdkit's networks use 0.001")
    backbone, feature_maps = FEATURE_EXTRACTORS[kind]
    weight_shared = config.box_predictor == "weight_shared_convolutional_box_predictor"
    if feature_maps == "fpn" and not weight_shared:
        raise UnsupportedModel(f"{config.source}: FPN with a {config.box_predictor} is not supported (the OD API "
                               "zoo pairs FPN with the weight-shared predictor)")
    head = "weight_shared" if weight_shared else ("separable" if config.predictor_use_depthwise else "conv")
    name = zoo_entry_for(backbone, feature_maps, head, config.use_depthwise, config.source)
    arch = ZOO[name].architecture
    overrides = {}
    if config.min_depth != arch.min_depth:
        overrides["min_depth"] = config.min_depth
    if config.predictor_kernel_size != arch.head_kernel_size:
        overrides["head_kernel_size"] = config.predictor_kernel_size
    if feature_maps == "fpn":
        if config.use_depthwise != arch.fpn_separable:
            raise UnsupportedModel(f"{config.source}: {kind} with feature_extractor.use_depthwise "
                                   f"{str(config.use_depthwise).lower()} does not import: ssdkit has {kind} with "
                                   f"use_depthwise {str(arch.fpn_separable).lower()} only")
        # No fpn { } section: the feature extractor's defaults (levels 3-7, additional_layer_depth 256).
        min_level, max_level, depth = config.fpn or (3, 7, 256)
        overrides.update(fpn_min_level=min_level, fpn_max_level=max_level, fpn_depth=depth)
        if tf_version == 1:
            overrides["fpn_top_down"] = "projection"  # slim's fpn_top_down_feature_maps upsamples the bare sum
    if weight_shared:
        if config.predictor_use_depthwise != arch.tower_separable:
            raise UnsupportedModel(f"{config.source}: weight_shared_convolutional_box_predictor.use_depthwise "
                                   f"{str(config.predictor_use_depthwise).lower()} with {kind} is not supported "
                                   f"(ssdkit imports it with use_depthwise {str(arch.tower_separable).lower()})")
        if config.predictor_layers != arch.tower_layers:
            overrides["tower_layers"] = config.predictor_layers
        overrides["tower_shared"] = config.share_prediction_tower
        if config.predictor_depth:
            overrides["tower_depth"] = config.predictor_depth
        overrides["class_bias_init"] = config.class_prediction_bias_init
    overrides = {k: v for k, v in overrides.items() if getattr(arch, k) != v}
    return Network(name, tf_version, config.depth_multiplier, tuple(sorted(overrides.items())))


def fit_to_weights(network: Network, weights: dict[str, np.ndarray]) -> Network:
    """What only the weights say: MobileNetV2's last 1x1 conv under FPN-lite
    has 256 channels where the OD API passes its modified conv defs (slim,
    and the TF2 Keras extractor where it forwards ``conv_defs``) and 1280
    where it does not; the shape of ``Conv_1/weights`` decides."""
    arch = ZOO[network.zoo_name].architecture
    key = "FeatureExtractor/MobilenetV2/Conv_1/weights"
    if arch.backbone != "mobilenet_v2" or arch.feature_maps != "fpn" or key not in weights:
        return network
    from ..models.odapi import make_divisible

    min_depth = dict(network.architecture).get("min_depth", arch.min_depth)
    out = int(weights[key].shape[-1])
    for nominal in (256, 1280):
        if make_divisible(nominal * network.width, 8, min_depth) == out:
            overrides = {**dict(network.architecture), "last_conv_depth": nominal}
            if nominal == 256:
                overrides.pop("last_conv_depth")
            return dataclasses.replace(network, architecture=tuple(sorted(overrides.items())))
    return network


def network_from_names(weights: dict[str, np.ndarray], source: str) -> Network:
    """A TF1 network recovered from variable names and shapes (a lone frozen graph)."""
    from .tf1 import scope_summary

    summary = scope_summary(weights)
    backbone = summary["backbone"]
    if backbone is None:
        if summary["other_backbone"]:
            raise UnsupportedModel(f"{source}: feature extractor {summary['other_backbone']!r} is not a MobileNet "
                                   "ssdkit imports")
        raise UnsupportedModel(f"{source}: no FeatureExtractor/Mobilenet* variables: not a TF OD API SSD graph")
    if not (summary["num_box_predictors"] or summary["weight_shared"]):
        raise UnsupportedModel(f"{source}: no BoxPredictor_N or WeightSharedConvolutionalBoxPredictor variables: "
                               "not an SSD")
    feature_maps = "fpn" if summary["fpn"] else "ssd"
    head = "weight_shared" if summary["weight_shared"] else ("separable" if summary["separable_head"] else "conv")
    name = zoo_entry_for(backbone, feature_maps, head, summary["separable_extra_layers"], source)
    arch = ZOO[name].architecture
    width = infer_width(backbone, weights, arch.min_depth, feature_maps == "fpn")
    overrides = {}
    if head != "weight_shared":
        kernel = _head_kernel(weights, head)
        if kernel and kernel != arch.head_kernel_size:
            overrides["head_kernel_size"] = kernel
        depths = summary["extra_depths"]
        expected = tuple(max(int(d * width), arch.min_depth) for d in arch.extra_depths)
        if depths != expected:
            if width != 1.0:
                raise UnsupportedModel(f"{source}: extra feature-map depths {depths} at width {width}; expected {expected}")
            overrides["extra_depths"] = depths
    else:
        joined = "\n".join(weights)
        tower = sum(f"PredictionTower/conv2d_{j}/" in joined for j in range(16))
        if tower != arch.tower_layers:
            overrides["tower_layers"] = tower
        overrides["tower_shared"] = f"{_ws_prefix()}BoxPredictionTower/" not in joined
        first = next((weights[k] for k in sorted(weights) if re.search(
            r"PredictionTower/conv2d_0/(weights|pointwise_weights)$", k)), None)
        if first is not None:
            overrides["tower_depth"] = int(first.shape[-1])
        projections = sorted(int(m.group(1)) for m in re.finditer(r"/fpn/projection_(\d+)/weights", joined))
        bottom_up = sorted(int(m.group(1)) for m in re.finditer(r"/fpn/bottom_up_Conv2d_(\d+)/", joined))
        if projections:
            base_max = 5 if bottom_up else 2 + len(projections)  # levels beyond 5 come from bottom-up convs
            channels = int(weights[f"{scope_of(backbone)}/fpn/projection_1/weights"].shape[-1])
            nominal = [d for d in (channels, 64, 128, 256, 512) if max(int(d * width), arch.min_depth) == channels]
            if not nominal:
                raise UnsupportedModel(f"{source}: FPN depth {channels} fits no additional_layer_depth at width {width}")
            overrides.update(fpn_min_level=base_max - len(projections) + 1, fpn_max_level=base_max + len(set(bottom_up)),
                             fpn_depth=nominal[0])
        overrides["fpn_top_down"] = "projection"  # a TF1 graph: slim's top-down pathway
    overrides = {k: v for k, v in overrides.items() if getattr(arch, k) != v}
    return fit_to_weights(Network(name, 1, width, tuple(sorted(overrides.items()))), weights)


def scope_of(backbone: str) -> str:
    from ..models.odapi import BACKBONE_SCOPES

    return f"FeatureExtractor/{BACKBONE_SCOPES[backbone]}"


def _ws_prefix() -> str:
    return "WeightSharedConvolutionalBoxPredictor/"


def _head_kernel(weights, head) -> int | None:
    key = "BoxPredictor_0/BoxEncodingPredictor_depthwise/depthwise_weights" if head == "separable" else \
        "BoxPredictor_0/BoxEncodingPredictor/weights"
    return int(weights[key].shape[0]) if key in weights else None


def infer_width(backbone: str, weights: dict[str, np.ndarray], min_depth: int, fpn: bool) -> float:
    """The depth multiplier, from the backbone's last pointwise conv."""
    from ..models.odapi import make_divisible

    if backbone == "mobilenet_v1":
        key = next((k for k in weights if k.endswith("MobilenetV1/Conv2d_13_pointwise/weights")), None)
        if key is None:
            raise UnsupportedModel("no MobilenetV1/Conv2d_13_pointwise/weights: not a complete MobileNetV1")
        out = weights[key].shape[-1]
        candidates = [round(out / 1024, 4)]
        check = lambda m: max(int(1024 * m), min_depth) == out  # noqa: E731
    elif backbone == "mobilenet_v2":
        key = next((k for k in weights if k.endswith("MobilenetV2/Conv_1/weights")), None)
        if key is None:
            raise UnsupportedModel("no MobilenetV2/Conv_1/weights: not a complete MobileNetV2")
        out = weights[key].shape[-1]
        base = 256 if fpn else 1280
        candidates = [round(out / base, 2)]
        check = lambda m: make_divisible(base * m, 8, min_depth) == out  # noqa: E731
    else:
        # The first conv (16 channels) sits at min_depth for every width <= 1; the last 1x1 conv
        # (the detection variant's 480 / 288) tells the width.
        key = next((k for k in weights if k.endswith("MobilenetV3/Conv_1/weights")), None)
        if key is None:
            raise UnsupportedModel("no MobilenetV3/Conv_1/weights: not a complete MobileNetV3 feature extractor")
        out = weights[key].shape[-1]
        base = 480 if backbone == "mobilenet_v3_large" else 288
        candidates = [round(out / base, 2)]
        check = lambda m: make_divisible(base * m, 8, min_depth) == out  # noqa: E731
    for m in candidates + [0.25, 0.35, 0.5, 0.75, 1.0, 1.3, 1.4]:
        if check(m):
            return float(m)
    return float(candidates[0])


def tf1_name(keras_weight_name: str) -> str:
    """The TF1 variable of a Keras weight of an ``*_odapi`` network:
    ``L/kernel:0`` -> ``L/weights``, ``L/depthwise_kernel:0`` -> ``L/depthwise_weights``..."""
    layer, _, attr = keras_weight_name.split(":")[0].rpartition("/")
    return f"{layer}/{_KERAS_TO_TF1.get(attr, attr)}"


def map_tf1_weights(model, weights: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Keras weight name -> value from TF1 variables. A batch norm without
    ``gamma`` (slim's ``scale=False``) gets ones. Raises ValueError naming
    what is missing or mis-shaped."""
    mapped, missing, wrong = {}, [], []
    for variable in model.keras_model.weights:
        name = tf1_name(variable.name)
        shape = tuple(variable.shape)
        value = weights.get(name)
        if value is None and name.endswith("BatchNorm/gamma") and name[:-5] + "beta" in weights:
            value = np.ones(shape, np.float32)
        if value is None:
            missing.append(name)
        elif tuple(value.shape) != shape:
            wrong.append(f"{name} {list(value.shape)} (expected {list(shape)})")
        else:
            mapped[variable.name] = value
    if missing or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} ({len(missing)})")
        if wrong:
            parts.append(f"shapes that do not fit: {'; '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''} ({len(wrong)})")
        raise ValueError(f"{source}: weights do not fit {model.spec.name} at width {model.definition.width}: "
                         + "; ".join(parts))
    return mapped


# --- anchors recovered from a graph's anchor tensor ---------------------------------------------------

def fit_anchors(corners: np.ndarray, network: Network, input_size: tuple[int, int], per_location: list[int],
                source: str):
    """The anchor generator whose anchors are ``corners`` [A, 4] (what a
    frozen graph computed), checked by regenerating them."""
    arch = dataclasses.replace(ZOO[network.zoo_name].architecture, **dict(network.architecture))
    shapes = feature_map_shapes(arch, *input_size)
    counts = [h * w * k for (h, w), k in zip(shapes, per_location)]
    if sum(counts) != len(corners):
        raise ValueError(f"{source}: the graph has {len(corners)} anchors; feature maps {list(shapes)} with "
                         f"{per_location} boxes per location make {sum(counts)}")
    candidates = []
    if arch.feature_maps == "fpn":
        candidates.append(_fit_multiscale(corners, shapes, input_size, per_location, arch))
    else:
        candidates.append(_fit_multiple_grid(corners, shapes, input_size, per_location))
    for generator in candidates:
        if generator is None:
            continue
        regenerated = generator.generate(list(shapes), *input_size)
        if regenerated.shape == corners.shape and np.abs(regenerated - corners).max() < 1e-4:
            return generator
    raise UnsupportedModel(f"{source}: the graph's anchors match neither the SSD nor the multiscale anchor generator "
                           "as ssdkit builds them; pass the model's pipeline.config")


def _box_specs(cell: np.ndarray, input_size) -> list[tuple[float, float]]:
    """(scale, aspect ratio) of each anchor of one cell (base anchor 1 x 1)."""
    height, width = input_size
    min_side = min(height, width)
    h = (cell[:, 2] - cell[:, 0]) * height / min_side
    w = (cell[:, 3] - cell[:, 1]) * width / min_side
    return [(float(np.sqrt(a * b)), float(b / a)) for a, b in zip(h, w)]


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _fit_multiple_grid(corners, shapes, input_size, per_location) -> MultipleGridAnchors | None:
    specs, start = [], 0
    for (h, w), k in zip(shapes, per_location):
        specs.append(_box_specs(corners[start:start + k], input_size))
        start += h * w * k
    reduce = len(specs[0]) == 3 and abs(specs[0][0][0] - 0.1) < 1e-4 and abs(specs[0][0][1] - 1) < 1e-4
    layer_scales = [s[1][0] if reduce and i == 0 else s[0][0] for i, s in enumerate(specs)]
    if len(specs) < 2:
        return None
    ratios_with_interp = specs[1]
    interpolated = len(ratios_with_interp) > 1 and abs(ratios_with_interp[-1][0] - ratios_with_interp[0][0]) > 1e-4
    ratios = [_round(r) for _, r in (ratios_with_interp[:-1] if interpolated else ratios_with_interp)]
    interp_ratio = _round(ratios_with_interp[-1][1]) if interpolated else 0.0
    num_layers = len(specs)
    min_scale, max_scale = _round(layer_scales[0]), _round(layer_scales[-1])
    linear = [min_scale + (max_scale - min_scale) * i / (num_layers - 1) for i in range(num_layers)]
    explicit = () if np.allclose(linear, layer_scales, atol=1e-5) else tuple(_round(s) for s in layer_scales)
    return MultipleGridAnchors(num_layers=num_layers, min_scale=min_scale, max_scale=max_scale, scales=explicit,
                               aspect_ratios=tuple(ratios), interpolated_scale_aspect_ratio=interp_ratio,
                               reduce_boxes_in_lowest_layer=reduce)


def _fit_multiscale(corners, shapes, input_size, per_location, arch) -> MultiscaleGridAnchors | None:
    k = per_location[0]
    cell = corners[:k] * np.array([input_size[0], input_size[1]] * 2)
    heights, widths = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
    ratios = sorted({_round((w / h) ** 1) for h, w in zip(heights, widths)}, key=lambda r: -1)
    sizes = np.sqrt(heights * widths)
    stride = 2 ** arch.fpn_min_level
    scales = sorted({_round(s / sizes.min()) for s in sizes})
    if not scales or k % len(scales):
        return None
    octave = len(scales)
    ratio_order = []
    for h, w in zip(heights[::octave], widths[::octave]):
        ratio_order.append(_round(w / h))
    return MultiscaleGridAnchors(min_level=arch.fpn_min_level, max_level=arch.fpn_max_level,
                                 anchor_scale=_round(float(sizes.min()) / stride), aspect_ratios=tuple(ratio_order),
                                 scales_per_octave=octave)


def postprocessing_from_graph(facts, default: PostProcessing = PostProcessing()) -> PostProcessing:
    changes = {}
    if facts.score_converter in ("sigmoid", "softmax"):
        changes["score_activation"] = facts.score_converter
    if facts.iou_threshold is not None:
        changes["iou_threshold"] = _round(facts.iou_threshold)
    if facts.score_threshold is not None and math.isfinite(facts.score_threshold):
        changes["score_threshold"] = _round(facts.score_threshold)
    return dataclasses.replace(default, **changes)


def box_coder_from_graph(facts) -> BoxCoder:
    return BoxCoder(tuple(_round(s) for s in facts.box_coder_scales)) if facts.box_coder_scales else BoxCoder()
