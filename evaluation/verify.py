"""``ssdkit verify``: every format exported into a folder, against its SavedModel.

The same images go through the SavedModel (its ``raw`` signature, run by
TensorFlow) and through each ``.tflite`` and ``.onnx`` file beside it; all of
them are decoded by the runtime with the same thresholds. Per file:

- raw-output difference: max and mean ``|file - SavedModel|`` of the box
  encodings and of the class scores, compared after the model's activation
  so logits (ONNX) and activated scores (TFLite) meet on one scale. A file
  with embedded NMS shows its raw twin's numbers (``M_fp32_nonms.tflite``
  for ``M_fp32.tflite``, ``M_raw.onnx`` for ``M_nms.onnx``) when the twin is
  there; without one only its detections can be compared.
- detection agreement: the share of the SavedModel's detections scoring at
  least 0.5 that the file finds too (IoU >= 0.5, same class).
- COCO mAP on the images.

The check: a float format (fp32, fp16, fp32 ONNX) fails when its raw outputs
differ from the SavedModel's by more than the tolerance (relative to the
SavedModel's largest value of each output, at least 1), or, when it has
only detections, when it agrees on fewer than ``min_agreement`` of them; a
file that cannot be run fails too. Quantized files are reported, not checked
(their export's quantization report budgets the mAP they lose).

TensorFlow is imported only to open the SavedModel, so ``ssdkit bench`` can
use the rest on a device without it.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ssdkit.datasets.records import Dataset, Record
from ssdkit.log import progress
from ssdkit.runtime import Detector, limits
from ssdkit.runtime.boxes import iou_matrix
from ssdkit.runtime.model_files import SAVEDMODEL_FOLDER
from ssdkit.runtime.roles import RAW_ROLES

from .evaluate import DEFAULT_THRESHOLD, Prediction, class_mapping, evaluate, open_detector, predict

PRECISIONS = ("fp32", "fp16", "dynamic", "int8")
FLOAT_PRECISIONS = ("fp32", "fp16")
DEFAULT_IMAGES = 50
DEFAULT_TOLERANCE = 0.05  # fp16 of a random test network: 0.02; a network of another seed: over 1
DEFAULT_MIN_AGREEMENT = 0.9
AGREEMENT_MIN_SCORE = 0.5


@dataclass(frozen=True)
class Artifact:
    """One exported model in the folder: ``kind`` savedmodel, tflite or onnx."""

    path: Path
    kind: str
    precision: str

    @property
    def name(self) -> str:
        return self.path.name + ("/" if self.kind == "savedmodel" else "")


@dataclass
class Row:
    """What ``verify`` found for one artifact; ``check`` is reference, pass,
    FAIL (``problem`` says why) or ``-`` (not checked)."""

    file: str
    kind: str
    precision: str
    outputs: str = "-"  # raw, or detections for a file with embedded NMS
    raw_difference: dict | None = None  # {role: {"max", "mean", "reference_max"}}
    raw_source: str | None = None  # the raw twin the raw difference comes from
    agreement: float | None = None
    metrics: dict | None = None
    check: str = "-"
    problem: str | None = None


@dataclass(frozen=True)
class _Outputs:
    kind: str
    labels: tuple[str, ...]
    predictions: list[Prediction]
    raw: list[dict[str, np.ndarray]] | None


def find_artifacts(model_dir: str | Path, edgetpu: bool = False) -> list[Artifact]:
    """The SavedModel, ``.tflite`` and ``.onnx`` files in ``model_dir``;
    ``*_edgetpu.tflite`` only with ``edgetpu`` (it needs the accelerator)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise NotADirectoryError(f"{model_dir}: not a folder of exported models")
    found = []
    saved_model = model_dir / SAVEDMODEL_FOLDER
    if (saved_model / "saved_model.pb").is_file():
        found.append(Artifact(saved_model, "savedmodel", "fp32"))
    for path in sorted(model_dir.glob("*.tflite")) + sorted(model_dir.glob("*.onnx")):
        if edgetpu or not path.name.endswith("_edgetpu.tflite"):
            found.append(Artifact(path, path.suffix[1:], _precision(path)))
    if not found:
        raise FileNotFoundError(f"{model_dir}: no {SAVEDMODEL_FOLDER}/, .tflite or .onnx files to compare")
    return found


