"""Source against import: the same normalized photos through both.

The source runs as the OD API exported it: a TF1 frozen graph or a TF1
checkpoint's ``.meta`` graph (``tf.compat.v1``) fed at the tensor its feature
extractor reads (``Preprocessor/sub``, skipping the graph's own resize so both
sides see identical tensors), or a TF2 SavedModel's serving function with its
variables frozen and its calls inlined, fed at the same point. Raw outputs are
compared directly (max |difference| of box encodings and class logits, also
relative to the source's largest value); detections are decoded from each
side's raw outputs with the model's own NMS settings (per-class NMS, as the
OD API) and compared with ``evaluation.agreement.detection_agreement`` (its recall).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ssdkit.evaluation.agreement import detection_agreement
from ssdkit.log import progress
from ssdkit.runtime import decoder, tflite_postprocess
from ssdkit.runtime.boxes import iou_matrix
from ssdkit.runtime.preprocess import preprocess
from ssdkit.runtime.spec import ModelSpec

DEFAULT_TOLERANCE = 1e-4  # relative to the source's largest raw value: fp32 rounding of an exact port
AGREEMENT_MIN_SCORE = 0.5
TOP_K = 10
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def load_photos(folder: str | Path | None, limit: int = 8) -> list[tuple[str, np.ndarray]]:
    """(name, RGB uint8) photographs: the first ``limit`` images of ``folder``,
    else scikit-image's astronaut, coffee and chelsea."""
    if folder is None:
        try:
            from skimage import data
        except ModuleNotFoundError:
            raise ModuleNotFoundError("scikit-image is needed for the default parity photos "
                                      "(pip install 'ssdkit[convert]') or pass --photos DIR", name="skimage") from None
        return [(name, np.asarray(getattr(data, name)())[..., :3]) for name in ("astronaut", "coffee", "chelsea")]
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: --photos must be a folder of images")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)[:limit]
    if not paths:
        raise FileNotFoundError(f"{folder}: no {'/'.join(PHOTO_SUFFIXES)} images in it")
    photos = []
    for path in paths:
        try:
            with Image.open(path) as image:
                photos.append((path.name, np.asarray(image.convert("RGB"))))
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the image ({exc})") from None
    return photos


def normalized_inputs(photos, spec: ModelSpec) -> list[np.ndarray]:
    """[1, H, W, 3] float32 tensors as the runtime feeds them (resize, (x - 127.5) / 127.5)."""
    return [preprocess(image, spec.preprocessing)[0].astype(np.float32) for _, image in photos]


@dataclass
class Runner:
    """Runs a source on normalized tensors: ``run(x) -> (encodings [A, 4], logits [A, C+1])``."""

    kind: str  # what runs: "frozen graph", "checkpoint .meta graph", "TF2 SavedModel"
    path: str
    fake_quant: int = 0
    _call: object = field(default=None, repr=False)
    _close: object = field(default=None, repr=False)
    float_twin: "Runner | None" = field(default=None, repr=False)  # the graph with its FakeQuant nodes bypassed

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, logits = self._call(x)
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(logits, np.float32).reshape(
            -1, np.shape(logits)[-1])

    def close(self) -> None:
        if self._close is not None:
            self._close()
        if self.float_twin is not None:
            self.float_twin.close()


