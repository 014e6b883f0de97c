"""``DetectorSpec``: what the ``Detector`` needs to turn any model's outputs
into detections (input, anchors, box and score decoding, NMS), and reading
one from JSON.

Two kinds of JSON become a ``DetectorSpec``, wherever a spec file is
accepted (``--spec``, sidecars, embedded specs):

- ssdkit's own spec (``spec.ModelSpec``, in every ssdkit artifact), mapped
  by ``DetectorSpec.from_model_spec``;
- a third-party spec (``"ssdkit_third_party_spec": 1``) for SSD models from
  elsewhere (TF1/TF2 OD API TFLite detectors, MediaPipe's BlazeFace, ...):
  runtime/README.md documents the schema and runtime/specs/ ships examples,
  loadable by name (``spec="blazeface_short_range"``).

Both share ``spec.py``'s parts (preprocessing, the OD API's anchor
generators, output roles), its JSON builder, which checks the type of every
field, and its NMS defaults. ``validate`` checks every range and combination
in one place; each error is one line naming the file and the field.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np

from . import anchors as anchor_math
from .box_coder import SSD_SCALES
from .limits import LIMITS
from .mediapipe_anchors import MediaPipeSsdAnchors
from .roles import OutputRoles
from .spec import (ModelSpec, MultipleGridAnchors, MultiscaleGridAnchors, PostProcessing, Preprocessing, build,
                   json_value)

THIRD_PARTY_VERSION = 1
NMS_KINDS = ("tflite", "tflite_regular", "hard", "weighted")
_NMS_DEFAULTS = PostProcessing()  # ssdkit's and third-party specs share the OD API's SSD defaults


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
    """How raw box outputs decode against the anchors (``box_coder.py``).

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
    clip: Optional[float] = None
    background: bool = True


@dataclass(frozen=True)
class Nms:
    """Non-max suppression of raw outputs (defaults: ``spec.PostProcessing``'s).

    ``tflite``/``tflite_regular``: TFLite's postprocess op (fast / regular
    mode) exactly, as a model with the op embedded would give.
    ``hard``: greedy per-class NMS over every (anchor, class) above the score
    threshold (``class_agnostic``: one NMS over all classes).
    ``weighted``: MediaPipe's weighted NMS over each anchor's best class.
    """

    kind: Literal["tflite", "tflite_regular", "hard", "weighted"] = "tflite"
    score_threshold: float = _NMS_DEFAULTS.score_threshold
    iou_threshold: float = _NMS_DEFAULTS.iou_threshold
    max_detections: int = _NMS_DEFAULTS.max_detections
    detections_per_class: int = _NMS_DEFAULTS.detections_per_class
    class_agnostic: bool = False

    @classmethod
    def from_postprocessing(cls, post: PostProcessing, kind: str = "tflite") -> "Nms":
        """The NMS an ssdkit model was configured with (``kind`` tflite: what its embedded op runs)."""
        return cls(kind, post.score_threshold, post.iou_threshold, post.max_detections, post.detections_per_class)


@dataclass(frozen=True)
class DetectorSpec:
    """Input, anchors, decoding and NMS of one detector.

    ``anchors`` may be None for a model whose outputs are already detections.
    ``outputs`` names the output roles (a role may name a tensor by index).
    ``class_offset`` is subtracted from the class ids a postprocessed model
    outputs (1 for 1-based ids, as OD API SavedModel exports have).

    Raises:
      ValueError: a value out of range or an impossible combination (``validate``).
    """

    name: str
    preprocessing: Preprocessing
    labels: tuple[str, ...] = ()
    anchors: Optional[Anchors] = None
    box_coding: BoxCoding = field(default_factory=BoxCoding)
    scores: ScoreCoding = field(default_factory=ScoreCoding)
    nms: Nms = field(default_factory=Nms)
    outputs: Optional[OutputRoles] = None
    class_offset: int = 0

    def __post_init__(self):
        problem = validate(self)
        if problem:
            raise ValueError(f"spec {self.name!r}: {problem}")

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
            nms=Nms.from_postprocessing(post),
            outputs=spec.outputs,
        )


