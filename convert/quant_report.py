"""The quantization report written beside an int8 export: what int8 costs and keeps.

It compares the int8 model with its fp32 twin on this machine: file size,
latency (median of timed ``invoke`` runs after a warm-up), the difference of
the raw outputs (box encodings and scores of the ``_nonms`` variants),
detection agreement (fp32 detections matched by int8 ones of the same class
at IoU >= 0.5) and COCO mAP on an evaluation set (default: the built-in
synthetic validation split). Written as ``report.json`` and ``report.md``
(TFLite) or ``onnx_report.json`` and ``onnx_report.md`` (ONNX, whose raw
files are the ``_raw`` and ``_raw_int8`` ones).
"""
from __future__ import annotations

import json
import statistics
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ssdkit.calibration.coco import Dataset
from ssdkit.calibration.evaluate import load_dataset, predict_dataset
from ssdkit.calibration.measure import machine_info, time_calls
from ssdkit.calibration.metrics import coco_map
from ssdkit.fileio import write_text_atomic
from ssdkit.runtime import Detector
from ssdkit.runtime.preprocess import preprocess

from .verify import detection_agreement, raw_difference, raw_outputs


def _latency_ms(detector: Detector, runs: int = 20) -> float:
    """Median of ``invoke`` alone, so the report isolates what quantization changes."""
    tensor, _ = preprocess(np.zeros((64, 64, 3), np.uint8), detector.spec.preprocessing, detector.backend.inputs[0])
    return 1000 * statistics.median(time_calls(lambda _: detector.backend.run(tensor), runs, warmup=3))


def _raw_difference(fp32_raw: Path, int8_raw: Path, dataset: Dataset, count: int) -> dict:
    images = [dataset.load_image(record) for record in dataset.records[:count]]
    outputs = []
    for path in (fp32_raw, int8_raw):
        with Detector(path) as detector:
            outputs.append([raw_outputs(detector, image) for image in images])
    return raw_difference(*outputs)


def build_report(fp32: Path, int8: Path, fp32_raw: Path, int8_raw: Path, dataset: Dataset, count: int = 100) -> dict:
    detectors = {"fp32": Detector(fp32, score_threshold=0.01), "int8": Detector(int8, score_threshold=0.01)}
    found = {name: predict_dataset(d, dataset, count) for name, d in detectors.items()}
    records = dataset.records[:count]
    models = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        stats = coco_map(records, dataset.labels, found[name])
        models[name] = {"file": path.name, "size_mb": round(path.stat().st_size / 1e6, 3),
                        "latency_ms": round(_latency_ms(detectors[name]), 2),
                        "mAP": round(stats["mAP"], 4), "mAP@0.5": round(stats["mAP@0.5"], 4)}
    return {
        "models": models,
        "int8_vs_fp32": {
            "size_ratio": round(models["int8"]["size_mb"] / models["fp32"]["size_mb"], 3),
            "speedup": round(models["fp32"]["latency_ms"] / models["int8"]["latency_ms"], 3),
            "mAP@0.5_drop_points": round(100 * (models["fp32"]["mAP@0.5"] - models["int8"]["mAP@0.5"]), 2),
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
        "| model | size (MB) | latency (ms) | mAP | mAP@0.5 |", "|---|---|---|---|---|",
        *(f"| {v['file']} | {v['size_mb']} | {v['latency_ms']} | {v['mAP']} | {v['mAP@0.5']} |" for v in m.values()),
        "",
        f"int8 vs fp32: size x{q['size_ratio']}, speed x{q['speedup']}, mAP@0.5 drop {q['mAP@0.5_drop_points']} points, "
        f"detection agreement {q['detection_agreement']:.1%}.",
        f"Raw output difference (max / mean): box encodings {raw['box_encodings']['max']:.3g} / "
        f"{raw['box_encodings']['mean']:.3g}, scores {raw['class_predictions']['max']:.3g} / "
        f"{raw['class_predictions']['mean']:.3g}.", "",
    ]
    write_text_atomic(md_path, "\n".join(lines))
    return json_path, md_path


def report_quantization(fp32: Path, int8: Path, fp32_raw: Path, int8_raw: Path, labels: Sequence[str],
                        out_dir: Path, name: str = "report", max_map_drop: float = 1.0) -> list[Path]:
    """Measures int8 against fp32 on the evaluation set, writes the report,
    says the result in one line and warns when mAP@0.5 drops by more than
    ``max_map_drop`` points: the step every int8 export (TFLite, ONNX) ends with."""
    print("ssdkit export: evaluating fp32 and int8 for the quantization report", file=sys.stderr)
    dataset = load_dataset()
    if set(dataset.labels) != set(labels):
        print("ssdkit export: the model's labels are not the synthetic shapes; mAP in the report is not meaningful",
              file=sys.stderr)
    report = build_report(fp32, int8, fp32_raw, int8_raw, dataset)
    paths = write_report(report, out_dir, name)
    summary = report["int8_vs_fp32"]
    drop = summary["mAP@0.5_drop_points"]
    print(f"ssdkit export: int8 vs fp32: mAP@0.5 drop {drop} points, speed x{summary['speedup']}, "
          f"size x{summary['size_ratio']} (see {paths[1]})", file=sys.stderr)
    if drop > max_map_drop:
        warnings.warn(f"int8 loses {drop} points of mAP@0.5, more than the budget of {max_map_drop}", stacklevel=3)
    return list(paths)
