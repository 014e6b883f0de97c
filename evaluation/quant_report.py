"""The quantization report written beside an int8 export: what int8 costs and keeps.

It compares the int8 model with its fp32 twin on evaluation data that says
what it is (``EvaluationData``, chosen by the exporter):

- labelled data (``--eval-data`` COCO JSON or VOC folder, the model's labels
  matched to its categories by name and ``--class-map``; or the synthetic
  validation split for a model trained on the synthetic shapes): COCO mAP of
  both, and the drop ``--max-map-drop`` budgets and ``--keep-float auto`` acts on;
- any images (a plain folder, or images held out from the calibration data):
  no mAP, which would mean nothing, but the detection agreement of int8 with
  fp32 (``agreement.detection_agreement``: recall, precision, mean IoU) and
  the raw-output differences, measured on every report.

Latency is the interpreter alone with a stated thread count, fp32 and int8
in interleaved rounds, in a fresh process (``measure.compare_latency``, the
code ``make bench`` runs), beside the CPU's int8 capability: int8 is about
twice as fast as fp32 on AVX-512 VNNI and can be no faster on AVX2 alone.

Written as ``report.json`` and ``report.md`` (TFLite) or ``onnx_report.json``
and ``onnx_report.md`` (ONNX, whose raw files are the ``_raw`` and
``_raw_int8`` ones). A TFLite export with ``--keep-float auto`` adds a
``keep_float`` section (``convert/tflite/quant_debug.py``).
"""
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ssdkit.datasets.records import Dataset
from ssdkit.fileio import write_text_atomic
from ssdkit.log import progress, timed
from ssdkit.runtime import Detector
from ssdkit.tables import markdown_table

from .agreement import detection_agreement
from .evaluate import DEFAULT_THRESHOLD, Prediction, evaluate, load_dataset, predict, strict_class_mapping
from .measure import LATENCY_ROUNDS, LATENCY_RUNS, LATENCY_THREADS, int8_capability, int8_vs_fp32_latency, \
    machine_info, measure_latency_in_subprocess
from .verify import raw_difference, raw_outputs

EVAL_IMAGES = 100  # labelled images measured (the first of the dataset)
HELD_OUT_IMAGES = 50  # images held out from the calibration data for the agreement-only report
RAW_IMAGES = 20  # images whose raw outputs are compared