def validate(spec: DetectorSpec) -> str | None:
    """The first value or combination of ``spec`` that cannot work, as "FIELD
    is VALUE, expected ..." (field names as the third-party JSON writes them),
    or None. Types are checked when JSON is read (``spec.build``); this checks
    ranges, including of specs built in code."""
    pre, boxes, scores, nms = spec.preprocessing, spec.box_coding, spec.scores, spec.nms
    checks = [
        (bool(spec.name), "name", spec.name, "a non-empty name"),
        (pre.input_height >= 1, "preprocessing.input_height", pre.input_height, "a positive integer"),
        (pre.input_width >= 1, "preprocessing.input_width", pre.input_width, "a positive integer"),
        (len(pre.mean) == 3, "preprocessing.mean", pre.mean, "3 numbers"),
        (len(pre.std) == 3 and all(pre.std), "preprocessing.std", pre.std, "3 nonzero numbers"),
        (pre.resize in ("stretch", "letterbox"), "preprocessing.resize", pre.resize, '"stretch" or "letterbox"'),
        (pre.color_order in ("RGB", "BGR"), "preprocessing.color_order", pre.color_order, '"RGB" or "BGR"'),
        (all(spec.labels), "labels", spec.labels, "non-empty names"),
        (boxes.kind in ("faster_rcnn", "pixel"), "box_coder.kind", boxes.kind, '"faster_rcnn" or "pixel"'),
        (boxes.order in ("yxhw", "xywh"), "box_coder.order", boxes.order, '"yxhw" or "xywh"'),
        (len(boxes.scales) == 4 and all(s > 0 for s in boxes.scales), "box_coder.scales", boxes.scales,
         "4 positive numbers"),
        (not (boxes.exponential_size and boxes.kind == "faster_rcnn"), "box_coder.exponential_size", True,
         'false with "faster_rcnn" (its sizes are always exponential); it is for the "pixel" box coder'),
        (scores.activation in ("sigmoid", "softmax", "none"), "scores.activation", scores.activation,
         '"sigmoid", "softmax" or "none"'),
        (scores.clip is None or scores.clip > 0, "scores.clip", scores.clip, "a positive number or null"),
        (nms.kind in NMS_KINDS, "nms.kind", nms.kind, "one of " + ", ".join(NMS_KINDS)),
        (not (nms.kind.startswith("tflite") and boxes.kind != "faster_rcnn"), "nms.kind", nms.kind,
         f'"hard" or "weighted" with the "{boxes.kind}" box coder (TFLite\'s op decodes "faster_rcnn" boxes only)'),
        *((LIMITS[key].accepts(getattr(nms, key)), f"nms.{key}", getattr(nms, key), LIMITS[key].describe())
          for key in ("score_threshold", "iou_threshold", "max_detections", "detections_per_class")),  # limits.py
        (spec.class_offset >= 0, "class_offset", spec.class_offset, "0 or a positive integer"),
    ]
    for ok, name, value, expected in checks:
        if not ok:
            return _problem(name, value, expected)
    return _anchor_problem(spec.anchors) if spec.anchors is not None else None


def _anchor_problem(anchors: Anchors) -> str | None:
    """Ranges of the anchor generators' options (types are the JSON builder's)."""
    positive = lambda values: all(v > 0 for v in values)  # noqa: E731
    if isinstance(anchors, FileAnchors):
        ok = anchors.path.is_file()
        return None if ok else f'anchors.path "{anchors.path.name}" is not a file (looked in {anchors.path.parent})'
    if isinstance(anchors, MediaPipeSsdAnchors):
        a = anchors
        checks = [
            (a.input_size_height >= 1 and a.input_size_width >= 1, "anchors.input_size_height/width",
             [a.input_size_height, a.input_size_width], "positive integers"),
            (0 < a.min_scale <= a.max_scale, "anchors.min_scale/max_scale", [a.min_scale, a.max_scale],
             "0 < min_scale <= max_scale"),
            (a.num_layers >= 1, "anchors.num_layers", a.num_layers, "a positive integer"),
            (positive(a.strides), "anchors.strides", a.strides, "positive integers"),
            (positive(a.aspect_ratios), "anchors.aspect_ratios", a.aspect_ratios, "positive numbers"),
            (positive(a.feature_map_height + a.feature_map_width), "anchors.feature_map_height/width",
             [a.feature_map_height, a.feature_map_width], "positive integers"),
            (0 <= a.anchor_offset_x <= 1 and 0 <= a.anchor_offset_y <= 1, "anchors.anchor_offset_x/y",
             [a.anchor_offset_x, a.anchor_offset_y], "numbers in [0, 1]"),
        ]
    else:
        g, shapes = anchors.generator, anchors.feature_map_shapes
        if isinstance(g, MultipleGridAnchors):
            layers = g.num_layers
            checks = [
                (layers >= 1 and (layers >= 2 or len(g.scales) == 1), "anchors.num_layers", layers,
                 "at least 2 (or 1 with one value in 'scales')"),
                (0 < g.min_scale <= g.max_scale, "anchors.min_scale/max_scale", [g.min_scale, g.max_scale],
                 "0 < min_scale <= max_scale"),
                (not g.scales or (len(g.scales) == layers and positive(g.scales)), "anchors.scales", g.scales,
                 f"[] or {layers} positive numbers (one per layer)"),
                (positive(g.aspect_ratios), "anchors.aspect_ratios", g.aspect_ratios, "positive numbers"),
                (g.interpolated_scale_aspect_ratio >= 0, "anchors.interpolated_scale_aspect_ratio",
                 g.interpolated_scale_aspect_ratio, "0 (none) or a positive number"),
                (positive(g.base_anchor_size), "anchors.base_anchor_size", g.base_anchor_size, "2 positive numbers"),
            ]
        else:
            layers = g.max_level - g.min_level + 1
            checks = [
                (1 <= g.min_level <= g.max_level, "anchors.min_level/max_level", [g.min_level, g.max_level],
                 "1 <= min_level <= max_level"),
                (g.anchor_scale > 0, "anchors.anchor_scale", g.anchor_scale, "a positive number"),
                (bool(g.aspect_ratios) and positive(g.aspect_ratios), "anchors.aspect_ratios", g.aspect_ratios,
                 "positive numbers"),
                (g.scales_per_octave >= 1, "anchors.scales_per_octave", g.scales_per_octave, "a positive integer"),
            ]
        checks.append((len(shapes) == layers and all(h >= 1 and w >= 1 for h, w in shapes),
                       "anchors.feature_map_shapes", shapes, f"{layers} [height, width] pairs of positive integers "
                                                             "(one per layer)"))
    for ok, name, value, expected in checks:
        if not ok:
            return _problem(name, value, expected)
    return None


