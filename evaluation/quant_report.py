"""The quantization report written beside an int8 export: what int8 costs and keeps.

It compares the int8 model with its fp32 twin on this machine: file size,
latency (median of timed ``invoke`` runs after a warm-up), the difference of
the raw outputs (box encodings and scores of the ``_nonms`` variants),
detection agreement (fp32 detections matched by int8 ones of the same class
at IoU >= 0.5) and COCO mAP on an evaluation set (default: the built-in
synthetic validation split). Written as ``report.json`` and ``report.md``
(TFLite) or ``onnx_report.json`` and ``onnx_report.md`` (ONNX, whose raw
files are the ``_raw`` and ``_raw_int8`` ones). A TFLite export with
``--keep-float auto`` adds a ``keep_float`` section (``quant_debug.py``).
"""
from __future__ import annotations

import json
import logging
import statistics
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ssdkit.datasets.records import Dataset
from ssdkit.fileio import write_text_atomic
from ssdkit.runtime import Detector
from ssdkit.tables import markdown_table

from .evaluate import load_dataset, predict_dataset
from .measure import machine_info, time_calls
from .metrics import coco_map
from .verify import detection_agreement, raw_difference, raw_outputs

# Given the report and its evaluation set, returns a keep-float section or None.
KeepFloat = Callable[[dict, Dataset], "dict | None"]

log = logging.getLogger(__name__)


def _latency_ms(detector: Detector, runs: int = 20) -> float:
    """Median of the model's own inference time (``Detector.timings.inference``),
    so the report isolates what quantization changes."""
    image = np.zeros((64, 64, 3), np.uint8)
    seconds = []

    def invoke(_: int) -> None:
        detector.detect(image)
        seconds.append(detector.timings.inference)

    time_calls(invoke, runs, warmup=3)
    return 1000 * statistics.median(seconds[3:])


def _raw_difference(fp32_raw: Path, int8_raw: Path, dataset: Dataset, count: int) -> dict:
    images = [dataset.load_image(record) for record in dataset.records[:count]]
    outputs = []
    for path in (fp32_raw, int8_raw):
        with Detector(path) as detector:
            outputs.append([raw_outputs(detector, image) for image in images])
    return raw_difference(*outputs)


def measure_model(path: Path, dataset: Dataset, count: int = 100) -> tuple[dict, list]:
    """One model's report row (file size, latency, mAP on the first ``count``
    images) and its detections on them."""
    detector = Detector(path, score_threshold=0.01)
    found = predict_dataset(detector, dataset, count)
    stats = coco_map(dataset.records[:count], dataset.labels, found)
    row = {"file": path.name, "size_mb": round(path.stat().st_size / 1e6, 3),
           "latency_ms": round(_latency_ms(detector), 2),
           "mAP": round(stats["mAP"], 4), "mAP@0.5": round(stats["mAP@0.5"], 4)}
    return row, found


def map_drop_points(fp32: dict, quantized: dict) -> float:
    """mAP@0.5 lost from the fp32 row to the quantized one, in points."""
    return round(100 * (fp32["mAP@0.5"] - quantized["mAP@0.5"]), 2)