def raw_outputs(detector: Detector, image: np.ndarray) -> dict[str, np.ndarray]:
    """A raw-output model's box encodings [A, 4] and activated class scores
    [A, C] for ``image``, as float32, by role (``Detector.run_raw``)."""
    raw = detector.run_raw(image)
    return {"box_encodings": raw.box_encodings, "class_predictions": raw.class_scores}


def raw_difference(reference: Sequence[dict[str, np.ndarray]],
                   candidate: Sequence[dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Per role over all images: max and mean absolute difference, and the
    reference's largest absolute value (the scale ``relative_difference`` uses)."""
    result = {}
    for role in RAW_ROLES:
        worst, total, count, peak = 0.0, 0.0, 0, 0.0
        for ref, other in zip(reference, candidate):
            if ref[role].shape != other[role].shape:
                raise ValueError(f"{role} of shape {list(other[role].shape)}, the reference's is {list(ref[role].shape)}")
            diff = np.abs(ref[role] - other[role])
            worst, total, count = max(worst, float(diff.max())), total + float(diff.sum()), count + diff.size
            peak = max(peak, float(np.abs(ref[role]).max()))
        result[role] = {"max": worst, "mean": total / max(count, 1), "reference_max": peak}
    return result


def relative_difference(difference: dict[str, dict[str, float]]) -> float:
    """The largest difference over the roles, each relative to the reference's
    largest value: scores (0..1) stay as they are, box encodings (whose scale
    depends on the model) become comparable, so one tolerance fits every model."""
    return max(d["max"] / max(d["reference_max"], 1.0) for d in difference.values())


def detection_agreement(reference: Sequence[Prediction], candidate: Sequence[Prediction],
                        min_score: float = AGREEMENT_MIN_SCORE) -> float:
    """The share of reference detections scoring at least ``min_score`` that
    a candidate detection of the same class overlaps at IoU >= 0.5 (1.0 when
    the reference has none)."""
    matched = total = 0
    for (ref_boxes, ref_classes, ref_scores), (boxes, classes, _) in zip(reference, candidate):
        keep = ref_scores >= min_score
        total += int(keep.sum())
        if not keep.any() or len(boxes) == 0:
            continue
        same_class = ref_classes[keep][:, None] == classes[None, :]
        matched += int(((iou_matrix(ref_boxes[keep], boxes) >= 0.5) & same_class).any(axis=1).sum())
    return matched / total if total else 1.0


def raw_twin(file: str) -> str:
    """The name of the raw-output export of the same network as ``file``, a
    file with embedded NMS: ``M_fp32.tflite`` -> ``M_fp32_nonms.tflite``,
    ``M_nms[_int8].onnx`` -> ``M_raw[_int8].onnx``."""
    stem, _, suffix = file.rpartition(".")
    if suffix == "onnx":
        return "_".join("raw" if token == "nms" else token for token in stem.split("_")) + ".onnx"
    return f"{stem}_nonms.{suffix}"


def verify(artifacts: Sequence[Artifact], dataset: Dataset, count: int | None = DEFAULT_IMAGES,
           threshold: float = DEFAULT_THRESHOLD, tolerance: float = DEFAULT_TOLERANCE,
           min_agreement: float = DEFAULT_MIN_AGREEMENT) -> list[Row]:
    """One ``Row`` per artifact, measured on the first ``count`` images of
    ``dataset``. Without a SavedModel among ``artifacts`` only mAP is filled in."""
    limits.check(images=count, score_threshold=threshold, tolerance=tolerance, agreement=min_agreement)
    records = dataset.records[:count]
    if not records:
        raise ValueError(f"{dataset.source}: no images to verify on")
    images = [dataset.load_image(record) for record in records]
    reference = next((a for a in artifacts if a.kind == "savedmodel"), None)
    expected = _run(reference, images, threshold, keep_raw=True) if reference else None
    rows = []
    for artifact in artifacts:
        row = Row(artifact.name, artifact.kind, artifact.precision)
        rows.append(row)
        try:
            outputs = expected if artifact is reference else _run(artifact, images, threshold, expected is not None)
            row.outputs = outputs.kind
            if expected is not None and artifact is not reference:
                row.agreement = detection_agreement(expected.predictions, outputs.predictions)
                row.raw_difference = raw_difference(expected.raw, outputs.raw) if outputs.raw else None
        except (ValueError, RuntimeError, OSError) as exc:
            row.check, row.problem = "FAIL", str(exc)
            continue
        row.metrics = _metrics(records, dataset, outputs)
    if any(row.metrics is None and row.problem is None for row in rows):
        warnings.warn(f"no mAP: the models' labels and those of {dataset.source} have no name in common", stacklevel=2)
    _borrow_twin_differences(rows)
    for row in rows:
        _check(row, expected is not None, tolerance, min_agreement)
    return rows


def failed(rows: Sequence[Row]) -> bool:
    return any(row.check == "FAIL" for row in rows)


PARITY_HEADER = ("boxes diff max/mean", "scores diff max/mean", "agreement", "mAP", "mAP@0.5", "check")


def parity_cells(row: Row) -> list[str]:
    """The parity columns of ``row`` for a table (``PARITY_HEADER``)."""
    diff = row.raw_difference or {}
    via = f" (via {row.raw_source})" if row.raw_source else ""
    cells = [f"{diff[r]['max']:.2g} / {diff[r]['mean']:.2g}{via}" if r in diff else "-" for r in RAW_ROLES]
    metrics = row.metrics or {}
    return [*cells, "-" if row.agreement is None else f"{row.agreement:.1%}",
            *(f"{metrics[k]:.4f}" if k in metrics else "-" for k in ("mAP", "mAP@0.5")), row.check]


def _precision(path: Path) -> str:
    """fp32/fp16/dynamic/int8 from ssdkit's file names (``MODEL_<quant>...``);
    an ONNX file without one is fp32."""
    tokens = path.stem.lower().split("_")
    return next((p for p in PRECISIONS if p in tokens), "fp32" if path.suffix == ".onnx" else "unknown")


def _run(artifact: Artifact, images: Sequence[np.ndarray], threshold: float, keep_raw: bool) -> _Outputs:
    """Detections on every image, and raw outputs (a second inference) when
    ``keep_raw`` and the model has them."""
    with open_detector(artifact.path, score_threshold=threshold) as detector:
        kind = detector.roles.kind
        raw = [raw_outputs(detector, image) for image in images] if keep_raw and kind == "raw" else None
        predictions = [predict(detector, image) for image in progress(images, artifact.name)]
        return _Outputs(kind, detector.spec.labels, predictions, raw)


def _metrics(records: Sequence[Record], dataset: Dataset, outputs: _Outputs) -> dict | None:
    """COCO metrics, or None when the model and the dataset share no label."""
    try:
        mapping = class_mapping(outputs.labels, dataset.labels)
    except ValueError:
        return None
    return evaluate(records, dataset.labels, outputs.predictions, mapping)["metrics"]


def _borrow_twin_differences(rows: list[Row]) -> None:
    """A file with embedded NMS takes its raw twin's raw difference."""
    by_file = {row.file: row for row in rows}
    for row in rows:
        twin = by_file.get(raw_twin(row.file)) if row.outputs == "detections" else None
        if twin is not None and twin.raw_difference is not None:
            row.raw_difference, row.raw_source = twin.raw_difference, twin.file


def _check(row: Row, has_reference: bool, tolerance: float, min_agreement: float) -> None:
    if row.check == "FAIL":
        return
    if row.kind == "savedmodel":
        row.check = "reference"
    elif has_reference and row.precision in FLOAT_PRECISIONS:
        if row.raw_difference is not None:
            worst = relative_difference(row.raw_difference)
            if worst > tolerance:
                row.problem = (f"raw outputs differ from the SavedModel's by up to {worst:.3g} "
                               f"(tolerance {tolerance:g}, relative to its largest output value)")
        elif row.agreement is not None and row.agreement < min_agreement:
            row.problem = (f"finds {row.agreement:.1%} of the SavedModel's detections "
                           f"(at least {min_agreement:.0%} expected)")
        row.check = "FAIL" if row.problem else "pass"
