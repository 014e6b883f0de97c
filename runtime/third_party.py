"""What the ``Detector`` needs to turn a model's outputs into detections
(``DetectorSpec``), from ssdkit's own spec or from a third-party spec JSON.

ssdkit artifacts carry a ``ModelSpec`` (spec.py), mapped here by
``DetectorSpec.from_model_spec``. Other SSD models (TF1/TF2 OD API TFLite
detectors, MediaPipe's BlazeFace, ...) are described by a JSON file with
``"ssdkit_third_party_spec": 1``; runtime/README.md documents the schema and
runtime/specs/ ships examples, loadable by name (``spec="blazeface_short_range"``).
Both kinds of JSON are accepted wherever a spec file is (``--spec``, sidecars).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np

from . import anchors as anchor_math
from .box_coder import SSD_SCALES
from .mediapipe_anchors import MediaPipeSsdAnchors
from .spec import ModelSpec, MultipleGridAnchors, MultiscaleGridAnchors, OutputRoles, Preprocessing

THIRD_PARTY_VERSION = 1
RAW_ROLES = ("box_encodings", "class_predictions")
DETECTION_ROLES = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
NMS_KINDS = ("tflite", "tflite_regular", "hard", "weighted")


@dataclass(frozen=True)
class GridAnchors:
    """The OD API's generators (``spec.py``) on the predictor's feature maps."""

    generator: Union[MultipleGridAnchors, MultiscaleGridAnchors]
    feature_map_shapes: tuple[tuple[int, int], ...]
    input_size: tuple[int, int]

    def center_size(self) -> np.ndarray:
        corners = self.generator.generate(list(self.feature_map_shapes), *self.input_size)
        return anchor_math.corners_to_center_size(corners).astype(np.float32)


@dataclass(frozen=True)
class FileAnchors:
    """Anchors listed in a ``.npy`` or ``.csv`` file, one row per anchor:
    ``yxhw`` (ycenter, xcenter, h, w: TFLite's op), ``xywh`` (xcenter,
    ycenter, w, h: MediaPipe's anchor files) or ``corners`` (ymin, xmin, ymax, xmax)."""

    path: Path
    layout: Literal["yxhw", "xywh", "corners"] = "yxhw"

    def center_size(self) -> np.ndarray:
        try:
            values = np.load(self.path) if self.path.suffix == ".npy" else np.loadtxt(self.path, delimiter=",", ndmin=2)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.path}: cannot read anchors ({exc})") from exc
        if values.ndim != 2 or values.shape[1] != 4:
            raise ValueError(f"{self.path}: anchors of shape {values.shape}, expected [anchors, 4]")
        values = values.astype(np.float32)
        if self.layout == "xywh":
            return values[:, [1, 0, 3, 2]]
        if self.layout == "corners":
            return anchor_math.corners_to_center_size(values).astype(np.float32)
        return values


Anchors = Union[GridAnchors, FileAnchors, MediaPipeSsdAnchors]


@dataclass(frozen=True)
class BoxCoding:
    """How raw box outputs decode against the anchors.

    ``faster_rcnn``: (ty, tx, th, tw) divided by ``scales``, sizes through
    exp (the OD API and TFLite's op). ``pixel``: MediaPipe's offsets and
    sizes divided by ``scales`` (usually the input size in pixels), sizes
    linear unless ``exponential_size``. ``order`` is the layout of the first
    four values of a box output (further values, e.g. keypoints, are ignored).
    """

    kind: Literal["faster_rcnn", "pixel"] = "faster_rcnn"
    scales: tuple[float, float, float, float] = SSD_SCALES
    order: Literal["yxhw", "xywh"] = "yxhw"
    exponential_size: bool = False


@dataclass(frozen=True)
class ScoreCoding:
    """Raw class outputs -> scores: ``activation`` after clipping the raw
    values to [-clip, clip] (MediaPipe's ``score_clipping_thresh``);
    ``background``: column 0 is a background class (the OD API's layout)."""

    activation: Literal["sigmoid", "softmax", "none"] = "sigmoid"
    clip: float | None = None
    background: bool = True


@dataclass(frozen=True)
class Nms:
    """Non-max suppression of raw outputs.

    ``tflite``/``tflite_regular``: TFLite's postprocess op (fast / regular
    mode) exactly, as a model with the op embedded would give.
    ``hard``: greedy per-class NMS over every (anchor, class) above the score
    threshold (``class_agnostic``: one NMS over all classes).
    ``weighted``: MediaPipe's weighted NMS over each anchor's best class.
    """

    kind: Literal["tflite", "tflite_regular", "hard", "weighted"] = "tflite"
    score_threshold: float = 1e-8
    iou_threshold: float = 0.6
    max_detections: int = 100
    detections_per_class: int = 100
    class_agnostic: bool = False


