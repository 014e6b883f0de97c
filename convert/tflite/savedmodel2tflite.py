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
from ssdkit.log import progress, timed
from ssdkit.runtime.model_files import embed_in_tflite
from ssdkit.runtime.preprocess import preprocess
from ssdkit.runtime.roles import DETECTION_ROLES, RAW_ROLES, OutputRoles
from ssdkit.runtime.spec import ModelSpec

from ..savedmodel.keras2savedmodel import scores_from_logits
from .flatbuffer import ops, set_custom_options, signature_outputs, without_custom_op
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


def _representative_tensors(spec: ModelSpec, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Calibration tensors: the device's own preprocessing of each image.

    The first tensor gets one black and one white pixel, so the input's
    calibrated range is exactly that of pixels 0..255: a uint8 input then
    takes raw camera pixels (scale 1/std, zero point ~mean), as Coral's and
    MediaPipe's pipelines feed it, with no visible effect on other ranges."""
    black_white = np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8)
    extremes = preprocess(black_white, dataclasses.replace(spec.preprocessing, input_height=1, input_width=2))[0]
    tensors = []
    for image in images:
        tensors.append(preprocess(image, spec.preprocessing)[0])
    if tensors:
        tensors[0][0, 0, :2] = extremes[0, 0]
    return tensors


def _converter(raw, spec: ModelSpec, options: TFLiteOptions, dataset=None):
    """The converter for ``options``, set up but not run; ``dataset``: the
    representative dataset (a callable yielding input lists), for int8."""
    function, variables = _graph(raw, spec, options)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], variables)
    converter.allow_custom_ops = True
    if options.quant != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if options.quant == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif options.quant == "int8":
        if not options.qat:  # a QAT graph carries its ranges in fake-quant ops
            converter.representative_dataset = dataset
            # TF 2.20 rejects INT8-only ops without a representative dataset even for a
            # QAT graph (a metrics hook checks before it looks at the graph); a QAT
            # export's integer-only graph is checked by tests/convert/test_qat.py instead.
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = IO_TYPES[options.io]
        # The postprocess op's outputs are float whatever the body; raw outputs follow --io.
        converter.inference_output_type = tf.float32 if options.nms else IO_TYPES[options.io]
    return converter


def _check_layers(calibrated: bytes, names: Sequence[str]) -> None:
    known = {tensor.name for op in ops(calibrated) for tensor in op.outputs}
    unknown = [name for name in names if name not in known]
    if unknown:
        hints = [match for name in unknown for match in difflib.get_close_matches(name, known, n=1)]
        raise ValueError(f"--keep-float: the model has no layer named {', '.join(map(repr, unknown))}"
                         + (f" (did you mean {', '.join(map(repr, hints))}?)" if hints else "")
                         + "; layer names are output tensor names, as report.md's keep-float section lists them")


class TFLiteSession:
    """One loaded SavedModel, converted to as many variants as asked, with
    int8 calibration run at most once.

    Every int8 variant (with the postprocess op or raw, pure or with layers
    kept in float) is the same network quantized from the same calibration:
    the converter runs with ``_experimental_calibrate_only`` (as TFLite's
    quantization debugger does) and the calibrated float model is then
    quantized by the MLIR quantizer the converter itself calls, with each
    variant's I/O types and float layers. The raw variant's calibrated model
    is the postprocess graph's without the op (``flatbuffer.without_custom_op``):
    the layers before it ran on the same data. So the representative images
    are preprocessed once and calibrated on once per export, instead of once
    per variant and keep-float trial, and the SavedModel is loaded once.

    ``calibration``: RGB uint8 images; needed by int8 variants.
    ``loaded``: ``saved_model`` as ``tf.saved_model.load`` gave it already
    (the exporter's round-trip check loads it), so it is not loaded twice.
    ``calibration_passes`` counts the passes over them (tests read it).
    """

    def __init__(self, saved_model: Path, spec: ModelSpec, calibration: Sequence[np.ndarray] | None = None,
                 loaded=None):
        self.spec = spec
        self._images = calibration
        self._tensors: list[np.ndarray] | None = None
        if loaded is not None and "raw" not in loaded.signatures:
            raise ValueError(f"{saved_model}: SavedModel has no 'raw' signature; export it with ssdkit")
        self._loaded = loaded if loaded is not None else _load(saved_model)
        self._calibrated: dict[tuple, bytes] = {}
        self.calibration_passes = 0

    @property
    def raw(self):
        return self._loaded.signatures["raw"]

    def tensors(self) -> list[np.ndarray]:
        """The calibration tensors: each image through the device's
        preprocessing, once (a bad image fails here, not inside the converter)."""
        if self._tensors is None:
            if not self._images:
                raise ValueError("int8 export needs representative images for calibration, got none")
            self._tensors = _representative_tensors(self.spec, self._images)
        return self._tensors

    def dataset(self, what: str = "calibrating"):
        """The representative dataset over ``tensors()``, as the converter and
        the quantization debugger take it; every pass is counted."""
        tensors = self.tensors()

        def dataset() -> Iterator[list[np.ndarray]]:
            self.calibration_passes += what == "calibrating"
            for tensor in progress(tensors, what):
                yield [tensor]

        return dataset

    def calibrated(self, options: TFLiteOptions) -> bytes:
        """The calibrated float model of ``options``' graph (ranges recorded,
        nothing quantized yet), calibrating only when no graph that contains
        it was calibrated already."""
        post = options.op_options(self.spec) if options.nms else None
        if post in self._calibrated:
            return self._calibrated[post]
        if post is None and self._calibrated:
            with_op = next(iter(self._calibrated.values()))
            model = without_custom_op(with_op, OP_NAME, RAW_ROLES)
        else:
            converter = _converter(self.raw, self.spec, dataclasses.replace(options, quant="int8"), self.dataset())
            converter._experimental_calibrate_only = True  # convert() stops after calibrating
            with timed(log, f"calibrated on {len(self.tensors())} images"):
                model = converter.convert()
        self._calibrated[post] = model
        return model

    def convert(self, options: TFLiteOptions) -> bytes:
        """The converted model of ``options`` (before metadata)."""
        if options.quant != "int8" or options.qat:  # QAT: the trained ranges, nothing to calibrate
            return _converter(self.raw, self.spec, options).convert()
        calibrated = self.calibrated(options)
        if options.keep_float:
            _check_layers(calibrated, options.keep_float)
        return quantize(calibrated, IO_TYPES[options.io], tf.float32 if options.nms else IO_TYPES[options.io],
                        options.keep_float)

    def export(self, out_dir: Path, options: TFLiteOptions) -> Path:
        """Converts to ``options`` and writes ``out_dir/<file_name>`` atomically."""
        target = Path(out_dir) / options.file_name(self.spec.name)
        detail = ""
        if options.quant == "int8":
            detail = (", with the ranges of quantization-aware training" if options.qat
                      else f", calibrated on {len(self.tensors())} images")
        log.info(f"converting to {target.name}{detail}")
        with timed(log, f"converted {target.name}"):
            model = self.convert(options)
        if options.nms:
            # The converter drops detections_per_class (see tflite_flatbuffer.py).
            model = set_custom_options(model, OP_NAME, {"detections_per_class": options.op_options(self.spec).detections_per_class})
        file_spec = dataclasses.replace(self.spec, postprocessing=options.postprocessing(self.spec),
                                        outputs=_output_roles(model, options))
        # Standard metadata first (it rebuilds the flatbuffer), then the zip of
        # the files it names: labels.txt and ssdkit_spec.json.
        model = with_metadata(model, file_spec)
        with atomic_path(target) as tmp_file:
            tmp_file.write_bytes(embed_in_tflite(model, file_spec))
        return target