def tf1_runner(graph_def, facts, kind: str, path: str, checkpoint: str | None = None, meta=None) -> Runner:
    """A runner for a TF1 graph (frozen, or a .meta graph restored from ``checkpoint``)."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        if meta is not None:
            saver = tf.compat.v1.train.import_meta_graph(str(meta), clear_devices=True)
        else:
            tf.compat.v1.import_graph_def(graph_def, name="")
            saver = None
    session = tf.compat.v1.Session(graph=graph)
    if saver is not None:
        with graph.as_default():
            saver.restore(session, str(checkpoint))
    fetches = [graph.get_tensor_by_name(facts.box_encodings), graph.get_tensor_by_name(facts.class_predictions)]
    feed = graph.get_tensor_by_name(facts.input_tensor)

    def call(x):
        return session.run(fetches, {feed: x})

    twin = None
    if facts.fake_quant and graph_def is not None:
        twin = tf1_runner(bypass_fake_quant(graph_def), dataclasses.replace(facts, fake_quant=0),
                          f"{kind} with its FakeQuant nodes bypassed", path)
    return Runner(kind, path, facts.fake_quant, call, session.close, twin)


def bypass_fake_quant(graph_def):
    """A copy of ``graph_def`` whose FakeQuant nodes pass their input through
    (``Identity``): the float network a quantization-aware graph simulates
    quantization on. Batch norms folded into the weights stay folded, so it
    matches an exact float port to rounding."""
    import tensorflow as tf

    from .tf1 import FAKE_QUANT_OPS

    copy = tf.compat.v1.GraphDef()
    copy.CopyFrom(graph_def)
    for node in copy.node:
        if node.op in FAKE_QUANT_OPS:
            source = node.input[0]
            dtype = node.attr["T"].type if "T" in node.attr else tf.float32.as_datatype_enum
            node.op = "Identity"
            del node.input[:]
            node.input.append(source)
            node.attr.clear()
            node.attr["T"].type = dtype
    return copy


def run_both(runner: Runner, model, inputs: Sequence[np.ndarray]):
    source, imported = [], []
    for x in progress(inputs, "parity", unit="photo"):
        source.append(runner.run(x))
        out = model.keras_model(x, training=False)
        imported.append((out["box_encodings"].numpy().reshape(-1, 4),
                         out["class_predictions"].numpy().reshape(-1, source[-1][1].shape[-1])))
    return source, imported


def detections(encodings: np.ndarray, logits: np.ndarray, spec: ModelSpec, anchors: np.ndarray,
               activated: bool = False):
    """(boxes, classes, scores) with the spec's own NMS settings (per-class NMS)."""
    post = spec.postprocessing
    scores = logits if activated else decoder.activate(logits, post.score_activation)
    boxes, classes, kept, n = tflite_postprocess.detection_postprocess(
        encodings, scores, anchors, max_detections=post.max_detections, detections_per_class=post.detections_per_class,
        use_regular_nms=True, nms_score_threshold=max(post.score_threshold, 1e-8),
        nms_iou_threshold=post.iou_threshold, scales=spec.box_coder.scales)
    return boxes[:n], classes[:n].astype(np.int64), kept[:n]


def top_identical(reference, candidate, k: int = TOP_K) -> bool:
    """The top ``k`` detections agree one to one: same class, IoU >= 0.99, score within 1e-3."""
    (rb, rc, rs), (cb, cc, cs) = reference, candidate
    k = min(k, len(rs))
    if len(cs) < k:
        return False
    if k == 0:
        return True
    ious = np.diag(iou_matrix(rb[:k], cb[:k]))
    return bool(np.all(rc[:k] == cc[:k]) and np.all(ious >= 0.99) and np.all(np.abs(rs[:k] - cs[:k]) <= 1e-3))


@dataclass
class PhotoRow:
    photo: str
    box_max: float
    logit_max: float
    relative: float
    detections: int
    agreement: float
    top_identical: bool
    box_relative: float = 0.0  # box_max over the source's largest |box encoding|
    logit_relative: float = 0.0  # logit_max over the source's largest |logit|


