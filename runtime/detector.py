"""``Detector``: one small API over every artifact and backend.

Input: an RGB uint8 HxWx3 image of any size. Output: ``Detection``s with
boxes in pixels of that image. The spec (embedded in the file, a sidecar
``<model>.spec.json``, or given) says how to preprocess and, for models
without their own NMS, how to decode: then ``postprocess`` runs in numpy,
exactly as TFLite's postprocess op would (or MediaPipe's weighted NMS, or
plain hard NMS, as the spec says).
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import limits, model_files, outputs, postprocess
from .backends import Backend, TensorInfo, backend_for_file, open_backend
from .preprocess import Transform, preprocess
from .spec import ModelSpec
from .third_party import DetectorSpec, load_spec, parse_spec, shipped_specs


# Rank of each role's output for one image (without the batch axis).
_UNBATCHED_RANK = {"box_encodings": 2, "class_predictions": 2, "detection_boxes": 2, "detection_classes": 1,
                   "detection_scores": 1, "num_detections": 0}


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # ymin, xmin, ymax, xmax in pixels of the image
    score: float
    class_id: int  # 0-based index into the spec's labels (background excluded)
    label: str


@dataclass(frozen=True)
class Timings:
    """Seconds spent in the last ``detect`` (or ``detect_batch``) call."""

    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0

    @property
    def total(self) -> float:
        return self.preprocess + self.inference + self.postprocess


class Detector:
    """Runs an SSD detector (TFLite, Edge TPU or ONNX) on RGB images.

    The model takes one image input (NHWC or NCHW, float or quantized) and
    gives either raw SSD outputs (box encodings [1, A, >=4], class
    predictions [1, A, C(+1)]) or detections (boxes [1, N, 4] normalized
    ymin, xmin, ymax, xmax; classes; scores; count), as its spec or
    ``outputs.find_roles`` tells.

    Args:
      model_path: a ``.tflite`` (``*_edgetpu.tflite``: Edge TPU) or ``.onnx`` file,
        or an ssdkit SavedModel folder (run by TensorFlow, imported only then).
      device: a device profile (``ssdkit devices``) by name or JSON path, or a
        loaded profile: its threads and Edge TPU delegate library.
      spec: a ``DetectorSpec``, ``ModelSpec``, a spec JSON path or a shipped
        spec name, for files that carry none (it overrides an embedded one).
      threads: interpreter threads (default: the device profile's, else the backend's).
      score_threshold: detections scoring below it are dropped.
      backend: ``tflite``, ``litert``, ``tflite_runtime``, ``tensorflow``,
        ``edgetpu``, ``onnx`` or ``savedmodel`` (default: from the file name),
        or a callable ``(model_path, threads) -> Backend`` for a format the
        runtime does not open itself.
    """

    def __init__(self, model_path: str | Path, device: str | Any | None = None,
                 spec: DetectorSpec | ModelSpec | str | Path | None = None, threads: int | None = None,
                 score_threshold: float = 0.5, backend: str | Callable[[Path, int | None], Backend] | None = None):
        limits.check(score_threshold=score_threshold, threads=threads)  # before the model is opened
        self.model_path = Path(model_path)
        profile = _profile(device)
        threads = threads or getattr(profile, "threads", None)
        library = None
        if getattr(profile, "delegate", None) == "edgetpu":
            library = getattr(profile, "delegate_library", lambda: None)()
            if backend is None and backend_for_file(self.model_path) != "edgetpu":
                warnings.warn(f"{self.model_path.name} is not compiled for the Edge TPU (no _edgetpu.tflite "
                              "suffix): it runs on the CPU, not on the accelerator")
        self.score_threshold = score_threshold
        self.timings = Timings()
        self._scratch: dict = {}  # preprocess's reused resize buffer
        if callable(backend):
            self.backend: Backend = backend(self.model_path, threads)
        else:
            self.backend = open_backend(self.model_path, backend, threads, library)
        try:
            self.spec = _resolve_spec(spec, self.model_path, self.backend)
            self._input = self._check_input()
            self.roles, self._settled = outputs.find_roles(
                self.backend.outputs, self.spec.outputs, self.backend.postprocess_op_outputs())
            self._outputs = {info.name: info for info in self.backend.outputs}
            self._anchors = self._check_raw() if self.roles.kind == "raw" else None
        except BaseException:
            self.backend.close()
            raise

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections in an RGB uint8 HxWx3 image, best first, boxes in its pixels."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """``detect`` on each image; one invocation for all of them when the
        model has a dynamic batch axis (ONNX), else one per image."""
        start = time.perf_counter()
        prepared = [preprocess(_checked(image), self.spec.preprocessing, self._input, scratch=self._scratch)
                    for image in images]
        pre_time = time.perf_counter() - start
        if self._input.shape[0] == -1 and len(prepared) > 1:
            groups = [(np.concatenate([tensor for tensor, _ in prepared]), [t for _, t in prepared])]
        else:
            groups = [(tensor, [transform]) for tensor, transform in prepared]
        inference = post = 0.0
        results = []
        for tensor, transforms in groups:
            begin = time.perf_counter()
            raw = self.backend.run(tensor)
            ran = time.perf_counter()
            results += [self._detections(raw, i, transform) for i, transform in enumerate(transforms)]
            inference, post = inference + ran - begin, post + time.perf_counter() - ran
        self.timings = Timings(pre_time, inference, post)
        return results

    def raw_output(self, raw: dict[str, np.ndarray], role: str) -> np.ndarray:
        """The output playing ``role`` in a backend result, dequantized to float32."""
        info = self._outputs[dict(self.roles.names)[role]]
        value = raw[info.name]
        if info.quantized:
            return postprocess.dequantize(value, info.scale, info.zero_point)
        return np.asarray(value, np.float32)

    # -- construction checks ----------------------------------------------

    def _check_input(self) -> TensorInfo:
        inputs = self.backend.inputs
        if len(inputs) != 1:
            raise ValueError(f"{self.model_path}: {len(inputs)} inputs, expected one image input")
        info = inputs[0]
        size = self.spec.input_size
        nchw = len(info.shape) == 4 and info.shape[1] == 3 and info.shape[3] != 3
        spatial = info.shape[2:] if nchw else info.shape[1:3]
        if len(info.shape) != 4 or any(d not in (-1, s) for d, s in zip(spatial, size)):
            raise ValueError(f"{self.model_path}: input of shape {list(info.shape)}, expected "
                             f"[1, {size[0]}, {size[1]}, 3] as the spec '{self.spec.name}' says")
        return info

    def _check_raw(self) -> np.ndarray:
        """The anchors, checked against the shapes of the raw outputs."""
        names = dict(self.roles.names)
        boxes, classes = self._outputs[names["box_encodings"]], self._outputs[names["class_predictions"]]
        if self.spec.anchors is None:
            raise ValueError(f"{self.model_path}: the model outputs raw boxes, but the spec '{self.spec.name}' "
                             "has no anchors to decode them")
        anchors = self.spec.anchors.center_size()
        if (boxes.shape[-2] not in (-1, len(anchors)) or boxes.shape[-1] < 4
                or classes.shape[-2] not in (-1, len(anchors))):
            raise ValueError(f"{self.model_path}: raw outputs {list(boxes.shape)} and {list(classes.shape)}, "
                             f"expected [1, {len(anchors)}, 4] and [1, {len(anchors)}, classes] for the spec's "
                             f"{len(anchors)} anchors")
        expected = len(self.spec.labels) + (1 if self.spec.scores.background else 0)
        if self.spec.labels and classes.shape[-1] not in (-1, expected):
            raise ValueError(f"{self.model_path}: {classes.shape[-1]} class columns, expected {expected} for "
                             f"{len(self.spec.labels)} labels" + (" plus background" if self.spec.scores.background else ""))
        return anchors

    # -- decoding ------------------------------------------------------------

    def _value(self, raw: dict[str, np.ndarray], role: str, item: int) -> np.ndarray:
        """Batch item ``item`` of a role's output; outputs without a batch axis pass whole."""
        value = self.raw_output(raw, role)
        return value[item] if value.ndim > _UNBATCHED_RANK[role] else value

    def _detections(self, raw: dict[str, np.ndarray], item: int, transform: Transform) -> list[Detection]:
        if not self._settled:
            settled = outputs.settle(self.roles, raw)
            if settled is not None:
                self.roles, self._settled = settled, True
        if self.roles.kind == "raw":
            boxes, classes, scores = self._decode_raw(raw, item)
        else:
            boxes, classes, scores = self._read_detections(raw, item)
        keep = scores >= self.score_threshold
        labels = self.spec.labels
        return [
            Detection(tuple(float(v) for v in box), float(score), int(cls),
                      labels[cls] if 0 <= cls < len(labels) else str(cls))
            for box, score, cls in zip(transform.to_pixels(boxes[keep]), scores[keep], classes[keep].tolist())
        ]

    def _read_detections(self, raw: dict[str, np.ndarray], item: int):
        boxes = self._value(raw, "detection_boxes", item).reshape(-1, 4)
        classes = self._value(raw, "detection_classes", item).reshape(-1)
        scores = self._value(raw, "detection_scores", item).reshape(-1)
        count = len(scores)
        if "num_detections" in dict(self.roles.names):
            count = min(count, int(self._value(raw, "num_detections", item).reshape(-1)[0]))
        ids = np.round(classes[:count]).astype(np.int64) - self.spec.class_offset
        return boxes[:count], ids, scores[:count]

    def _decode_raw(self, raw: dict[str, np.ndarray], item: int):
        names = dict(self.roles.names)
        class_info = self._outputs[names["class_predictions"]]
        class_values = np.asarray(raw[class_info.name])
        class_values = class_values[item] if class_values.ndim > _UNBATCHED_RANK["class_predictions"] else class_values
        spec, nms = self.spec, self.spec.nms
        activation = "none" if self.roles.scores_activated else spec.scores.activation
        # Raising the NMS threshold to the caller's changes nothing above it
        # (lower scores never suppress higher ones) but skips most anchors.
        # Weighted NMS averages every candidate, so it keeps its own.
        threshold = nms.score_threshold if nms.kind == "weighted" else max(nms.score_threshold, self.score_threshold)
        rows = _candidate_rows(class_values, class_info, activation, threshold, spec.scores.background)
        scores = postprocess.activate(postprocess.dequantize(class_values[rows], class_info.scale, class_info.zero_point),
                                      activation, spec.scores.clip)
        if not spec.scores.background:
            scores = np.concatenate([np.zeros((len(scores), 1), np.float32), scores], axis=1)
        encodings = self._value(raw, "box_encodings", item)[rows, :4]
        if spec.box_coding.order == "xywh":
            encodings = encodings[:, [1, 0, 3, 2]]
        anchors = self._anchors[rows]
        if nms.kind in ("tflite", "tflite_regular"):
            boxes, classes, out_scores, count = postprocess.detection_postprocess(
                encodings, scores, anchors, max_detections=nms.max_detections,
                detections_per_class=nms.detections_per_class, use_regular_nms=nms.kind == "tflite_regular",
                nms_score_threshold=threshold, nms_iou_threshold=nms.iou_threshold, scales=spec.box_coding.scales)
            return boxes[:count], classes[:count].astype(np.int64), out_scores[:count]
        decoded = self._decode_boxes(encodings, anchors)
        if nms.kind == "weighted":
            best = scores[:, 1:].argmax(axis=1)
            best_scores = scores[np.arange(len(scores)), best + 1]
            candidates = np.flatnonzero(best_scores >= threshold)
            boxes, out_scores, index = postprocess.weighted_nms(
                decoded[candidates], best_scores[candidates], nms.iou_threshold)
            n = nms.max_detections
            return boxes[:n], best[candidates][index][:n], out_scores[:n]
        anchor_ids, class_ids = np.nonzero(scores[:, 1:] >= np.float32(threshold))
        pair_scores = scores[anchor_ids, class_ids + 1]
        kept = postprocess.batched_nms(decoded[anchor_ids], pair_scores, class_ids, nms.iou_threshold, threshold,
                                       nms.max_detections, nms.class_agnostic)
        return decoded[anchor_ids[kept]], class_ids[kept], pair_scores[kept]

    def _decode_boxes(self, encodings: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        coding = self.spec.box_coding
        if coding.kind == "faster_rcnn":
            return postprocess.decode_boxes(encodings, anchors, coding.scales)
        return postprocess.decode_pixel_scaled(encodings, anchors, coding.scales, reverse_output_order=False,
                                               apply_exponential_on_box_size=coding.exponential_size,
                                               fixed_anchor_size=False)


def _candidate_rows(values: np.ndarray, info: TensorInfo, activation: str, threshold: float,
                    background: bool) -> np.ndarray | slice:
    """Anchors (rows of the raw [A, C] class output) whose activated score can
    reach ``threshold`` in a foreground column: a superset, found on the raw
    (possibly quantized) values, so only those rows are dequantized and
    activated. Sigmoid and the identity are monotonic; the 1e-6 margin covers
    float32 activation error. Softmax depends on the whole row: all rows."""
    low = threshold - 1e-6
    if activation == "softmax" or low <= 0:
        return slice(None)
    if activation == "sigmoid":
        if low >= 1:
            return np.empty(0, np.int64)
        low = math.log(low / (1 - low))
    foreground = values[:, 1:] if background else values
    if info.quantized:
        bound = math.floor(low / info.scale + info.zero_point) - 1
        limits = np.iinfo(info.dtype)
        if bound <= limits.min:
            return slice(None)
        mask = foreground >= min(bound, limits.max)
    else:
        mask = foreground >= low
    return np.flatnonzero(mask.any(axis=1))


def _checked(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image of dtype {image.dtype} and shape {image.shape}, expected uint8 HxWx3 RGB")
    return image


def _profile(device):
    """A device profile: loaded by name or path, or given (any object with
    ``threads``, ``delegate`` and ``delegate_library()``)."""
    if device is None or not isinstance(device, (str, Path)):
        return device
    from ssdkit.devices.profiles import load_profile

    return load_profile(str(device))


def _resolve_spec(spec, model_path: Path, backend: Backend) -> DetectorSpec:
    """The given spec, else the one embedded in the file, else its sidecar."""
    if isinstance(spec, DetectorSpec):
        return spec
    if isinstance(spec, ModelSpec):
        return DetectorSpec.from_model_spec(spec)
    if spec is not None:
        return load_spec(spec)
    text = model_files.embedded_spec_text(model_path, backend.metadata())
    if text is not None:
        return parse_spec(text, model_path.parent, f"{model_path}: the embedded spec")
    sidecar = model_files.sidecar_path(model_path)
    if sidecar.is_file():
        return load_spec(sidecar)
    raise ValueError(f"{model_path}: no ssdkit spec in or beside the file; pass spec=SPEC.json (or --spec), "
                     f"write {sidecar.name}, or use a shipped spec: {', '.join(shipped_specs())}")