def quantize(calibrated: bytes, input_type, output_type, keep_float: Sequence[str] = ()) -> bytes:
    """A calibrated model quantized as ``TFLiteConverter.convert()`` does
    after calibrating (TF 2.20's ``_quantize``: the MLIR quantizer with the
    converter's I/O types, then read-only buffers deduplicated), with the
    ops writing ``keep_float`` left in float (the denylist TF's quantization
    debugger uses; the converter has no option for it)."""
    from tensorflow.lite.python.convert import deduplicate_readonly_buffers, mlir_quantize

    model = mlir_quantize(calibrated, input_data_type=input_type, output_data_type=output_type,
                          denylisted_nodes=list(keep_float) or None)
    return deduplicate_readonly_buffers(model)


@contextlib.contextmanager
def loaded_converter(saved_model: Path, spec: ModelSpec, options: TFLiteOptions,
                     calibration: Sequence[np.ndarray] | None = None) -> Iterator[tf.lite.TFLiteConverter]:
    """The converter ``export_tflite`` would run, for tools that run it their
    own way (the quantization debugger). The SavedModel stays loaded inside the
    block: the converter's function only holds weak references to its variables."""
    session = TFLiteSession(saved_model, spec, calibration)
    calibrating = options.quant == "int8" and not options.qat
    yield _converter(session.raw, spec, options, session.dataset() if calibrating else None)


def _output_roles(model: bytes, options: TFLiteOptions) -> OutputRoles:
    """Names the outputs from the graph: the op's outputs are (boxes,
    classes, scores, count) by definition; raw ones keep their signature keys."""
    if options.nms:
        (op,) = [op for op in ops(model) if op.name == OP_NAME]
        return OutputRoles("detections", tuple(zip(DETECTION_ROLES, (t.name for t in op.outputs))))
    names = signature_outputs(model)
    return OutputRoles("raw", tuple((role, names[role]) for role in RAW_ROLES), scores_activated=True)


def export_tflite_variants(
    saved_model: Path, spec: ModelSpec, out_dir: Path, variants: Sequence[TFLiteOptions],
    calibration: Sequence[np.ndarray] | None = None,
) -> list[Path]:
    """Converts ``saved_model`` to every variant in one ``TFLiteSession``
    (loaded once, calibrated once) and writes each ``out_dir/<file_name>``
    atomically. ``calibration``: RGB uint8 images, needed by int8 variants
    (not by those of a quantization-aware model, ``options.qat``)."""
    session = TFLiteSession(saved_model, spec, calibration)
    if any(v.quant == "int8" and not v.qat for v in variants):
        session.tensors()  # a bad image fails before the first conversion
    return [session.export(out_dir, options) for options in variants]


def export_tflite(
    saved_model: Path, spec: ModelSpec, out_dir: Path, options: TFLiteOptions,
    calibration: Sequence[np.ndarray] | None = None,
) -> Path:
    """One variant: ``export_tflite_variants`` with a single options value."""
    return export_tflite_variants(saved_model, spec, out_dir, [options], calibration)[0]
