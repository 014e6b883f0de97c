"""``ssdkit export --format tflite`` options, validated when made.

Kept apart from the converter (``savedmodel2tflite.py``) so that the command
line can check them without importing TensorFlow.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ssdkit.runtime import limits
from ssdkit.runtime.spec import ModelSpec

if TYPE_CHECKING:
    from .postprocess_op import DetectionPostProcessOptions

Quant = Literal["fp32", "fp16", "dynamic", "int8"]
QUANTS = ("fp32", "fp16", "dynamic", "int8")
IOType = Literal["uint8", "int8", "float"]
IO_NAMES = ("uint8", "int8", "float")


@dataclass(frozen=True)
class TFLiteOptions:
    """``ssdkit export --format tflite`` options.

    quant: fp32, fp16 (weights), dynamic (int8 weights, float activations) or
      int8 (full-integer: weights and activations, calibrated).
    io: int8 only: the model's input and raw-output type; uint8 (cameras,
      Coral), int8, or float (float I/O around the int8 body). The
      postprocess op's outputs are float32 whatever the body.
    nms: embed ``TFLite_Detection_PostProcess``; False gives raw outputs.
    regular_nms: per-class NMS in the op instead of the fast class-agnostic one.
    max_detections, score_threshold, iou_threshold, detections_per_class:
      the op's settings; None takes the spec's postprocessing values.
    edgetpu: int8 for the Edge TPU compiler, with a compatibility report.
    keep_float: int8 only: layers (their output tensor names, as the
      quantization debugger and report.md name them) left in float, with
      quantize/dequantize ops around them.
    qat: the SavedModel holds a quantization-aware network (``ssdkit train
      --qat``): int8 uses the ranges it trained, with no calibration pass.
    """

    quant: Quant = "int8"
    io: IOType = "uint8"
    nms: bool = True
    regular_nms: bool = False
    max_detections: int | None = None
    score_threshold: float | None = None
    iou_threshold: float | None = None
    detections_per_class: int | None = None
    edgetpu: bool = False
    keep_float: tuple[str, ...] = ()
    qat: bool = False  # the SavedModel is a QAT network's: int8 takes its trained ranges, no calibration

    def __post_init__(self):
        object.__setattr__(self, "keep_float", tuple(self.keep_float))  # hashable, whatever sequence was given
        if self.quant not in QUANTS:
            raise ValueError(f"unknown quantization {self.quant!r}, expected one of {', '.join(QUANTS)}")
        if self.io not in IO_NAMES:
            raise ValueError(f"unknown I/O type {self.io!r}, expected one of {', '.join(IO_NAMES)}")
        limits.check(iou_threshold=self.iou_threshold, score_threshold=self.score_threshold,
                     max_detections=self.max_detections, detections_per_class=self.detections_per_class)
        if self.edgetpu and self.quant != "int8":
            raise ValueError(f"the Edge TPU runs full-integer models only: use --quant int8, not {self.quant}")
        if self.edgetpu and self.io == "float":
            raise ValueError("the Edge TPU needs 8-bit input: use --io uint8 or int8, not float "
                             "(a float input's quantize op would put the whole model on the CPU)")
        if self.keep_float:
            self.check_float_layers()
        if self.qat and self.keep_float:
            raise ValueError("--keep-float needs calibration; a QAT model is exported with its trained ranges")

    def check_float_layers(self) -> None:
        """Raises unless this export can keep layers in float (``--keep-float``)."""
        if self.quant != "int8":
            raise ValueError(f"--keep-float leaves layers of an int8 model in float; "
                             f"--quant {self.quant} has no int8 layers")
        if self.edgetpu:
            raise ValueError("the Edge TPU cannot run float layers (they and all after them would run on the CPU): "
                             "use --keep-float none with --edgetpu")

    def file_name(self, model_name: str) -> str:
        return f"{model_name}_{self.quant}{'' if self.nms else '_nonms'}.tflite"

    def postprocessing(self, spec: ModelSpec):
        """The spec's postprocessing with this export's overrides."""
        post = spec.postprocessing
        return dataclasses.replace(
            post,
            max_detections=self.max_detections or post.max_detections,
            score_threshold=post.score_threshold if self.score_threshold is None else self.score_threshold,
            iou_threshold=self.iou_threshold or post.iou_threshold,
            detections_per_class=self.detections_per_class or post.detections_per_class,
        )

    def op_options(self, spec: ModelSpec) -> "DetectionPostProcessOptions":
        from .postprocess_op import DetectionPostProcessOptions

        post = self.postprocessing(spec)
        sy, sx, sh, sw = spec.box_coder.scales
        return DetectionPostProcessOptions(
            max_detections=post.max_detections, num_classes=spec.num_classes,
            nms_score_threshold=post.score_threshold, nms_iou_threshold=post.iou_threshold,
            detections_per_class=post.detections_per_class, use_regular_nms=self.regular_nms,
            y_scale=sy, x_scale=sx, h_scale=sh, w_scale=sw,
        )
