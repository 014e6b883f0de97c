"""COCO mAP of any artifact on an annotated dataset: what ``ssdkit eval``,
``ssdkit verify`` and ``ssdkit bench`` report.

Every format goes through ``Detector`` (a SavedModel folder through its
``raw`` signature, decoded by the runtime), so all of them see the same
images, thresholds and postprocessing. A model's classes are matched to the
dataset's by label name, not by position: detections of classes the dataset
does not have are dropped, and a dataset class the model lacks scores AP 0,
as COCO's evaluation counts it.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ssdkit.datasets.reader import read_dataset
from ssdkit.datasets.records import Dataset, Record
from ssdkit.datasets.synth import default_split
from ssdkit.log import progress
from ssdkit.runtime import Detector
from ssdkit.runtime.detector import BATCH_SIZE

from .metrics import STAT_NAMES, coco_map

# Low enough that the precision/recall curve reaches full recall, as COCO evaluations do.
DEFAULT_THRESHOLD = 0.01

# (boxes [N, 4] normalized ymin, xmin, ymax, xmax; class ids [N]; scores [N]) of one image.
Prediction = tuple[np.ndarray, np.ndarray, np.ndarray]


def load_dataset(path: str | Path | None = None) -> Dataset:
    """The evaluation set: a COCO JSON or Pascal VOC folder, by default the
    built-in synthetic validation split (generated once into the cache)."""
    return read_dataset(path if path is not None else default_split("val") / "annotations.json")


def open_detector(path: str | Path, device: str | None = None,
                  score_threshold: float = DEFAULT_THRESHOLD, backend: str | None = None) -> Detector:
    """A ``Detector`` for a ``.tflite`` or ``.onnx`` file, or a SavedModel
    folder (run by TensorFlow, imported only then); ``backend`` as
    ``Detector``'s (default: from the file name)."""
    return Detector(path, device=device, score_threshold=score_threshold, backend=backend)


def predict(detector: Detector, image: np.ndarray) -> Prediction:
    """The detector's detections in ``image``, boxes normalized to it."""
    return _prediction(detector.detect(image), image)


def _prediction(found, image: np.ndarray) -> Prediction:
    height, width = image.shape[:2]
    boxes = np.array([d.box for d in found], np.float32).reshape(-1, 4)
    return (boxes / np.array([height, width, height, width], np.float32),
            np.array([d.class_id for d in found], np.int64), np.array([d.score for d in found], np.float32))


def predict_dataset(detector: Detector, dataset: Dataset, count: int | None = None) -> list[Prediction]:
    """Predictions for the first ``count`` records, ``BATCH_SIZE`` images per
    call when the model takes a batch (ONNX Runtime and OpenVINO run a batch
    faster than its images one by one), else one by one."""
    records = dataset.records[:count]
    if not detector.batches:
        return [predict(detector, dataset.load_image(record)) for record in progress(records, detector.model_path.name)]
    predictions: list[Prediction] = []
    batches = [records[start:start + BATCH_SIZE] for start in range(0, len(records), BATCH_SIZE)]
    for batch in progress(batches, detector.model_path.name, unit=f"batch of {BATCH_SIZE}"):
        images = [dataset.load_image(record) for record in batch]
        predictions += [_prediction(found, image) for found, image in zip(detector.detect_batch(images), images)]
    return predictions


def class_mapping(model_labels: Sequence[str], dataset_labels: Sequence[str]) -> np.ndarray:
    """Model class id -> dataset class id by label name (-1: a class the dataset
    does not have). Raises ``ValueError`` when they share no label; warns
    about dataset classes the model cannot detect."""
    mapping = np.array([dataset_labels.index(label) if label in dataset_labels else -1 for label in model_labels],
                       np.int64)
    if not (mapping >= 0).any():
        raise ValueError(f"the model's labels ({_listed(model_labels)}) and the dataset's "
                         f"({_listed(dataset_labels)}) have no name in common")
    missing = [label for label in dataset_labels if label not in model_labels]
    if missing:
        warnings.warn(f"the model has no class for {_listed(missing)}: they score AP 0 and count in the mAP",
                      stacklevel=2)
    return mapping


def evaluate(records: Sequence[Record], dataset_labels: Sequence[str], predictions: Sequence[Prediction],
             mapping: np.ndarray) -> dict:
    """COCO metrics of ``predictions`` (model class ids, turned into the
    dataset's by ``mapping``) against ``records``:
    ``{"metrics": {mAP, mAP@0.5, ...}, "per_class_AP": {label: AP@[.5:.95]}}``."""
    mapped = []
    for boxes, classes, scores in predictions:
        ids = mapping[np.asarray(classes, np.int64)]
        keep = ids >= 0
        mapped.append((np.asarray(boxes)[keep], ids[keep], np.asarray(scores)[keep]))
    stats = coco_map(records, dataset_labels, mapped)
    return {"metrics": {name: stats[name] for name in STAT_NAMES},
            "per_class_AP": {label: stats[f"AP/{label}"] for label in dataset_labels}}


def _listed(labels: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(list(labels)[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def parse_class_map(text: str | None) -> dict[str, str]:
    """``--class-map``: ``MODEL_LABEL=DATASET_LABEL`` pairs separated by
    commas, or a JSON file holding one object of such pairs."""
    if not text:
        return {}
    path = Path(text)
    if path.suffix.lower() == ".json" and path.is_file():
        import json

        try:
            pairs = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read the class map ({exc})") from None
        if not (isinstance(pairs, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in pairs.items())):
            raise ValueError(f"{path}: a class map is one JSON object of model label -> dataset label strings")
        return pairs
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        model_label, sep, dataset_label = (s.strip() for s in item.partition("="))
        if not sep or not model_label or not dataset_label:
            raise ValueError(f"--class-map {text!r}: expected MODEL_LABEL=DATASET_LABEL pairs separated by commas "
                             f"(or a .json file), got {item!r}")
        pairs[model_label] = dataset_label
    return pairs


def strict_class_mapping(model_labels: Sequence[str], dataset_labels: Sequence[str],
                         class_map: dict[str, str] | None = None, source: str | Path = "the dataset") -> np.ndarray:
    """``class_mapping`` for measurements that must mean something (the
    quantization report): model labels are renamed by ``class_map`` first,
    then every dataset category must be one of them, since a category the
    model cannot detect would score AP 0 and drag the mAP down for nothing
    quantization did. Model labels the dataset lacks are fine (their
    detections are dropped). Raises ``ValueError`` naming the labels that do not match."""
    class_map = dict(class_map or {})
    unknown = [label for label in class_map if label not in model_labels]
    if unknown:
        raise ValueError(f"--class-map names {_listed(unknown)}, which the model does not have "
                         f"(its labels: {_listed(model_labels)})")
    renamed = [class_map.get(label, label) for label in model_labels]
    missing = [label for label in dataset_labels if label not in renamed]
    if missing:
        unmatched = [label for label, name in zip(model_labels, renamed) if name not in dataset_labels]
        raise ValueError(f"{source}: categories {_listed(missing, 10)} match no label of the model"
                         + (f" (unmatched model labels: {_listed(unmatched, 10)})" if unmatched else "")
                         + "; say how they correspond with --class-map MODEL_LABEL=DATASET_LABEL,...")
    return np.array([dataset_labels.index(name) if name in dataset_labels else -1 for name in renamed], np.int64)