@dataclass
class ParityReport:
    """The comparison, or why there is none (``runnable`` False)."""

    runnable: bool
    source_kind: str = "-"
    note: str = ""
    rows: list[PhotoRow] = field(default_factory=list)
    tolerance: float = DEFAULT_TOLERANCE
    fake_quant: int = 0
    float_twin_relative: float | None = None  # vs the source with its FakeQuant nodes bypassed

    @property
    def relative(self) -> float:
        return max((row.relative for row in self.rows), default=0.0)

    @property
    def agreement(self) -> float:
        return float(np.mean([row.agreement for row in self.rows])) if self.rows else 1.0

    @property
    def passed(self) -> bool:
        if not self.runnable:
            return True
        if self.fake_quant:
            # Quantization-sized differences are expected against the FakeQuant graph: judged by detections,
            # and the float weights by the same graph with the FakeQuant nodes bypassed, where there is one.
            twin_ok = self.float_twin_relative is None or self.float_twin_relative <= self.tolerance
            return self.agreement >= 0.5 and twin_ok
        return self.relative <= self.tolerance

    def table(self) -> str:
        from ssdkit.tables import text_table

        if not self.runnable:
            return f"parity: not checked ({self.note})"
        rows = [(r.photo, f"{r.box_max:.3g}", f"{r.logit_max:.3g}", f"{r.relative:.3g}", str(r.detections),
                 f"{r.agreement:.1%}", "yes" if r.top_identical else "no") for r in self.rows]
        rows.append(("all", f"{max(r.box_max for r in self.rows):.3g}", f"{max(r.logit_max for r in self.rows):.3g}",
                     f"{self.relative:.3g}", str(sum(r.detections for r in self.rows)), f"{self.agreement:.1%}",
                     "yes" if all(r.top_identical for r in self.rows) else "no"))
        header = ("photo", "box enc max|d|", "logits max|d|", "relative", "detections", "agreement",
                  f"top-{TOP_K} identical")
        lines = [f"parity: import vs {self.source_kind}" + (f" ({self.note})" if self.note else ""),
                 text_table(header, rows),
                 f"relative: max |d| / the source's largest |value| per output; tolerance {self.tolerance:g}. "
                 f"agreement: share of the source's detections scoring >= {AGREEMENT_MIN_SCORE} that the import "
                 "finds (IoU >= 0.5, same class), both decoded with the model's NMS settings."]
        if self.fake_quant:
            lines.append(f"the source graph has {self.fake_quant} FakeQuant nodes (quantization-aware training): "
                         "the import holds its float weights, so differences are quantization-sized; checked by "
                         "detection agreement (at least 50%), not by the raw tolerance.")
            if self.float_twin_relative is not None:
                lines.append(f"the same graph with its FakeQuant nodes bypassed (the float network it simulates "
                             f"quantization on): relative {self.float_twin_relative:.3g} over all photos, tolerance "
                             f"{self.tolerance:g}.")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "relative": self.relative, "agreement": self.agreement,
                           "passed": self.passed}, indent=1)


def compare(runner: Runner, model, photos, tolerance: float = DEFAULT_TOLERANCE) -> ParityReport:
    spec = model.spec
    anchors = spec.anchors_center_size()
    inputs = normalized_inputs(photos, spec)
    source, imported = run_both(runner, model, inputs)
    report = ParityReport(True, runner.kind, f"{runner.path}", tolerance=tolerance, fake_quant=runner.fake_quant)
    if runner.float_twin is not None:
        report.float_twin_relative = compare(runner.float_twin, model, photos, tolerance).relative
    for (name, _), (sb, sl), (ib, il) in zip(photos, source, imported):
        if sb.shape != ib.shape or sl.shape != il.shape:
            raise ValueError(f"{runner.path}: the source's raw outputs have shapes {list(sb.shape)} and "
                             f"{list(sl.shape)}, the import's {list(ib.shape)} and {list(il.shape)}")
        box_max, logit_max = float(np.abs(sb - ib).max()), float(np.abs(sl - il).max())
        box_rel = box_max / max(float(np.abs(sb).max()), 1e-12)
        logit_rel = logit_max / max(float(np.abs(sl).max()), 1e-12)
        ref, cand = detections(sb, sl, spec, anchors), detections(ib, il, spec, anchors)
        report.rows.append(PhotoRow(name, box_max, logit_max, max(box_rel, logit_rel),
                                    int((ref[2] >= AGREEMENT_MIN_SCORE).sum()),
                                    detection_agreement([ref], [cand], AGREEMENT_MIN_SCORE).recall, top_identical(ref, cand),
                                    box_rel, logit_rel))
    return report


