"""``ssdkit export``: one entry point, one small registry of formats.

Each format is a function ``(model, out_dir, options, saved_model) -> [written paths]``
living in its own source-to-destination module (``savedmodel/``,
``tflite/``, ``onnx/``); this module only dispatches. ``saved_model()``
writes the SavedModel every format starts from, through ``ExportFolder``
(``export_folder.py``: no files of another model are left beside the new
ones); an exporter calls it once its inputs (calibration data) are read, so a
bad input writes nothing. The model comes from ``checkpoint.prepare_model``.
Importing this module (and the options) needs no TensorFlow: the command
line validates the options before the converter is loaded.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ssdkit.log import timed
from ssdkit.runtime import limits

from .export_folder import ExportFolder
from .onnx.options import DEFAULT_OPSET, check_opset, check_quant
from .tflite.options import TFLiteOptions

if TYPE_CHECKING:
    from .models.ssd import SSDModel

FORMATS = ("savedmodel", "tflite", "onnx")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportOptions:
    """Format options; each exporter reads the fields it needs."""

    tflite: TFLiteOptions = TFLiteOptions()
    calib_data: str | None = None  # None: the built-in synthetic images
    calib_samples: int = 100
    opset: int = DEFAULT_OPSET
    dynamic_batch: bool = False
    onnx_nms: bool = False  # also <model>_nms[_int8].onnx: decoding and NonMaxSuppression in the graph
    onnx_quant: str = "fp32"  # int8: also <model>_raw_int8.onnx (static QDQ) and onnx_report.json / .md
    report: bool = True  # int8 only: compare with fp32 in report.json / .md (ONNX: onnx_report.json / .md)
    max_map_drop: float = 1.0  # points of mAP@0.5 the report accepts before warning
    keep_float_auto: bool = False  # TFLite int8 over max_map_drop: keep its worst layers in float (quant_debug.py)
    layer_errors: bool = False  # TFLite int8: the quantization debugger's per-layer error as node data (ssdkit explore)
    eval_data: str | None = None  # the report's data: COCO JSON, VOC folder or image folder (see _report_inputs)
    class_map: tuple[tuple[str, str], ...] = ()  # model label -> dataset label, for eval_data's categories

    def __post_init__(self):
        object.__setattr__(self, "class_map", tuple(dict(self.class_map).items()))
        limits.check(calib_samples=self.calib_samples, max_map_drop=self.max_map_drop)
        check_opset(self.opset)
        check_quant(self.onnx_quant)
        if self.keep_float_auto:
            self.tflite.check_float_layers()
            if self.tflite.keep_float:
                raise ValueError("give --keep-float auto or layer names, not both")
            if not self.report:
                raise ValueError("--keep-float auto works from the quantization report: drop --no-report")
        if self.layer_errors and not self.report:
            raise ValueError("--layer-errors runs with the quantization report: drop --no-report")
        if self.eval_data is not None and not Path(self.eval_data).exists():
            raise FileNotFoundError(f"{self.eval_data}: --eval-data not found")
        if self.class_map and self.eval_data is None:
            raise ValueError("--class-map maps the model's labels to --eval-data's categories: give --eval-data too")


Exporter = Callable[["SSDModel", Path, ExportOptions, Callable[[], Path]], "list[Path]"]


def _savedmodel(model: SSDModel, out_dir: Path, options: ExportOptions,
                write_saved_model: Callable[[], Path]) -> list[Path]:
    return [write_saved_model()]


def _report_inputs(model: SSDModel, options: ExportOptions):
    """The calibration images and the quantization report's ``EvaluationData``
    (None without a report), read before the slow export so that wrong data
    fails first, and the calibration source read once.

    The report's data, in order: ``--eval-data`` (a COCO JSON or VOC folder:
    labelled, the model's labels matched to its categories; a folder of plain
    images: agreement only); the synthetic validation split for a model
    trained on the synthetic shapes (``model.trained_on``); otherwise images
    held out from the calibration source (agreement only), or, when it has
    none to spare, the calibration images themselves, saying so."""
    from ssdkit.calibration.representative import representative_images, representative_split
    from ssdkit.datasets.reader import is_voc, read_dataset
    from ssdkit.datasets.synth import LABELS, SYNTHETIC_DATA
    from ssdkit.evaluation.quant_report import EVAL_IMAGES, HELD_OUT_IMAGES, EvaluationData

    labels = model.spec.labels
    if not options.report:
        return representative_images(options.calib_data, options.calib_samples), None
    if options.eval_data is not None:
        path = Path(options.eval_data)
        calibration = representative_images(options.calib_data, options.calib_samples)
        if path.is_dir() and not is_voc(path):
            images = representative_images(path, EVAL_IMAGES, shuffle=False)
            return calibration, EvaluationData(str(path), "--eval-data, a folder of images without labels",
                                               tuple(images))
        data = EvaluationData.from_dataset(read_dataset(path), labels, "--eval-data", dict(options.class_map))
        return calibration, data
    if model.trained_on == SYNTHETIC_DATA and set(labels) == set(LABELS):
        return representative_images(options.calib_data, options.calib_samples), EvaluationData.synthetic(labels)
    calibration, held_out = representative_split(options.calib_data, options.calib_samples, HELD_OUT_IMAGES)
    source = options.calib_data or "the built-in synthetic images"
    trained = f"trained on {model.trained_on}" if model.trained_on else "of unknown training data"
    if held_out:
        data = EvaluationData(f"{source}, {len(held_out)} images not calibrated on", f"the model is {trained} and "
                              "no --eval-data was given: images held out from the calibration data", tuple(held_out))
    else:
        data = EvaluationData(f"{source}, the calibration images", f"the model is {trained}, no --eval-data was "
                              "given and the calibration data has no images to spare", tuple(calibration))
    return calibration, data


def _tflite(model: SSDModel, out_dir: Path, options: ExportOptions,
            write_saved_model: Callable[[], Path]) -> list[Path]:
    """The asked model, then for int8 with a report the fp32 twin and both raw
    variants, all from one ``TFLiteSession``: the SavedModel is loaded once
    and int8 calibrated once, whatever the number of int8 variants."""
    from .tflite.savedmodel2tflite import TFLiteSession

    calibration, data = None, None
    if model.qat is not None:  # trained ranges: nothing to calibrate
        if options.keep_float_auto:
            raise ValueError("--keep-float auto needs calibration; a QAT checkpoint exports with its trained ranges")
        options = dataclasses.replace(options, tflite=dataclasses.replace(options.tflite, qat=True))
        if options.tflite.quant == "int8":
            _, data = _report_inputs(model, options)  # the report's data; no calibration
    elif options.tflite.quant == "int8":
        with timed(log, "read the calibration and report images"):
            calibration, data = _report_inputs(model, options)
        if options.keep_float_auto and not data.labelled:
            raise ValueError("--keep-float auto needs the mAP of labelled data: give --eval-data with a COCO JSON "
                             f"or VOC folder (the report would measure {data.describe()})")
    with timed(log, "wrote and checked the SavedModel"):
        saved_model = write_saved_model()
    with timed(log, "loaded the SavedModel"):  # the check's copy when write_saved_model has one
        session = TFLiteSession(saved_model, model.spec, calibration, getattr(write_saved_model, "loaded", None))
    if calibration is not None:
        session.tensors()  # a bad calibration image fails before the first conversion
    tflite = session.export(out_dir, options.tflite)
    written = [saved_model, tflite]
    if options.tflite.edgetpu:
        from .tflite.edgetpu import prepare

        written += prepare(tflite)
    if data is not None:
        written += _quantization_report(session, options, out_dir, data, tflite)
    log.debug(f"calibration passes: {session.calibration_passes}")
    return written


def _quantization_report(session, options: ExportOptions, out_dir: Path, data, int8: Path) -> list[Path]:
    """Exports the fp32 twin and both raw variants, then measures what int8
    costs and, with ``keep_float_auto``, what float layers win back.

    The quantization debugger (each int8 layer's error against float, about
    a sixth of an ssd_mnv2 export's time with it) runs only when asked for: with
    ``layer_errors`` (written as Model Explorer node data beside ``int8``
    for ``ssdkit explore``), or when ``--keep-float auto`` needs its ranking
    (the int8 drop is over the budget); then once, shared by both.

    The comparison models are plain CPU models (no Edge TPU checks); each is
    exported once, so with ``--no-nms`` the int8 model is its own raw variant.
    A QAT export has no calibration images for the debugger: no node data."""
    import dataclasses
    import functools

    from ssdkit.evaluation.node_data import write_node_data
    from ssdkit.evaluation.quant_report import report_quantization

    exported = {dataclasses.replace(options.tflite, edgetpu=False): int8}

    def variant(**changes) -> Path:
        wanted = dataclasses.replace(options.tflite, edgetpu=False, **changes)
        if wanted not in exported:
            exported[wanted] = session.export(out_dir, wanted)
        return exported[wanted]

    fp32 = variant(quant="fp32", keep_float=())
    int8_raw, fp32_raw = variant(nms=False), variant(quant="fp32", keep_float=(), nms=False)

    @functools.cache
    def errors():
        from .tflite.quant_debug import layer_errors

        return layer_errors(session, options.tflite)

    keep_float = None
    if options.keep_float_auto:
        from .tflite.quant_debug import keep_float_auto

        keep_float = functools.partial(keep_float_auto, session, options.tflite, int8, options.max_map_drop,
                                       errors=errors)
    report = report_quantization(fp32, int8, fp32_raw, int8_raw, data, out_dir, "report", options.max_map_drop,
                                 keep_float)
    node_data = None
    if options.layer_errors and options.tflite.qat:
        log.warning("--layer-errors: no per-layer error for a QAT export (the debugger needs calibration images); "
                    "no node data for ssdkit explore")
    elif options.layer_errors:  # after --keep-float auto, which may have replaced int8 by a mix
        node_data = write_node_data(int8, {layer.tensor: layer.rmse_per_scale for layer in errors()})
        if node_data is None:
            log.warning(f"{int8.name}: none of the {len(errors())} layers the quantization debugger measured "
                        "is an int8 op of it; no node data for ssdkit explore")
    written = [fp32, int8_raw, fp32_raw, *([node_data] if node_data else []), *report]
    return [path for path in dict.fromkeys(written) if path != int8]


def _onnx(model: SSDModel, out_dir: Path, options: ExportOptions,
          write_saved_model: Callable[[], Path]) -> list[Path]:
    """The raw file, then what derives from it: int8, NMS variants, report."""
    from .onnx.nms import export_onnx_nms
    from .onnx.quant import quantize_onnx
    from .onnx.savedmodel2onnx import export_onnx

    int8 = options.onnx_quant == "int8"
    if model.qat is not None and int8:
        raise ValueError("a QAT checkpoint's ONNX export is quantized already (QDQ from its fake-quant ops): "
                         "drop --quant int8")
    calibration, data = _report_inputs(model, options) if int8 else (None, None)
    saved_model = write_saved_model()
    raw = [export_onnx(saved_model, model.spec, out_dir, options.opset, options.dynamic_batch)]
    if int8:
        raw.append(quantize_onnx(raw[0], calibration))
    written = [saved_model, *raw]
    if options.onnx_nms:
        post = options.tflite.postprocessing(model.spec)  # --max-detections etc. apply to the ONNX NMS too
        written += [export_onnx_nms(path, model.spec, post) for path in raw]
    if data is not None:
        from ssdkit.evaluation.quant_report import report_quantization

        written += report_quantization(raw[0], raw[1], raw[0], raw[1], data, out_dir, "onnx_report",
                                       options.max_map_drop)
    return written


EXPORTERS: dict[str, Exporter] = dict(zip(FORMATS, (_savedmodel, _tflite, _onnx)))


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def export(model: SSDModel, fmt: str, out_dir: str | Path, options: ExportOptions = ExportOptions(),
           force: bool = False) -> list[Path]:
    """Writes ``model`` as ``fmt`` into ``out_dir``; returns the paths written.

    Raises ``FileExistsError`` (before writing anything) when ``out_dir``
    holds files of another model or files ssdkit did not write at the names
    it writes, unless ``force``: then those are removed, each named on stderr.
    """
    check_format(fmt)
    out_dir = Path(out_dir)
    folder = ExportFolder(out_dir, model.spec, force)
    folder.check()
    log.info(f"writing {fmt} of {model.spec.name} to {out_dir}/")

    return EXPORTERS[fmt](model, out_dir, options, _SavedModelWriter(model, folder))


class _SavedModelWriter:
    """What an exporter calls to write the SavedModel (``() -> Path``), once
    its inputs are read. ``loaded`` is then the SavedModel as its check
    loaded it, which the TFLite converter takes instead of loading it again."""

    def __init__(self, model: SSDModel, folder: ExportFolder):
        self.model, self.folder, self.loaded = model, folder, None

    def __call__(self) -> Path:
        from .savedmodel.keras2savedmodel import export_and_load_savedmodel

        def write(target: Path) -> Path:
            path, self.loaded = export_and_load_savedmodel(self.model, target)
            return path

        return self.folder.put_saved_model(write)
