"""SavedModel (``raw`` signature) -> TFLite, in every quantization.

Files written to the output folder, named ``<model>_<quant>[_nonms].tflite``:
``ssd_mnv2_int8.tflite`` (full-integer, calibrated, uint8 I/O, embedded NMS:
the default), ``ssd_mnv2_fp32.tflite``, ``ssd_mnv2_fp16.tflite``,
``ssd_mnv2_dynamic.tflite``, and ``..._nonms.tflite`` without the
postprocess op. Every file carries its spec, with output roles, in the
appended zip that ``ssdkit.runtime.model_files`` reads.

The graph converted is: normalized image -> network -> sigmoid scores ->
``TFLite_Detection_PostProcess`` (or the raw box encodings and scores).
TFLite emits the custom op only when converting from a SavedModel, so the
graph is saved to a temporary SavedModel first.
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal

import numpy as np
import tensorflow as tf

from ssdkit.fileio import atomic_path
from ssdkit.runtime.model_files import LABELS_NAME, SPEC_NAME, append_associated_files
from ssdkit.runtime.preprocess import preprocess
from ssdkit.runtime.spec import ModelSpec, OutputRoles

from .keras2savedmodel import scores_from_logits
from .tflite_flatbuffer import set_custom_options
from .tflite_postprocess import OP_NAME, DetectionPostProcessOptions, detection_postprocess

Quant = Literal["fp32", "fp16", "dynamic", "int8"]
QUANTS = ("fp32", "fp16", "dynamic", "int8")
IO_TYPES = {"uint8": tf.uint8, "int8": tf.int8, "float": tf.float32}
DETECTION_ROLES = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")


@dataclass(frozen=True)
class TFLiteOptions:
    """``ssdkit export --format tflite`` options; NMS defaults come from the spec."""

    quant: Quant = "int8"
    io: Literal["uint8", "int8", "float"] = "uint8"
    nms: bool = True
    regular_nms: bool = False
    max_detections: int | None = None
    score_threshold: float | None = None
    iou_threshold: float | None = None
    detections_per_class: int | None = None

    def __post_init__(self):
        if self.quant not in QUANTS:
            raise ValueError(f"unknown quantization {self.quant!r}, expected one of {', '.join(QUANTS)}")
        if self.io not in IO_TYPES:
            raise ValueError(f"unknown I/O type {self.io!r}, expected one of {', '.join(IO_TYPES)}")
        if self.iou_threshold is not None and not 0 < self.iou_threshold <= 1:
            raise ValueError(f"IoU threshold {self.iou_threshold} must be in (0, 1]")
        for name in ("max_detections", "detections_per_class"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name.replace('_', ' ')} {value} must be at least 1")

    def file_name(self, model_name: str) -> str:
        return f"{model_name}_{self.quant}{'' if self.nms else '_nonms'}.tflite"

    def op_options(self, spec: ModelSpec) -> DetectionPostProcessOptions:
        post = spec.postprocessing
        sy, sx, sh, sw = spec.box_coder.scales
        return DetectionPostProcessOptions(
            max_detections=self.max_detections or post.max_detections,
            num_classes=spec.num_classes,
            nms_score_threshold=post.score_threshold if self.score_threshold is None else self.score_threshold,
            nms_iou_threshold=self.iou_threshold or post.iou_threshold,
            detections_per_class=self.detections_per_class or post.detections_per_class,
            use_regular_nms=self.regular_nms,
            y_scale=sy, x_scale=sx, h_scale=sh, w_scale=sw,
        )


def _conversion_graph(saved_model: Path, spec: ModelSpec, options: TFLiteOptions, out_dir: Path) -> None:
    """Saves the graph to convert: the ``raw`` signature plus scores and the op."""
    loaded = tf.saved_model.load(str(saved_model))
    if "raw" not in loaded.signatures:
        raise ValueError(f"{saved_model}: SavedModel has no 'raw' signature; export it with ssdkit")
    raw = loaded.signatures["raw"]
    height, width = spec.input_size
    anchors = tf.constant(spec.anchors_center_size())

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32, name="normalized_images")])
    def detect(normalized_images):
        outputs = raw(normalized_images=normalized_images)
        scores = scores_from_logits(outputs["class_predictions"], spec)
        if not options.nms:
            return {"box_encodings": outputs["box_encodings"], "class_predictions": scores}
        return detection_postprocess(outputs["box_encodings"], scores, anchors, options.op_options(spec))

    module = tf.Module()
    module.loaded = loaded
    module.detect = detect
    tf.saved_model.save(module, str(out_dir), signatures={"serving_default": detect.get_concrete_function()})


def _representative(spec: ModelSpec, images: Iterable[np.ndarray]) -> Callable:
    def dataset():
        count = 0
        for image in images:
            tensor, _ = preprocess(image, spec.preprocessing)
            count += 1
            if count % 25 == 0:
                print(f"ssdkit export: calibrating, {count} images", file=sys.stderr)
            yield [tensor]
        if count == 0:
            raise ValueError("no calibration images: the representative data source is empty")

    return dataset


def _convert(graph_dir: Path, spec: ModelSpec, options: TFLiteOptions, calibration: Iterable[np.ndarray] | None) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(graph_dir))
    converter.allow_custom_ops = True
    if options.quant == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif options.quant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif options.quant == "int8":
        if calibration is None:
            raise ValueError("int8 export needs representative images for calibration")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(spec, calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = IO_TYPES[options.io]
        # The postprocess op's outputs are float whatever the body; raw outputs follow --io.
        converter.inference_output_type = tf.float32 if options.nms else IO_TYPES[options.io]
    return converter.convert()


def _output_roles(model: bytes, options: TFLiteOptions) -> OutputRoles:
    """Names the output tensors: the op's outputs come out of the converter as
    ``<call>:0..3`` = boxes, classes, scores, count; raw ones keep their
    signature keys in the signature runner's output map."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    runner = interpreter.get_signature_runner()
    details = runner.get_output_details()
    if options.nms:
        by_index = sorted(details.values(), key=lambda d: d["name"])
        # The signature's outputs are output_0..3 in the op's order.
        ordered = [details[k]["name"] for k in sorted(details)]
        if len(ordered) != 4:
            raise RuntimeError(f"the converted model has {len(by_index)} outputs, expected the op's 4")
        return OutputRoles("detections", tuple(zip(DETECTION_ROLES, ordered)))
    return OutputRoles(
        "raw", tuple((role, details[role]["name"]) for role in ("box_encodings", "class_predictions")),
        scores_activated=True,
    )


def export_tflite(
    saved_model: Path, spec: ModelSpec, out_dir: Path, options: TFLiteOptions,
    calibration: Iterable[np.ndarray] | None = None,
) -> Path:
    """Converts ``saved_model`` and writes ``out_dir/<file_name>`` atomically."""
    target = out_dir / options.file_name(spec.name)
    print(f"ssdkit export: converting to {target.name}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="ssdkit-tflite-") as tmp:
        graph_dir = Path(tmp) / "graph"
        _conversion_graph(saved_model, spec, options, graph_dir)
        model = _convert(graph_dir, spec, options, calibration)
    if options.nms:
        # The converter drops detections_per_class; write the value asked for.
        model = set_custom_options(model, OP_NAME, {"detections_per_class": options.op_options(spec).detections_per_class})
    file_spec = dataclasses.replace(spec, outputs=_output_roles(model, options))
    model = append_associated_files(model, {
        SPEC_NAME: file_spec.to_json().encode(),
        LABELS_NAME: "".join(f"{label}\n" for label in spec.labels).encode(),
    })
    with atomic_path(target) as tmp_file:
        tmp_file.write_bytes(model)
    return target