def _problem(name: str, value: Any, expected: str) -> str:
    return f"{name} is {_shown(value)}, expected {expected}"


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        value = [list(v) if isinstance(v, tuple) else v for v in value]
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def shipped_specs() -> list[str]:
    folder = resources.files("ssdkit.runtime").joinpath("specs")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_spec(source: str | Path) -> DetectorSpec:
    """A spec from a JSON file (ssdkit's or the third-party schema), or a
    shipped spec by name (``shipped_specs()``).

    Raises:
      FileNotFoundError: no such file, nor a shipped spec of that name.
      ValueError: the file is not a valid spec (the message names the field).
    """
    path = Path(source)
    if not path.is_file() and path.suffix != ".json" and str(source) in shipped_specs():
        resource = resources.files("ssdkit.runtime").joinpath(f"specs/{source}.json")
        with resources.as_file(resource) as shipped:
            return parse_spec(shipped.read_text(), shipped.parent, f"shipped spec {source}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such spec file (shipped specs: {', '.join(shipped_specs())})")
    return parse_spec(path.read_text(), path.parent, str(path))


def parse_spec(text: str, base_dir: Path, source: str) -> DetectorSpec:
    """Parses spec JSON; relative file names in it (anchors, labels) are in
    ``base_dir``. Every problem is a ValueError starting with ``source``."""
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
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from exc
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
    for required in ("name", "preprocessing"):
        if required not in data:
            raise ValueError(f"{required} is missing")
    if "labels" in data and "labels_file" in data:
        raise ValueError("give 'labels' or 'labels_file', not both")
    preprocessing = build(Preprocessing, data["preprocessing"], "preprocessing")
    if "labels_file" in data:
        labels = _labels_file(json_value(str, data["labels_file"], "labels_file"), base_dir)
    else:
        labels = json_value(tuple[str, ...], data.get("labels", []), "labels")
    box_coder = data.get("box_coder", {})
    if isinstance(box_coder, dict):
        box_coder = {"kind": "faster_rcnn", **box_coder}
    return DetectorSpec(
        name=json_value(str, data["name"], "name"), preprocessing=preprocessing, labels=labels,
        anchors=_anchors(data["anchors"], preprocessing, base_dir) if data.get("anchors") else None,
        box_coding=build(BoxCoding, box_coder, "box_coder"),
        scores=build(ScoreCoding, data.get("scores", {}), "scores"),
        nms=build(Nms, data.get("nms", {}), "nms"),
        outputs=OutputRoles.from_json(data["outputs"]) if data.get("outputs") else None,
        class_offset=json_value(int, data.get("class_offset", 0), "class_offset"),
    )


def _labels_file(name: str, base_dir: Path) -> tuple[str, ...]:
    path = base_dir / name
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ValueError(f'labels_file "{name}" cannot be read (looked in {base_dir}: {exc.strerror})') from exc
    return tuple(line.strip() for line in lines if line.strip())


def _anchors(values: Any, pre: Preprocessing, base_dir: Path) -> Anchors:
    if not isinstance(values, dict):
        raise ValueError(f"anchors is {_shown(values)}, expected an object with a 'kind'")
    values = dict(values)
    kind = values.pop("kind", None)
    if kind == "mediapipe_ssd":
        return build(MediaPipeSsdAnchors, values, "anchors")
    if kind == "file":
        anchors = build(FileAnchors, values, "anchors")
        return dataclasses.replace(anchors, path=base_dir / anchors.path)
    generators = {"multiple_grid": MultipleGridAnchors, "multiscale_grid": MultiscaleGridAnchors}
    if kind in generators:
        if "feature_map_shapes" not in values:
            raise ValueError(f"anchors of kind {kind!r} need 'feature_map_shapes' ([[height, width], ...] per layer)")
        shapes = json_value(tuple[tuple[int, int], ...], values.pop("feature_map_shapes"), "anchors.feature_map_shapes")
        return GridAnchors(build(generators[kind], values, "anchors"), shapes, (pre.input_height, pre.input_width))
    raise ValueError(f"anchors.kind is {_shown(kind)}, expected one of file, mediapipe_ssd, multiple_grid, "
                     "multiscale_grid")
