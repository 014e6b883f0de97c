"""The quantization report written beside an int8 export: what int8 costs and keeps.

It compares the int8 model with its fp32 twin on this machine: file size,
latency (median of timed ``invoke`` runs after a warm-up), the difference of
the raw outputs (box encodings and scores of the ``_nonms`` variants),
detection agreement (fp32 detections matched by int8 ones of the same class
at IoU >= 0.5) and COCO mAP on an evaluation set (default: the built-in
synthetic validation split). Written as ``report.json`` and ``report.md``.
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from ssdkit.calibration.coco import Dataset
from ssdkit.calibration.metrics import coco_map
from ssdkit.fileio import write_text_atomic
from ssdkit.runtime import Detector
from ssdkit.runtime.boxes import iou_matrix
from ssdkit.runtime.preprocess import preprocess


def _latency_ms(detector: Detector, runs: int = 20) -> float:
    info = detector.backend.inputs[0]
    tensor, _ = preprocess(np.zeros((64, 64, 3), np.uint8), detector.spec.preprocessing, info.dtype,
                           (info.scale, info.zero_point))
    for _ in range(3):
        detector.backend.run(tensor)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        detector.backend.run(tensor)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _detections(detector: Detector, dataset: Dataset, count: int):
    out = []
    for record in dataset.records[:count]:
        found = detector.detect(dataset.load_image(record))
        scale = np.array([record.height, record.width] * 2, np.float32)
        boxes = np.array([d.box for d in found], np.float32).reshape(-1, 4) / scale
        out.append((boxes, np.array([d.class_id for d in found]), np.array([d.score for d in found])))
    return out


def _agreement(reference, candidate, min_score: float = 0.5) -> float:
    matched = total = 0
    for (ref_boxes, ref_classes, ref_scores), (boxes, classes, _) in zip(reference, candidate):
        keep = ref_scores >= min_score
        total += int(keep.sum())
        if not keep.any() or len(boxes) == 0:
            continue
        iou = iou_matrix(ref_boxes[keep], boxes)
        same = ref_classes[keep][:, None] == classes[None, :]
        matched += int(((iou >= 0.5) & same).any(axis=1).sum())
    return matched / total if total else 1.0


def _raw_difference(fp32_raw: Path, int8_raw: Path, dataset: Dataset, count: int) -> dict:
    fp32, int8 = Detector(fp32_raw), Detector(int8_raw)
    diffs = {"box_encodings": [], "class_predictions": []}
    for record in dataset.records[:count]:
        image = dataset.load_image(record)
        outputs = []
        for detector in (fp32, int8):
            info = detector.backend.inputs[0]
            tensor, _ = preprocess(image, detector.spec.preprocessing, info.dtype, (info.scale, info.zero_point))
            raw = detector.backend.run(tensor)
            outputs.append({role: detector.raw_output(raw, role) for role in diffs})
        for role in diffs:
            diffs[role].append(np.abs(outputs[0][role] - outputs[1][role]))
    return {role: {"max": float(np.max(d)), "mean": float(np.mean(d))} for role, d in diffs.items()}


def build_report(fp32: Path, int8: Path, fp32_raw: Path, int8_raw: Path, dataset: Dataset, count: int = 100) -> dict:
    detectors = {"fp32": Detector(fp32, score_threshold=0.01), "int8": Detector(int8, score_threshold=0.01)}
    found = {name: _detections(d, dataset, count) for name, d in detectors.items()}
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
            "detection_agreement": round(_agreement(found["fp32"], found["int8"]), 4),
            "raw_output_difference": _raw_difference(fp32_raw, int8_raw, dataset, min(count, 20)),
        },
        "evaluation_set": {"source": str(dataset.source), "images": len(records)},
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
    }


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
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
