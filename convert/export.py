"""``ssdkit export``: one entry point, one small registry of formats.

Each format is a function ``(model, out_dir, options) -> [written paths]``
living in its own source-to-destination module; this module only prepares
the model (weights, warnings) and dispatches.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .checkpoint import apply_weights, read_checkpoint
from .models.ssd import SSDModel, build_model, load_backbone_weights, warn_untrained
from .savedmodel2tflite import TFLiteOptions
from .zoo import ModelConfig


@dataclass(frozen=True)
class ExportOptions:
    """Format options; each exporter reads the fields it needs."""

    tflite: TFLiteOptions = TFLiteOptions()
    calib_data: str | None = None  # None: the built-in synthetic images
    calib_samples: int = 100
    opset: int = 17
    dynamic_batch: bool = False
    report: bool = True  # int8 only: compare with fp32 in report.json / report.md
    max_map_drop: float = 1.0  # points of mAP@0.5 the report accepts before warning


Exporter = Callable[[SSDModel, Path, ExportOptions], "list[Path]"]


def _savedmodel(model: SSDModel, out_dir: Path, options: ExportOptions) -> list[Path]:
    from .keras2savedmodel import export_savedmodel

    return [export_savedmodel(model, out_dir / "saved_model")]


def _tflite(model: SSDModel, out_dir: Path, options: ExportOptions) -> list[Path]:
    from ssdkit.calibration.sources import representative_images

    from .keras2savedmodel import export_savedmodel
    from .savedmodel2tflite import export_tflite

    calibration = None
    if options.tflite.quant == "int8":
        calibration = representative_images(options.calib_data, options.calib_samples)
    saved_model = export_savedmodel(model, out_dir / "saved_model")
    tflite = export_tflite(saved_model, model.spec, out_dir, options.tflite, calibration)
    written = [saved_model, tflite]
    if options.tflite.edgetpu:
        from .edgetpu import prepare

        written += prepare(tflite)
    if options.tflite.quant == "int8" and options.report:
        written += _quantization_report(saved_model, model, out_dir, options, calibration, tflite)
    return written


def _quantization_report(saved_model, model, out_dir, options, calibration, int8) -> list[Path]:
    """Exports the fp32 twin and both raw variants, then measures what int8 costs."""
    import dataclasses
    import warnings

    from ssdkit.calibration.coco import read_coco
    from ssdkit.calibration.synth import default_split

    from .quant_report import build_report, write_report
    from .savedmodel2tflite import export_tflite

    def variant(**changes):
        return export_tflite(saved_model, model.spec, out_dir, dataclasses.replace(options.tflite, **changes), calibration)

    fp32 = variant(quant="fp32")
    int8_raw, fp32_raw = variant(nms=False), variant(quant="fp32", nms=False)
    print("ssdkit export: evaluating fp32 and int8 for the quantization report", file=sys.stderr)
    dataset = read_coco(default_split("val") / "annotations.json")
    if set(dataset.labels) != set(model.spec.labels):
        print("ssdkit export: the model's labels are not the synthetic shapes; mAP in the report is not meaningful",
              file=sys.stderr)
    report = build_report(fp32, int8, fp32_raw, int8_raw, dataset)
    paths = write_report(report, out_dir)
    summary = report["int8_vs_fp32"]
    print(f"ssdkit export: int8 vs fp32: mAP@0.5 drop {summary['mAP@0.5_drop_points']} points, "
          f"speed x{summary['speedup']}, size x{summary['size_ratio']} (see {paths[1]})", file=sys.stderr)
    if summary["mAP@0.5_drop_points"] > options.max_map_drop:
        warnings.warn(f"int8 loses {summary['mAP@0.5_drop_points']} points of mAP@0.5, "
                      f"more than the budget of {options.max_map_drop}", stacklevel=2)
    return [fp32, int8_raw, fp32_raw, *paths]


def _onnx(model: SSDModel, out_dir: Path, options: ExportOptions) -> list[Path]:
    from .keras2savedmodel import export_savedmodel
    from .savedmodel2onnx import export_onnx

    saved_model = export_savedmodel(model, out_dir / "saved_model")
    return [saved_model, export_onnx(saved_model, model.spec, out_dir, options.opset, options.dynamic_batch)]


EXPORTERS: dict[str, Exporter] = {
    "savedmodel": _savedmodel,
    "tflite": _tflite,
    "onnx": _onnx,
}


def prepare_model(
    model_name: str,
    weights: str | Path | None = None,
    *,
    width: float | None = None,
    input_size: tuple[int, int] | None = None,
    labels: tuple[str, ...] | None = None,
    backbone_weights: str = "auto",
    seed: int = 0,
) -> SSDModel:
    """Builds the network with its weights: an ssdkit checkpoint if given
    (options given explicitly must agree with it), else ImageNet backbone
    weights when available and a random head, with an ``UntrainedWarning``."""
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    asked = {"width": width, "input_size": input_size, "labels": labels}
    if weights is None:
        config = ModelConfig(model_name, **{k: v for k, v in asked.items() if v is not None})
        model = build_model(config)
        warn_untrained(model.spec, load_backbone_weights(model, backbone_weights))
        return model
    config, _, arrays = read_checkpoint(weights)
    if config.model != model_name:
        raise ValueError(f"{weights}: checkpoint is for {config.model}, not {model_name}")
    for field, value in asked.items():
        if value is not None and value != getattr(config, field):
            raise ValueError(f"{weights}: checkpoint has {field}={getattr(config, field)!r}, which conflicts with {value!r}")
    model = build_model(config)
    apply_weights(model, arrays, weights)
    return model


def export(model: SSDModel, fmt: str, out_dir: str | Path, options: ExportOptions = ExportOptions()) -> list[Path]:
    if fmt not in EXPORTERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(EXPORTERS)}")
    out_dir = Path(out_dir)
    print(f"ssdkit export: writing {fmt} of {model.spec.name} to {out_dir}/", file=sys.stderr)
    return EXPORTERS[fmt](model, out_dir, options)