# Given the report and a function measuring one model's row, returns a keep-float section or None.
KeepFloat = Callable[[dict, Callable[[Path], dict]], "dict | None"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationData:
    """The images a report measures on and, when labelled, their annotations
    with the model-to-dataset class mapping.

    source: what the images are (a path, or a description), printed at the
      top of the report and in its summary line.
    why: how they were chosen (``--eval-data``, the model's training data, ...).
    """

    source: str
    why: str
    images: tuple[np.ndarray, ...]
    dataset: Dataset | None = None  # labelled: the records of ``images``, in order
    mapping: np.ndarray | None = None  # model class id -> dataset class id (-1: none)

    @property
    def labelled(self) -> bool:
        return self.dataset is not None

    def describe(self) -> str:
        kind = "labelled" if self.labelled else "no labels: agreement only"
        return f"{self.source} ({len(self.images)} images, {kind})"

    @classmethod
    def from_dataset(cls, dataset: Dataset, model_labels: Sequence[str], why: str,
                     class_map: dict[str, str] | None = None, count: int = EVAL_IMAGES) -> "EvaluationData":
        """The first ``count`` images of an annotated dataset; raises
        ``ValueError`` when its categories and the model's labels do not match."""
        mapping = strict_class_mapping(model_labels, dataset.labels, class_map, dataset.source)
        records = dataset.records[:count]
        if not records:
            raise ValueError(f"{dataset.source}: no images to evaluate on")
        subset = Dataset(dataset.labels, tuple(records), dataset.source, dataset.skipped)
        images = tuple(dataset.load_image(record) for record in records)
        return cls(str(dataset.source), why, images, subset, mapping)

    @classmethod
    def synthetic(cls, model_labels: Sequence[str], count: int = EVAL_IMAGES) -> "EvaluationData":
        return cls.from_dataset(load_dataset(), model_labels,
                                "the synthetic validation split: the model was trained on the synthetic shapes",
                                count=count)


def measure_model(path: Path, data: EvaluationData) -> tuple[dict, list[Prediction]]:
    """One model's report row (file size; mAP when the data is labelled) and
    its detections on the data's images. Latency is measured apart (``add_latency``)."""
    with Detector(path, score_threshold=DEFAULT_THRESHOLD) as detector:
        found = [predict(detector, image) for image in progress(data.images, path.name)]
    row = {"file": path.name, "size_mb": round(path.stat().st_size / 1e6, 3)}
    if data.labelled:
        metrics = evaluate(data.dataset.records, data.dataset.labels, found, data.mapping)["metrics"]
        row.update({"mAP": round(metrics["mAP"], 4), "mAP@0.5": round(metrics["mAP@0.5"], 4)})
    return row, found


def measure_row(path: Path, data: EvaluationData) -> dict:
    """``measure_model``'s row with the model's latency: what a keep-float trial reports."""
    row, _ = measure_model(path, data)
    row["latency_ms"] = measure_latency_in_subprocess([path])[str(path)]["median_ms"]
    return row


def map_drop_points(fp32: dict, quantized: dict) -> float:
    """mAP@0.5 lost from the fp32 row to the quantized one, in points."""
    return round(100 * (fp32["mAP@0.5"] - quantized["mAP@0.5"]), 2)


def _raw_difference(fp32_raw: Path, int8_raw: Path, images: Sequence[np.ndarray]) -> dict:
    outputs = []
    for path in (fp32_raw, int8_raw):
        with Detector(path) as detector:
            outputs.append([raw_outputs(detector, image) for image in images])
    return raw_difference(*outputs)


def build_report(fp32: Path, int8: Path, fp32_raw: Path, int8_raw: Path, data: EvaluationData,
                 threads: int = LATENCY_THREADS) -> dict:
    models, found = {}, {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        with timed(log, f"evaluated {path.name} on {len(data.images)} images"):
            models[name], found[name] = measure_model(path, data)
    with timed(log, "measured the latency"):
        latency = int8_vs_fp32_latency(fp32, int8, threads)
    models["fp32"]["latency_ms"], models["int8"]["latency_ms"] = latency["fp32_ms"], latency["int8_ms"]
    ratio = latency["ratio"]
    comparison = {
        "size_ratio": round(models["int8"]["size_mb"] / models["fp32"]["size_mb"], 3),
        "latency_ratio": round(ratio, 3),
        "speedup": round(1 / ratio, 3),
    }
    if data.labelled:
        comparison["mAP@0.5_drop_points"] = map_drop_points(models["fp32"], models["int8"])
    comparison["agreement"] = detection_agreement(found["fp32"], found["int8"]).as_dict()
    with timed(log, "compared the raw outputs"):
        comparison["raw_output_difference"] = _raw_difference(fp32_raw, int8_raw, data.images[:RAW_IMAGES])
    return {
        "evaluation_set": {"source": data.source, "images": len(data.images), "labelled": data.labelled,
                           "why": data.why},
        "models": models,
        "int8_vs_fp32": comparison,
        "latency": {"method": "interpreter invoke alone (the models with their postprocess op), fp32 and int8 in "
                              "interleaved rounds, in a separate process (evaluation/measure.py int8_vs_fp32_latency, "
                              "make bench's int8 / fp32 line)",
                    "threads": threads, "rounds": LATENCY_ROUNDS, "runs_per_round": LATENCY_RUNS,
                    "cpu_int8": int8_capability()},
        "machine": machine_info(),
    }


def report_lines(report: dict) -> list[str]:
    """report.md without its keep-float section."""
    m, q, e, t = report["models"], report["int8_vs_fp32"], report["evaluation_set"], report["latency"]
    raw, a = q["raw_output_difference"], q["agreement"]
    labelled = e["labelled"]
    lines = [
        "# Quantization report", "",
        f"Evaluation data: {e['source']} ({e['images']} images, {'labelled' if labelled else 'no labels'}): "
        f"{e['why']}.", "",
        markdown_table(("model", "size (MB)", "latency (ms)", "mAP", "mAP@0.5"),
                       [(v["file"], v["size_mb"], v["latency_ms"], v.get("mAP", "-"), v.get("mAP@0.5", "-"))
                        for v in m.values()]),
        "",
        f"Latency: {t['method']}; {t['threads']} threads, {t['rounds']} rounds of {t['runs_per_round']} runs per "
        f"model, median. CPU: {report['machine']['cpu']}, int8 instructions: {t['cpu_int8']}.", "",
        f"int8 vs fp32: size x{q['size_ratio']}, latency x{q['latency_ratio']} (int8 / fp32)"
        + (f", mAP@0.5 drop {q['mAP@0.5_drop_points']} points." if labelled else
           "; no mAP: the data has no labels (give --eval-data with a COCO JSON or VOC folder for one)."),
        f"Detection agreement of int8 with fp32 as the reference (scores >= {a['min_score']}, IoU >= {a['min_iou']}, "
        f"same class): recall {a['recall']:.1%}, precision {a['precision']:.1%}, mean IoU {a['mean_iou']:.3f} "
        f"({a['matched']} matched of {a['reference']} fp32 and {a['candidate']} int8 detections).",
        f"Raw output difference (max / mean): box encodings {raw['box_encodings']['max']:.3g} / "
        f"{raw['box_encodings']['mean']:.3g}, scores {raw['class_predictions']['max']:.3g} / "
        f"{raw['class_predictions']['mean']:.3g}.", "",
    ]
    return lines


def summary_line(report: dict, md_path: Path) -> str:
    """The one line the exporter logs: the data, then what int8 costs."""
    q, e, t = report["int8_vs_fp32"], report["evaluation_set"], report["latency"]
    drop = f"mAP@0.5 drop {q['mAP@0.5_drop_points']} points, " if "mAP@0.5_drop_points" in q else ""
    return (f"int8 vs fp32 on {e['source']} ({e['images']} images{'' if e['labelled'] else ', no labels'}): {drop}"
            f"agreement recall {q['agreement']['recall']:.1%} precision {q['agreement']['precision']:.1%}, "
            f"latency x{q['latency_ratio']} ({t['threads']} threads, CPU int8: {t['cpu_int8']}), "
            f"size x{q['size_ratio']} (see {md_path})")


def write_report(report: dict, out_dir: Path, name: str = "report") -> tuple[Path, Path]:
    """``name.json`` and ``name.md`` in ``out_dir`` (each format's report has its own name)."""
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    write_text_atomic(json_path, json.dumps(report, indent=1) + "\n")
    lines = report_lines(report)
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


def report_quantization(fp32: Path, int8: Path, fp32_raw: Path, int8_raw: Path, data: EvaluationData,
                        out_dir: Path, name: str = "report", max_map_drop: float = 1.0,
                        keep_float: KeepFloat | None = None) -> list[Path]:
    """Measures int8 against fp32 on ``data``, writes the report, says the
    result in one line and, on labelled data, warns when mAP@0.5 drops by
    more than ``max_map_drop`` points: the step every int8 export (TFLite,
    ONNX) ends with.

    ``keep_float`` (labelled data only) then gets its chance to win the drop
    back; the report, written first without it, is rewritten with its section."""
    log.info(f"evaluating fp32 and int8 for the quantization report on {data.describe()}")
    report = build_report(fp32, int8, fp32_raw, int8_raw, data)
    paths = write_report(report, out_dir, name)
    log.info(summary_line(report, paths[1]))
    drop = report["int8_vs_fp32"].get("mAP@0.5_drop_points")
    section = None
    if keep_float is not None and drop is not None:
        section = keep_float(report, lambda path: measure_row(path, data))
    if section is not None:
        paths = write_report({**report, "keep_float": section}, out_dir, name)
    if drop is not None and drop > max_map_drop and not (section and section["kept_in_float"]):
        warnings.warn(f"int8 loses {drop} points of mAP@0.5 on {data.source}, more than the budget of "
                      f"{max_map_drop}", stacklevel=3)
    return list(paths)
