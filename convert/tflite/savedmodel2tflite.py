"""SavedModel (``raw`` signature) -> TFLite, in every quantization.

File names in the output folder: ``<model>_<quant>[_nonms].tflite``, e.g.
``ssd_mnv2_int8.tflite`` (full-integer, calibrated, uint8 input, embedded
NMS: the default), ``ssd_mnv2_fp32.tflite``, ``ssd_mnv2_fp16.tflite``,
``ssd_mnv2_dynamic.tflite``, ``ssd_mnv2_int8_nonms.tflite`` (raw outputs).
``--edgetpu`` adds ``ssd_mnv2_int8_edgetpu_report.md`` and, when the
compiler is installed, its ``ssd_mnv2_int8_edgetpu.tflite`` (``edgetpu.py``).

The graph converted is: normalized image -> network -> activated scores ->
``TFLite_Detection_PostProcess`` (boxes, classes, scores, count as the TF OD
API's TFLite models give them), or the raw box encodings and activated
scores (``nms=False``; the runtime's shared NMS does the rest). Every file
carries its spec, with output roles and the postprocessing it was built
with, in the appended zip that ``ssdkit.runtime.model_files`` reads, and the
standard TFLite metadata that names the labels file in that zip
(``tflite_metadata.py``: MediaPipe's ObjectDetector loads the NMS models).

``keep_float`` leaves the named layers of an int8 model in float (what
``--keep-float`` and the quantization debugger's ranking in ``quant_debug.py``
feed): the model is calibrated as usual, then quantized by the same MLIR
quantizer with those layers on its denylist.

NMS defaults come from the spec (100 detections, 100 per class, IoU 0.6,
score 1e-8), the same as the SavedModel's and ONNX's, not the OD API's
TFLite export defaults (10 detections): one model, one behaviour.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf

from ssdkit.fileio import atomic_path
from ssdkit.log import progress
from ssdkit.runtime.model_files import embed_in_tflite
from ssdkit.runtime.preprocess import preprocess
from ssdkit.runtime.roles import DETECTION_ROLES, RAW_ROLES, OutputRoles
from ssdkit.runtime.spec import ModelSpec

from ..savedmodel.keras2savedmodel import scores_from_logits
from .flatbuffer import ops, set_custom_options, signature_outputs
from .metadata import with_metadata
from .options import IO_NAMES, QUANTS, Quant, TFLiteOptions  # noqa: F401 (TFLiteOptions: the options' old home)
from .postprocess_op import OP_NAME, detection_postprocess

IO_TYPES = dict(zip(IO_NAMES, (tf.uint8, tf.int8, tf.float32)))

log = logging.getLogger(__name__)


def _load(saved_model: Path):
    """The loaded SavedModel (seconds: do it once). Keep it referenced while
    converting: its ``raw`` signature only holds weak references to the variables."""
    if not (Path(saved_model) / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{saved_model}: not a SavedModel folder (no saved_model.pb)")
    loaded = tf.saved_model.load(str(saved_model))
    if "raw" not in loaded.signatures:
        raise ValueError(f"{saved_model}: SavedModel has no 'raw' signature; export it with ssdkit")
    return loaded


def _graph(raw, spec: ModelSpec, options: TFLiteOptions):
    """The concrete function to convert, and an object tracking its variables.

    Tracking only the variables (not the loaded SavedModel with its hundreds of
    Keras functions) keeps the converter's internal save and load quick."""
    height, width = spec.input_size
    anchors = tf.constant(spec.anchors_center_size())

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32, name="normalized_images")])
    def detect(normalized_images):
        outputs = raw(normalized_images=normalized_images)
        scores = scores_from_logits(outputs["class_predictions"], spec)
        if not options.nms:
            return {"box_encodings": outputs["box_encodings"], "class_predictions": scores}
        return detection_postprocess(outputs["box_encodings"], scores, anchors, options.op_options(spec))

    variables = tf.Module()
    variables.tracked = list(raw.variables)
    return detect.get_concrete_function(), variables


def _representative(spec: ModelSpec, images: Sequence[np.ndarray]):
    """Calibration tensors: the device's own preprocessing of each image.

    The first tensor gets one black and one white pixel, so the input's
    calibrated range is exactly that of pixels 0..255: a uint8 input then
    takes raw camera pixels (scale 1/std, zero point ~mean), as Coral's and
    MediaPipe's pipelines feed it, with no visible effect on other ranges."""
    black_white = np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8)
    extremes = preprocess(black_white, dataclasses.replace(spec.preprocessing, input_height=1, input_width=2))[0]

    def dataset() -> Iterator[list[np.ndarray]]:
        for count, image in enumerate(progress(images, "calibrating"), 1):
            tensor = preprocess(image, spec.preprocessing)[0]
            if count == 1:
                tensor[0, 0, :2] = extremes[0, 0]
            yield [tensor]

    return dataset


def _converter(raw, spec: ModelSpec, options: TFLiteOptions, calibration: Sequence[np.ndarray] | None):
    """The converter for ``options``, set up but not run."""
    function, variables = _graph(raw, spec, options)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], variables)
    converter.allow_custom_ops = True
    if options.quant != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if options.quant == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif options.quant == "int8":
        if not options.qat:  # a QAT graph carries its ranges in fake-quant ops
            converter.representative_dataset = _representative(spec, calibration)
            # TF 2.20 rejects INT8-only ops without a representative dataset even for a
            # QAT graph (a metrics hook checks before it looks at the graph); a QAT
            # export's integer-only graph is checked by tests/convert/test_qat.py instead.
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = IO_TYPES[options.io]
        # The postprocess op's outputs are float whatever the body; raw outputs follow --io.
        converter.inference_output_type = tf.float32 if options.nms else IO_TYPES[options.io]
    return converter


