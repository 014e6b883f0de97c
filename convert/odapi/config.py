"""The parts of an OD API ``pipeline.config`` that decide a model's outputs.

Field names and defaults are those of research/object_detection/protos
(``ssd.proto``, ``ssd_anchor_generator.proto``, ``multiscale_anchor_generator.proto``,
``faster_rcnn_box_coder.proto``, ``post_processing.proto``,
``box_predictor.proto``, ``hyperparams.proto``). Anything that would change
the network or its decoding in a way ssdkit does not reproduce is refused
here, with the file and field named.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ssdkit.runtime.spec import BoxCoder, MultipleGridAnchors, MultiscaleGridAnchors, PostProcessing

from .textproto import Message, TextProtoError, read


class UnsupportedModel(ValueError):
    """The source is an OD API model that ssdkit cannot import (yet); says why."""


@dataclass(frozen=True)
class OdapiConfig:
    """What ``pipeline.config`` says about an SSD model (None: not given)."""

    source: str
    feature_extractor: str
    num_classes: int
    input_size: tuple[int, int] | None
    depth_multiplier: float = 1.0
    min_depth: int = 16
    use_depthwise: bool = False
    fpn: tuple[int, int, int] | None = None  # (min_level, max_level, additional_layer_depth)
    box_predictor: str = "convolutional_box_predictor"
    predictor_kernel_size: int = 1
    predictor_use_depthwise: bool = False
    predictor_depth: int = 0
    predictor_layers: int = 0
    share_prediction_tower: bool = False
    class_prediction_bias_init: float = 0.0
    anchors: MultipleGridAnchors | MultiscaleGridAnchors = field(default_factory=MultipleGridAnchors)
    box_coder: BoxCoder = field(default_factory=BoxCoder)
    postprocessing: PostProcessing = field(default_factory=PostProcessing)
    bn_epsilon: float = 0.001
    label_map_path: str | None = None
    quantized: bool = False


def read_pipeline_config(path: str | Path) -> OdapiConfig:
    """Reads ``path``; raises ``ValueError`` (``UnsupportedModel`` for models
    that are valid but not importable) naming the file and field."""
    path = Path(path)
    try:
        root = read(path)
    except TextProtoError as exc:
        raise ValueError(f"not a pipeline.config: {exc}") from None
    return interpret(root, str(path))


def interpret(root: Message, source: str) -> OdapiConfig:
    kind, model = root.message("model").oneof("ssd", "faster_rcnn", "center_net", "experimental_model")
    if kind is None:
        raise ValueError(f"{source}: no model {{ ... }} section: not an OD API pipeline.config")
    if kind != "ssd":
        raise UnsupportedModel(f"{source}: model.{kind} is not an SSD; ssdkit imports SSD models only")

    def field_error(name: str, problem: str) -> UnsupportedModel:
        return UnsupportedModel(f"{source}: model.ssd.{name} {problem}")

    extractor = model.message("feature_extractor")
    num_classes = int(model.get("num_classes", 0))
    if num_classes < 1:
        raise ValueError(f"{source}: model.ssd.num_classes is {num_classes}, expected at least 1")
    input_size = None
    resizer_kind, resizer = model.message("image_resizer").oneof("fixed_shape_resizer", "keep_aspect_ratio_resizer")
    if resizer_kind == "fixed_shape_resizer":
        input_size = (int(resizer.get("height", 300)), int(resizer.get("width", 300)))
        if resizer.get("resize_method", "BILINEAR") != "BILINEAR":
            raise field_error("image_resizer.fixed_shape_resizer.resize_method",
                              f"is {resizer.get('resize_method')}; ssdkit's runtime resizes bilinearly")
        if resizer.get("convert_to_grayscale", False):
            raise field_error("image_resizer.fixed_shape_resizer.convert_to_grayscale", "is true: not supported")
    elif resizer_kind is not None:
        raise field_error(f"image_resizer.{resizer_kind}", "is not supported: SSD imports need fixed_shape_resizer")
    for name in ("use_explicit_padding",):
        if extractor.get(name, False):
            raise field_error(f"feature_extractor.{name}", "is true: not supported (ssdkit's networks pad SAME, "
                                                           "which differs from fixed padding at stride 2)")
    if int(extractor.get("pad_to_multiple", 1)) not in (0, 1):
        raise field_error("feature_extractor.pad_to_multiple", f"is {extractor.get('pad_to_multiple')}: only 1 is supported")
    fpn = None
    if extractor.has("fpn"):
        f = extractor.message("fpn")
        fpn = (int(f.get("min_level", 3)), int(f.get("max_level", 7)), int(f.get("additional_layer_depth", 256)))
    hyper = extractor.message("conv_hyperparams")
    epsilon = float(hyper.message("batch_norm").get("epsilon", 0.001))

    predictor_kind, predictor = model.message("box_predictor").oneof(
        "convolutional_box_predictor", "weight_shared_convolutional_box_predictor", "mask_rcnn_box_predictor",
        "rfcn_box_predictor")
    if predictor_kind not in ("convolutional_box_predictor", "weight_shared_convolutional_box_predictor"):
        raise field_error("box_predictor", f"is {predictor_kind or 'missing'}: SSD imports need a convolutional "
                                           "or weight-shared convolutional box predictor")
    if int(predictor.get("box_code_size", 4)) != 4:
        raise field_error(f"box_predictor.{predictor_kind}.box_code_size", "is not 4: not supported")
    if predictor.get("apply_sigmoid_to_scores", False):
        raise field_error(f"box_predictor.{predictor_kind}.apply_sigmoid_to_scores", "is true: not supported")
    if predictor_kind == "convolutional_box_predictor" and int(predictor.get("num_layers_before_predictor", 0)):
        raise field_error(f"box_predictor.{predictor_kind}.num_layers_before_predictor",
                          "is not 0: extra predictor layers are not supported")
    weight_shared = predictor_kind == "weight_shared_convolutional_box_predictor"
    if weight_shared and not predictor.get("apply_batch_norm", False) and predictor.has("apply_batch_norm"):
        raise field_error(f"box_predictor.{predictor_kind}.apply_batch_norm", "is false: not supported")

    coder_kind, coder = model.message("box_coder").oneof("faster_rcnn_box_coder", "mean_stddev_box_coder",
                                                        "square_box_coder", "keypoint_box_coder")
    if coder_kind not in (None, "faster_rcnn_box_coder"):
        raise field_error(f"box_coder.{coder_kind}", "is not supported: ssdkit decodes with the Faster R-CNN box coder")
    box_coder = BoxCoder(tuple(float(coder.get(k, d)) for k, d in (
        ("y_scale", 10.0), ("x_scale", 10.0), ("height_scale", 5.0), ("width_scale", 5.0))))

    post = model.message("post_processing")
    nms = post.message("batch_non_max_suppression")
    converter = post.get("score_converter", "IDENTITY")
    if converter not in ("SIGMOID", "SOFTMAX"):
        raise field_error("post_processing.score_converter", f"is {converter}: ssdkit supports SIGMOID and SOFTMAX")
    if float(post.get("logit_scale", 1.0)) != 1.0:
        raise field_error("post_processing.logit_scale", f"is {post.get('logit_scale')}: only 1.0 is supported")
    postprocessing = PostProcessing(
        score_activation=converter.lower(),
        score_threshold=float(nms.get("score_threshold", 0.0)),
        iou_threshold=float(nms.get("iou_threshold", 0.6)),
        max_detections=int(nms.get("max_total_detections", 100)),
        detections_per_class=int(nms.get("max_detections_per_class", 100)),
    )
    label_maps = [reader.get("label_map_path") for reader in
                  root.all("train_input_reader") + root.all("eval_input_reader") if reader.get("label_map_path")]
    return OdapiConfig(
        source=source,
        feature_extractor=str(extractor.get("type", "")),
        num_classes=num_classes,
        input_size=input_size,
        depth_multiplier=float(extractor.get("depth_multiplier", 1.0)),
        min_depth=int(extractor.get("min_depth", 16)),
        use_depthwise=bool(extractor.get("use_depthwise", False)),
        fpn=fpn,
        box_predictor=predictor_kind,
        predictor_kernel_size=int(predictor.get("kernel_size", 3 if weight_shared else 1)),
        predictor_use_depthwise=bool(predictor.get("use_depthwise", False)),
        predictor_depth=int(predictor.get("depth", 0)),
        predictor_layers=int(predictor.get("num_layers_before_predictor", 0)),
        share_prediction_tower=bool(predictor.get("share_prediction_tower", False)),
        class_prediction_bias_init=float(predictor.get("class_prediction_bias_init", 0.0)),
        anchors=_anchors(model.message("anchor_generator"), source),
        box_coder=box_coder,
        postprocessing=postprocessing,
        bn_epsilon=epsilon,
        label_map_path=label_maps[0] if label_maps else None,
        quantized=root.message("graph_rewriter").has("quantization"),
    )


def _anchors(message: Message, source: str):
    kind, gen = message.oneof("ssd_anchor_generator", "multiscale_anchor_generator", "grid_anchor_generator",
                              "flexible_grid_anchor_generator")
    where = f"{source}: model.ssd.anchor_generator"
    if kind == "ssd_anchor_generator":
        for name in ("height_stride", "width_stride", "height_offset", "width_offset"):
            if gen.all(name):
                raise UnsupportedModel(f"{where}.ssd_anchor_generator.{name} is set: explicit anchor strides and "
                                       "offsets are not supported")
        return MultipleGridAnchors(
            num_layers=int(gen.get("num_layers", 6)),
            min_scale=float(gen.get("min_scale", 0.2)),
            max_scale=float(gen.get("max_scale", 0.95)),
            scales=tuple(float(s) for s in gen.all("scales")),
            aspect_ratios=tuple(float(a) for a in gen.all("aspect_ratios")),
            interpolated_scale_aspect_ratio=float(gen.get("interpolated_scale_aspect_ratio", 1.0)),
            base_anchor_size=(float(gen.get("base_anchor_height", 1.0)), float(gen.get("base_anchor_width", 1.0))),
            reduce_boxes_in_lowest_layer=bool(gen.get("reduce_boxes_in_lowest_layer", True)),
        )
    if kind == "multiscale_anchor_generator":
        if not gen.get("normalize_coordinates", True):
            raise UnsupportedModel(f"{where}.multiscale_anchor_generator.normalize_coordinates is false: not supported")
        return MultiscaleGridAnchors(
            min_level=int(gen.get("min_level", 3)),
            max_level=int(gen.get("max_level", 7)),
            anchor_scale=float(gen.get("anchor_scale", 4.0)),
            aspect_ratios=tuple(float(a) for a in gen.all("aspect_ratios")) or (1.0, 2.0, 0.5),
            scales_per_octave=int(gen.get("scales_per_octave", 2)),
        )
    raise UnsupportedModel(f"{where}.{kind or '(missing)'} is not supported: ssdkit has the SSD and multiscale "
                           "anchor generators")


def read_label_map(path: str | Path) -> dict[int, str]:
    """``label_map.pbtxt``: ``item { id: N name: "..." display_name: "..." }`` ->
    {id: display_name or name}."""
    path = Path(path)
    try:
        root = read(path)
    except TextProtoError as exc:
        raise ValueError(f"not a label map: {exc}") from None
    labels: dict[int, str] = {}
    for item in root.all("item"):
        if not isinstance(item, Message) or item.get("id") is None:
            raise ValueError(f"{path}: every item needs an id")
        name = item.get("display_name") or item.get("name")
        if name is None:
            raise ValueError(f"{path}: item id {item.get('id')} has no name or display_name")
        labels[int(item.get("id"))] = str(name)
    if not labels:
        raise ValueError(f"{path}: no item {{ id: ... name: ... }} entries: not a label map")
    return labels


def labels_from_map(mapping: dict[int, str], num_classes: int, source: str) -> tuple[str, ...]:
    """Class names for ids 1..num_classes (a missing id is "???", as ssdkit's COCO slots)."""
    outside = sorted(i for i in mapping if not 1 <= i <= num_classes)
    if outside:
        raise ValueError(f"{source}: label ids {outside[:5]} are outside 1..{num_classes} (the model's classes)")
    return tuple(mapping.get(i, "???") for i in range(1, num_classes + 1))