@dataclass
class ExportRow:
    file: str
    precision: str
    box_max: float | None = None
    score_max: float | None = None
    relative: float | None = None
    agreement: float | None = None
    top_identical: bool | None = None
    check: str = "-"
    problem: str | None = None


def export_spec(export_dir: str | Path) -> ModelSpec:
    """The ModelSpec an ssdkit export folder carries (saved_model/assets.extra)."""
    path = Path(export_dir) / "saved_model" / "assets.extra" / "ssdkit_spec.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; --against needs an ssdkit export folder (with saved_model/)")
    return ModelSpec.from_json(path.read_text())


def verify_exports(runner: Runner, artifacts, photos, tolerance: float, spec: ModelSpec) -> list[ExportRow]:
    """Each exported file with raw outputs against the source, on the same
    photos: box encodings and activated scores (TFLite ``_nonms`` files output
    scores, not logits), detections with the file's spec. Float files fail
    beyond ``tolerance`` (relative); quantized ones are reported."""
    from ssdkit.evaluation.evaluate import open_detector
    from ssdkit.evaluation.verify import FLOAT_PRECISIONS, raw_outputs

    rows = []
    for artifact in artifacts:
        row = ExportRow(artifact.name, artifact.precision)
        rows.append(row)
        try:
            with open_detector(artifact.path) as detector:
                if detector.roles.kind != "raw":
                    row.problem = "embedded NMS: compare its raw twin (_nonms / _raw)"
                    continue
                anchors = spec.anchors_center_size()
                worst = [0.0, 0.0, 0.0]
                agreements, identical = [], True
                for (_, image), x in zip(photos, normalized_inputs(photos, spec)):
                    boxes, logits = runner.run(x)
                    scores = decoder.activate(logits, spec.postprocessing.score_activation)
                    out = raw_outputs(detector, image)
                    b, sc = out["box_encodings"], out["class_predictions"]
                    if sc.shape != scores.shape:
                        raise ValueError(f"class outputs of shape {list(sc.shape)}, the source's {list(scores.shape)}")
                    worst[0] = max(worst[0], float(np.abs(b - boxes).max()))
                    worst[1] = max(worst[1], float(np.abs(sc - scores).max()))
                    worst[2] = max(worst[2], worst[0] / max(float(np.abs(boxes).max()), 1e-12), worst[1])
                    ref = detections(boxes, scores, spec, anchors, activated=True)
                    cand = detections(b, sc, spec, anchors, activated=True)
                    agreements.append(detection_agreement([ref], [cand], AGREEMENT_MIN_SCORE).recall)
                    identical = identical and top_identical(ref, cand)
                row.box_max, row.score_max, row.relative = worst
                row.agreement, row.top_identical = float(np.mean(agreements)), identical
                if row.precision in FLOAT_PRECISIONS:
                    row.check = "pass" if row.relative <= tolerance else "FAIL"
                    if row.check == "FAIL":
                        row.problem = f"differs from the source by {row.relative:.3g} (tolerance {tolerance:g})"
        except (ValueError, RuntimeError, OSError) as exc:
            row.check, row.problem = "FAIL", str(exc)
    return rows


def export_table(rows: list[ExportRow], source: str, tolerance: float) -> str:
    from ssdkit.tables import text_table

    def cell(value, fmt):
        return "-" if value is None else format(value, fmt)

    body = [(r.file, r.precision, cell(r.box_max, ".3g"), cell(r.score_max, ".3g"), cell(r.relative, ".3g"),
             "-" if r.agreement is None else f"{r.agreement:.1%}",
             "-" if r.top_identical is None else ("yes" if r.top_identical else "no"), r.check) for r in rows]
    return "\n".join([
        f"parity: exports vs {source}",
        text_table(("file", "precision", "box enc max|d|", "scores max|d|", "relative", "agreement",
                    f"top-{TOP_K} identical", "check"), body),
        f"scores compared after the model's activation (TFLite raw files output scores); relative: box |d| over the "
        f"source's largest encoding, scores as they are; float files checked at {tolerance:g}, quantized reported."])