def _convert(raw, spec: ModelSpec, options: TFLiteOptions, calibration: Sequence[np.ndarray] | None) -> bytes:
    converter = _converter(raw, spec, options, calibration)
    return _quantize_keeping_float(converter, options.keep_float) if options.keep_float else converter.convert()


def _quantize_keeping_float(converter, names: Sequence[str]) -> bytes:
    """Full-integer quantization except the ops that write ``names``.

    TF 2.20's converter has no option for this. Its quantization debugger has
    (``QuantizationDebugOptions(denylisted_nodes=...)``), but its models have
    float I/O whatever the converter asked. Both calibrate with the converter
    and hand the calibrated model to one MLIR quantizer, so this does the same
    with the converter's own I/O types (uint8 input stays uint8)."""
    from tensorflow.lite.python.convert import mlir_quantize

    converter._experimental_calibrate_only = True  # as the debugger does: convert() stops after calibrating
    calibrated = converter.convert()
    known = {tensor.name for op in ops(calibrated) for tensor in op.outputs}
    unknown = [name for name in names if name not in known]
    if unknown:
        hints = [match for name in unknown for match in difflib.get_close_matches(name, known, n=1)]
        raise ValueError(f"--keep-float: the model has no layer named {', '.join(map(repr, unknown))}"
                         + (f" (did you mean {', '.join(map(repr, hints))}?)" if hints else "")
                         + "; layer names are output tensor names, as report.md's keep-float section lists them")
    return mlir_quantize(calibrated, input_data_type=converter.inference_input_type,
                         output_data_type=converter.inference_output_type, denylisted_nodes=list(names))


@contextlib.contextmanager
def loaded_converter(saved_model: Path, spec: ModelSpec, options: TFLiteOptions,
                     calibration: Sequence[np.ndarray] | None = None) -> Iterator[tf.lite.TFLiteConverter]:
    """The converter ``export_tflite`` would run, for tools that run it their
    own way (the quantization debugger). The SavedModel stays loaded inside the
    block: the converter's function only holds weak references to its variables."""
    if options.quant == "int8" and not options.qat:
        calibration = _check_calibration(calibration, spec)
    loaded = _load(saved_model)
    yield _converter(loaded.signatures["raw"], spec, options, calibration)


def _output_roles(model: bytes, options: TFLiteOptions) -> OutputRoles:
    """Names the outputs from the graph: the op's outputs are (boxes,
    classes, scores, count) by definition; raw ones keep their signature keys."""
    if options.nms:
        (op,) = [op for op in ops(model) if op.name == OP_NAME]
        return OutputRoles("detections", tuple(zip(DETECTION_ROLES, (t.name for t in op.outputs))))
    names = signature_outputs(model)
    return OutputRoles("raw", tuple((role, names[role]) for role in RAW_ROLES), scores_activated=True)


def _check_calibration(calibration: Sequence[np.ndarray] | None, spec: ModelSpec) -> Sequence[np.ndarray]:
    if not calibration:
        raise ValueError("int8 export needs representative images for calibration, got none")
    for image in calibration:
        preprocess(image, spec.preprocessing)  # fails here, not inside the converter, on a bad image
    return calibration


def export_tflite_variants(
    saved_model: Path, spec: ModelSpec, out_dir: Path, variants: Sequence[TFLiteOptions],
    calibration: Sequence[np.ndarray] | None = None,
) -> list[Path]:
    """Converts ``saved_model`` once per variant, loading it once, and writes
    each ``out_dir/<file_name>`` atomically. ``calibration``: RGB uint8
    images, needed by int8 variants."""
    if any(v.quant == "int8" and not v.qat for v in variants):
        calibration = _check_calibration(calibration, spec)
    loaded = _load(saved_model)
    written = []
    for options in variants:
        target = Path(out_dir) / options.file_name(spec.name)
        detail = f", calibrating on {len(calibration)} images" if options.quant == "int8" and not options.qat else ""
        detail = ", with the ranges of quantization-aware training" if options.quant == "int8" and options.qat else detail
        log.info(f"converting to {target.name}{detail}")
        model = _convert(loaded.signatures["raw"], spec, options, calibration)
        if options.nms:
            # The converter drops detections_per_class (see tflite_flatbuffer.py).
            model = set_custom_options(model, OP_NAME, {"detections_per_class": options.op_options(spec).detections_per_class})
        file_spec = dataclasses.replace(spec, postprocessing=options.postprocessing(spec), outputs=_output_roles(model, options))
        # Standard metadata first (it rebuilds the flatbuffer), then the zip of
        # the files it names: labels.txt and ssdkit_spec.json.
        model = with_metadata(model, file_spec)
        with atomic_path(target) as tmp_file:
            tmp_file.write_bytes(embed_in_tflite(model, file_spec))
        written.append(target)
    return written


def export_tflite(
    saved_model: Path, spec: ModelSpec, out_dir: Path, options: TFLiteOptions,
    calibration: Sequence[np.ndarray] | None = None,
) -> Path:
    """One variant: ``export_tflite_variants`` with a single options value."""
    return export_tflite_variants(saved_model, spec, out_dir, [options], calibration)[0]