@dataclass(frozen=True)
class DetectorSpec:
    """Input, anchors, decoding and NMS of one detector.

    ``anchors`` may be None for a model whose outputs are already detections.
    ``outputs`` names the output roles (a role may name a tensor by index).
    ``class_offset`` is subtracted from the class ids a postprocessed model
    outputs (1 for 1-based ids, as OD API SavedModel exports have).
    """

    name: str
    preprocessing: Preprocessing
    labels: tuple[str, ...] = ()
    anchors: Anchors | None = None
    box_coding: BoxCoding = field(default_factory=BoxCoding)
    scores: ScoreCoding = field(default_factory=ScoreCoding)
    nms: Nms = field(default_factory=Nms)
    outputs: OutputRoles | None = None
    class_offset: int = 0

    def __post_init__(self):
        _validate(self)

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.preprocessing.input_height, self.preprocessing.input_width)

    @classmethod
    def from_model_spec(cls, spec: ModelSpec) -> "DetectorSpec":
        post = spec.postprocessing
        return cls(
            name=spec.name, preprocessing=spec.preprocessing, labels=spec.labels,
            anchors=GridAnchors(spec.anchors, spec.feature_map_shapes, spec.input_size),
            box_coding=BoxCoding("faster_rcnn", spec.box_coder.scales),
            scores=ScoreCoding(post.score_activation),
            nms=Nms("tflite", post.score_threshold, post.iou_threshold, post.max_detections, post.detections_per_class),
            outputs=spec.outputs,
        )