def build_report(fp32: Path, int8: Path, fp32_raw: Path, int8_raw: Path, dataset: Dataset, count: int = 100) -> dict:
    models, found = {}, {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        models[name], found[name] = measure_model(path, dataset, count)
    records = dataset.records[:count]
    return {
        "models": models,
        "int8_vs_fp32": {
            "size_ratio": round(models["int8"]["size_mb"] / models["fp32"]["size_mb"], 3),
            "speedup": round(models["fp32"]["latency_ms"] / models["int8"]["latency_ms"], 3),
            "mAP@0.5_drop_points": map_drop_points(models["fp32"], models["int8"]),
            "detection_agreement": round(detection_agreement(found["fp32"], found["int8"]), 4),
            "raw_output_difference": _raw_difference(fp32_raw, int8_raw, dataset, min(count, 20)),
        },
        "evaluation_set": {"source": str(dataset.source), "images": len(records)},
        "machine": machine_info(),
    }


def write_report(report: dict, out_dir: Path, name: str = "report") -> tuple[Path, Path]:
    """``name.json`` and ``name.md`` in ``out_dir`` (each format's report has its own name)."""
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    write_text_atomic(json_path, json.dumps(report, indent=1) + "\n")
    m, q = report["models"], report["int8_vs_fp32"]
    raw = q["raw_output_difference"]
    lines = [
        "# Quantization report", "",
        f"Evaluation set: {report['evaluation_set']['source']} ({report['evaluation_set']['images']} images).", "",
        markdown_table(("model", "size (MB)", "latency (ms)", "mAP", "mAP@0.5"),
                       [(v["file"], v["size_mb"], v["latency_ms"], v["mAP"], v["mAP@0.5"]) for v in m.values()]),
        "",
        f"int8 vs fp32: size x{q['size_ratio']}, speed x{q['speedup']}, mAP@0.5 drop {q['mAP@0.5_drop_points']} points, "
        f"detection agreement {q['detection_agreement']:.1%}.",
        f"Raw output difference (max / mean): box encodings {raw['box_encodings']['max']:.3g} / "
        f"{raw['box_encodings']['mean']:.3g}, scores {raw['class_predictions']['max']:.3g} / "
        f"{raw['class_predictions']['mean']:.3g}.", "",
    ]
    if "keep_float" in report:
        lines += _keep_float_lines(report["keep_float"])
    write_text_atomic(md_path, "\n".join(lines))
    return json_path, md_path


def _keep_float_lines(section: dict) -> list[str]:
    kept = len(section["kept_in_float"])
    pure = section["int8"]
    lines = [
        "## Keep-float", "",
        f"int8 lost {pure['mAP@0.5_drop_points']} points of mAP@0.5, "
        f"more than the budget of {section['budget_points']}. "
        "The quantization debugger's worst layers (rmse/scale of each layer's int8 output against float on the "
        "calibration images; rounding alone gives 0.29):", "",
        markdown_table(("layer (output tensor)", "op", "rmse/scale", "in float"),
                       [(f"`{layer['tensor']}`", layer["op"], f"{layer['rmse/scale']:.3f}", "yes" if i < kept else "")
                        for i, layer in enumerate(section["ranking"])]),
        "",
        markdown_table(("model", "layers in float", "size (MB)", "latency (ms)", "mAP@0.5", "drop (points)"),
                       [("int8", 0, pure["size_mb"], pure["latency_ms"], pure["mAP@0.5"], pure["mAP@0.5_drop_points"]),
                        *(("mixed", t["layers_in_float"], t["size_mb"], t["latency_ms"], t["mAP@0.5"],
                           t["mAP@0.5_drop_points"]) for t in section["trials"])]),
        "",
    ]
    if kept:
        lines.append(f"{section['file']} now keeps the layers marked above in float ({kept}), within the budget; "
                     "the tables above measure the pure int8 model, as the other int8 files still are.")
    else:
        lines.append(f"No mix met the budget: {section['file']} stays pure int8. To export one anyway: "
                     "`--keep-float NAME,NAME` with names from the table.")
    return [*lines, ""]


def report_quantization(fp32: Path, int8: Path, fp32_raw: Path, int8_raw: Path, labels: Sequence[str],
                        out_dir: Path, name: str = "report", max_map_drop: float = 1.0,
                        keep_float: KeepFloat | None = None) -> list[Path]:
    """Measures int8 against fp32 on the evaluation set, writes the report,
    says the result in one line and warns when mAP@0.5 drops by more than
    ``max_map_drop`` points: the step every int8 export (TFLite, ONNX) ends with.

    ``keep_float`` then gets its chance to win the drop back; the report,
    written first without it, is rewritten with its section."""
    log.info("evaluating fp32 and int8 for the quantization report")
    dataset = load_dataset()
    if set(dataset.labels) != set(labels):
        log.warning("the model's labels are not the synthetic shapes; mAP in the report is not meaningful")
    report = build_report(fp32, int8, fp32_raw, int8_raw, dataset)
    paths = write_report(report, out_dir, name)
    summary = report["int8_vs_fp32"]
    drop = summary["mAP@0.5_drop_points"]
    log.info(f"int8 vs fp32: mAP@0.5 drop {drop} points, speed x{summary['speedup']}, "
             f"size x{summary['size_ratio']} (see {paths[1]})")
    section = keep_float(report, dataset) if keep_float is not None else None
    if section is not None:
        paths = write_report({**report, "keep_float": section}, out_dir, name)
    if drop > max_map_drop and not (section and section["kept_in_float"]):
        warnings.warn(f"int8 loses {drop} points of mAP@0.5, more than the budget of {max_map_drop}", stacklevel=3)
    return list(paths)