def _validate(spec: DetectorSpec) -> None:
    """Every value and combination a spec can get wrong, each with the value and what was expected."""
    pre, boxes, scores, nms = spec.preprocessing, spec.box_coding, spec.scores, spec.nms
    checks = [
        (pre.input_height > 0 and pre.input_width > 0, f"input size {pre.input_height}x{pre.input_width}, expected positive"),
        (pre.resize in ("stretch", "letterbox"), f"resize {pre.resize!r}, expected 'stretch' or 'letterbox'"),
        (pre.color_order in ("RGB", "BGR"), f"color_order {pre.color_order!r}, expected 'RGB' or 'BGR'"),
        (len(pre.mean) == 3 and len(pre.std) == 3 and all(pre.std),
         f"mean {list(pre.mean)} and std {list(pre.std)}, expected 3 values each, std nonzero"),
        (boxes.kind in ("faster_rcnn", "pixel"), f"box coder {boxes.kind!r}, expected 'faster_rcnn' or 'pixel'"),
        (boxes.order in ("yxhw", "xywh"), f"box order {boxes.order!r}, expected 'yxhw' or 'xywh'"),
        (len(boxes.scales) == 4 and all(boxes.scales), f"box scales {list(boxes.scales)}, expected 4 nonzero values"),
        (not (boxes.exponential_size and boxes.kind == "faster_rcnn"),
         "exponential_size is for the 'pixel' box coder ('faster_rcnn' sizes are always exponential)"),
        (scores.activation in ("sigmoid", "softmax", "none"),
         f"score activation {scores.activation!r}, expected 'sigmoid', 'softmax' or 'none'"),
        (scores.clip is None or scores.clip > 0, f"score clip {scores.clip}, expected a positive value or null"),
        (nms.kind in NMS_KINDS, f"nms kind {nms.kind!r}, expected one of {', '.join(NMS_KINDS)}"),
        (not (nms.kind.startswith("tflite") and boxes.kind != "faster_rcnn"),
         f"nms kind {nms.kind!r} is TFLite's op, which decodes 'faster_rcnn' boxes only; use 'hard' or 'weighted'"),
        (0 < nms.iou_threshold <= 1, f"iou_threshold {nms.iou_threshold}, expected a value in (0, 1]"),
        (nms.max_detections > 0 and nms.detections_per_class > 0,
         f"max_detections {nms.max_detections} and detections_per_class {nms.detections_per_class}, expected positive"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"spec {spec.name!r}: {message}")


def shipped_specs() -> list[str]:
    folder = resources.files("ssdkit.runtime").joinpath("specs")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_spec(source: str | Path) -> DetectorSpec:
    """A spec from a JSON file (ssdkit's or the third-party schema), or a
    shipped spec by name (``shipped_specs()``)."""
    path = Path(source)
    if not path.is_file() and path.suffix != ".json" and str(source) in shipped_specs():
        resource = resources.files("ssdkit.runtime").joinpath(f"specs/{source}.json")
        with resources.as_file(resource) as shipped:
            return parse_spec(shipped.read_text(), shipped.parent, f"shipped spec {source}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such spec file (shipped specs: {', '.join(shipped_specs())})")
    return parse_spec(path.read_text(), path.parent, str(path))


def parse_spec(text: str, base_dir: Path, source: str) -> DetectorSpec:
    """Parses spec JSON; relative file names in it (anchors, labels) are in ``base_dir``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a spec is a JSON object")
    try:
        if "ssdkit_spec_version" in data:
            return DetectorSpec.from_model_spec(ModelSpec.from_dict(data))
        if "ssdkit_third_party_spec" in data:
            return _third_party(data, base_dir)
    except (ValueError, KeyError, TypeError) as exc:
        what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"{source}: {what}") from exc
    raise ValueError(f"{source}: neither an ssdkit spec ('ssdkit_spec_version') "
                     "nor a third-party spec ('ssdkit_third_party_spec')")


_TOP_LEVEL = {"ssdkit_third_party_spec", "name", "preprocessing", "labels", "labels_file", "anchors", "box_coder",
              "scores", "nms", "outputs", "class_offset"}


def _third_party(data: dict[str, Any], base_dir: Path) -> DetectorSpec:
    version = data["ssdkit_third_party_spec"]
    if version != THIRD_PARTY_VERSION:
        raise ValueError(f"third-party spec version {version!r} is not supported, expected {THIRD_PARTY_VERSION}")
    unknown = set(data) - _TOP_LEVEL
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}, expected some of {sorted(_TOP_LEVEL)}")
    if "labels" in data and "labels_file" in data:
        raise ValueError("give 'labels' or 'labels_file', not both")
    preprocessing = _build(Preprocessing, data["preprocessing"], "preprocessing")
    if "labels_file" in data:
        labels = tuple(line.strip() for line in (base_dir / data["labels_file"]).read_text().splitlines() if line.strip())
    else:
        labels = tuple(data.get("labels", ()))
    box_coder = dict(data.get("box_coder", {}))
    box_coder.setdefault("kind", "faster_rcnn")
    return DetectorSpec(
        name=data["name"], preprocessing=preprocessing, labels=labels,
        anchors=_anchors(data["anchors"], preprocessing, base_dir) if data.get("anchors") else None,
        box_coding=_build(BoxCoding, box_coder, "box_coder"),
        scores=_build(ScoreCoding, data.get("scores", {}), "scores"),
        nms=_build(Nms, data.get("nms", {}), "nms"),
        outputs=_roles(data["outputs"]) if data.get("outputs") else None,
        class_offset=int(data.get("class_offset", 0)),
    )


def _anchors(values: dict[str, Any], pre: Preprocessing, base_dir: Path) -> Anchors:
    values = dict(values)
    kind = values.pop("kind", None)
    if kind == "mediapipe_ssd":
        return _build(MediaPipeSsdAnchors, values, "anchors")
    if kind == "file":
        anchors = _build(FileAnchors, values, "anchors")
        return dataclasses.replace(anchors, path=base_dir / anchors.path)
    generators = {"multiple_grid": MultipleGridAnchors, "multiscale_grid": MultiscaleGridAnchors}
    if kind in generators:
        if "feature_map_shapes" not in values:
            raise ValueError(f"anchors of kind {kind!r} need 'feature_map_shapes' ([[height, width], ...] per layer)")
        shapes = tuple(tuple(int(v) for v in shape) for shape in values.pop("feature_map_shapes"))
        return GridAnchors(_build(generators[kind], values, "anchors"), shapes, (pre.input_height, pre.input_width))
    raise ValueError(f"anchors kind {kind!r}, expected one of file, mediapipe_ssd, multiple_grid, multiscale_grid")


def _roles(values: dict[str, Any]) -> OutputRoles:
    """``{"box_encodings": "name" or index, ..., "scores_activated": bool}`` -> OutputRoles."""
    values = dict(values)
    activated = bool(values.pop("scores_activated", False))
    roles = set(values)
    if roles == set(RAW_ROLES):
        kind = "raw"
    elif set(DETECTION_ROLES) - {"num_detections"} <= roles <= set(DETECTION_ROLES):
        kind = "detections"
    else:
        raise ValueError(f"outputs {sorted(roles)}, expected {list(RAW_ROLES)} or {list(DETECTION_ROLES)} "
                         "(num_detections optional)")
    for role, name in values.items():
        if not isinstance(name, (str, int)) or isinstance(name, bool):
            raise ValueError(f"outputs.{role} is {name!r}, expected a tensor name or an output index")
    return OutputRoles(kind, tuple(values.items()), scores_activated=activated)


def _build(cls, values: dict[str, Any], section: str):
    """A frozen dataclass from a JSON object; lists become tuples."""
    if not isinstance(values, dict):
        raise ValueError(f"'{section}' is {type(values).__name__}, expected an object")
    names = {f.name for f in dataclasses.fields(cls)}
    if section == "anchors":
        names.discard("kind")  # chose the class, read by the caller
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {section} field(s) {sorted(unknown)}, expected some of {sorted(names)}")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except TypeError as exc:
        raise ValueError(f"{section}: {exc}") from exc
