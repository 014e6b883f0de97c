"""``Detector``: one small API over every artifact and backend.

Input: an RGB uint8 HxWx3 image of any size. Output: ``Detection``s with
boxes in pixels of that image. The spec (embedded in the file, a sidecar
``<model>.spec.json``, or given) says how to preprocess and, for models
without their own NMS, how to decode: the spec's ``Decoder`` does that in
numpy, exactly as TFLite's postprocess op would (or MediaPipe's weighted
NMS, or plain hard NMS, as the spec says).
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import limits, model_files, roles as output_roles
from .backends import AUTO, Backend, TensorInfo, backend_for_file, open_backend
from .backends.choice import Choice, choose_backend
from .class_filter import ClassFilter, lowered
from .decoder import Decoder, dequantize
from .detector_spec import DetectorSpec, load_spec, parse_spec, shipped_specs
from .preprocess import Transform, preprocess
from .spec import ModelSpec

log = logging.getLogger(__name__)

# Images per ``detect_batch`` call where callers batch (``ssdkit detect`` on a
# folder, ``ssdkit eval``): enough to amortise per-call costs, small enough
# for a Raspberry Pi's memory.
BATCH_SIZE = 8

# Rank of each role's output for one image (without the batch axis).
_UNBATCHED_RANK = {"box_encodings": 2, "class_predictions": 2, "detection_boxes": 2, "detection_classes": 1,
                   "detection_scores": 1, "num_detections": 0}


@dataclass(frozen=True)
class Detection:
    """One detected object, pycoral's ``Object`` with named box sides.

    ``box`` is (ymin, xmin, ymax, xmax) in pixels of the image, the OD API's
    order; ``xmin`` ... ``height`` name its parts so nobody has to remember
    it. ``class_id`` is the 0-based index into the spec's labels (background
    excluded), ``label`` its name.
    """

    box: tuple[float, float, float, float]
    score: float
    class_id: int
    label: str

    @property
    def ymin(self) -> float:
        return self.box[0]

    @property
    def xmin(self) -> float:
        return self.box[1]

    @property
    def ymax(self) -> float:
        return self.box[2]

    @property
    def xmax(self) -> float:
        return self.box[3]

    @property
    def width(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def height(self) -> float:
        return self.box[2] - self.box[0]

    def to_dict(self, **extra: Any) -> dict[str, Any]:
        """The JSON record of a detection, as ``ssdkit detect`` and the camera's
        JSON Lines write it: box (pixels, 2 decimals), label, class_id, score
        (4 decimals). ``extra`` keys (e.g. a track id) follow them; readers
        treat any key beyond these four as optional."""
        return {"box": [round(v, 2) for v in self.box], "label": self.label, "class_id": self.class_id,
                "score": round(self.score, 4), **extra}


@dataclass(frozen=True)
class Timings:
    """Seconds spent in the last ``detect`` (or ``detect_batch``) call."""

    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0

    @property
    def total(self) -> float:
        return self.preprocess + self.inference + self.postprocess

    def to_ms(self) -> dict[str, float]:
        """Milliseconds per stage (2 decimals), as the detection records write them."""
        return {stage: round(seconds * 1000, 2) for stage, seconds in
                (("preprocess", self.preprocess), ("inference", self.inference), ("postprocess", self.postprocess))}


@dataclass(frozen=True)
class RawOutputs:
    """One image's raw SSD outputs as float32: ``box_encodings`` [A, 4]
    (ty, tx, th, tw, or the spec's order) and ``class_scores`` [A, C(+1)]
    after the model's activation (logits and activated scores meet on one
    scale), columns as the model has them."""

    box_encodings: np.ndarray
    class_scores: np.ndarray


class Detector:
    """Runs an SSD detector (TFLite, Edge TPU, ONNX or a SavedModel folder) on RGB images.

    The model takes one image input (NHWC or NCHW, float or quantized) and
    gives either raw SSD outputs (box encodings [1, A, >=4], class
    predictions [1, A, C(+1)]), decoded by the spec's ``Decoder``, or
    detections (boxes [1, N, 4] normalized ymin, xmin, ymax, xmax; classes;
    scores; count), as its spec or ``roles.find_roles`` tells.

    Args:
      model_path: a ``.tflite`` (``*_edgetpu.tflite``: Edge TPU) or ``.onnx`` file,
        or an ssdkit SavedModel folder (run by TensorFlow, imported only then).
      device: a device profile (``ssdkit devices``) by name or JSON path, or a
        loaded profile: its threads and Edge TPU delegate library.
      spec: a ``DetectorSpec``, ``ModelSpec``, a spec JSON path or a shipped
        spec name, for files that carry none (it overrides an embedded one).
      threads: interpreter threads (default: the device profile's, else the backend's).
      score_threshold: detections scoring below it are dropped (an attribute:
        a change applies from the next call).
      backend: ``tflite``, ``litert``, ``tflite_runtime``, ``tensorflow``,
        ``edgetpu``, ``onnx``, ``openvino`` (``openvino:DEVICE``) or
        ``savedmodel`` (default: from the file name); ``auto``: the fastest
        installed runtime for this file on this machine, measured once and
        cached (``backends.choice``; a device profile's ``backend`` pins it);
        or a callable ``(model_path, threads) -> Backend`` for a format the
        runtime does not open itself.
      classes: report only these labels (an allow list; None: all).
      exclude_classes: never report these labels (a deny list).
      class_thresholds: {label: minimum score} replacing ``score_threshold``
        for those classes, above or below it.

    Per-class control (the last three) acts before NMS on a raw-output model:
    a denied class never suppresses an allowed box, and a class threshold
    below ``score_threshold`` finds boxes the global one would not. On a
    TFLite model with the postprocess op the detector reads the op's inputs
    and runs the same NMS itself (``Decoder``, bit-exact with the op), so the
    same holds. Where NMS runs inside the model and its inputs cannot be
    read (ONNX with NonMaxSuppression) the classes are filtered after it: a
    denied class may have suppressed an allowed one there, and nothing
    below the model's own score threshold comes back (a warning says so).

    Attributes:
      spec: the ``DetectorSpec`` in use; ``spec.labels`` names the class ids.
      roles: which output is which (``roles.OutputRoles``; ``kind`` raw or detections).
      decoder: the ``Decoder`` of a raw-output model, None for one with its own NMS.
      class_filter: the ``ClassFilter`` (allow/deny lists, per-class thresholds).
      postprocess: where detections come from: ``decoder`` (raw outputs),
        ``model`` (the model's own NMS), ``op-inputs`` (the TFLite op's inputs
        through the ``Decoder``, for per-class control) or ``model+filter``
        (the model's NMS, classes filtered after it).
      timings: seconds per stage of the last call (``Timings``).
      backend: the loaded model (``backends.Backend``).
      backend_choice: what ``backend="auto"`` picked and why (``backends.choice.Choice``), else None.

    Raises:
      FileNotFoundError: the model, or a spec file given by path, does not exist.
      IsADirectoryError: a folder given to a file backend.
      ValueError: the file is not a model the backend can load; the spec is
        missing, invalid (the message names the field) or does not fit the
        model (input size, anchors, classes); the outputs' roles cannot be
        told; an unknown backend name; an unknown class name (the message
        names it and the model's labels), or both an allow and a deny list.
      RuntimeError: the backend's package is not installed (the message says
        what to install), or the Edge TPU delegate does not start.
      ``detect``, ``detect_batch`` and ``run_raw`` raise ValueError for an
      image that is not uint8 HxWx3.
    """

    def __init__(self, model_path: str | Path, device: str | Any | None = None,
                 spec: DetectorSpec | ModelSpec | str | Path | None = None, threads: int | None = None,
                 score_threshold: float = 0.5, backend: str | Callable[[Path, int | None], Backend] | None = None,
                 classes: Sequence[str] | None = None, exclude_classes: Sequence[str] | None = None,
                 class_thresholds: dict[str, float] | None = None):
        limits.check(score_threshold=score_threshold, threads=threads)  # before the model is opened
        self.class_filter = ClassFilter.build(classes, exclude_classes, class_thresholds)
        self.model_path = Path(model_path)
        profile = _profile(device)
        threads = threads or getattr(profile, "threads", None)
        library = None
        if getattr(profile, "delegate", None) == "edgetpu":
            library = getattr(profile, "delegate_library", lambda: None)()
            if backend in (None, AUTO) and backend_for_file(self.model_path) != "edgetpu":
                warnings.warn(f"{self.model_path.name} is not compiled for the Edge TPU (no _edgetpu.tflite "
                              "suffix): it runs on the CPU, not on the accelerator")
        self.score_threshold = score_threshold
        self.timings = Timings()
        self._scratch: dict = {}  # preprocess's reused resize buffer
        given = _given_spec(spec)  # a bad spec file fails before the model loads
        self.backend_choice: Choice | None = None
        if backend == AUTO:
            if not self.model_path.exists():
                raise FileNotFoundError(f"{self.model_path}: model file not found")
            self.backend_choice = choose_backend(self.model_path, threads, pinned=getattr(profile, "backend", None),
                                                 pinned_by=f"device profile {getattr(profile, 'name', '')}".strip())
            backend = self.backend_choice.backend
        if callable(backend):
            self.backend: Backend = backend(self.model_path, threads)
        else:
            self.backend = open_backend(self.model_path, backend, threads, library)
        try:
            self.spec = given or _embedded_spec(self.model_path, self.backend)
            self._input = self._check_input()
            self.roles, self._settled = output_roles.find_roles(
                self.backend.outputs, self.spec.outputs, self.backend.postprocess_op_outputs())
            self._outputs = {info.name: info for info in self.backend.outputs}
            self.class_filter.check_labels(self.spec.labels, self.model_path.name)
            self.decoder = self._raw_decoder() if self.roles.kind == "raw" else None
            self.postprocess = "decoder" if self.decoder is not None else "model"
            self._op_decoder: Decoder | None = None
            self._op_roles: tuple[TensorInfo, TensorInfo] | None = None
            if self.class_filter.active and self.decoder is None:
                self._use_op_inputs()
        except BaseException:
            self.backend.close()
            raise

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()

    @property
    def batches(self) -> bool:
        """Whether ``detect_batch`` runs several images in one call (a model
        with a dynamic batch axis, e.g. ``ssdkit export --format onnx
        --dynamic-batch``); otherwise it calls the model once per image."""
        return self._input.shape[0] == -1

    def detect(self, image: np.ndarray, floor: float | None = None,
               on_inference: Callable[[], None] | None = None) -> list[Detection]:
        """Detections in an RGB uint8 HxWx3 image, best first, boxes in its pixels.

        ``floor``: also the detections of reported classes scoring at least
        this, below their class's threshold (a tracker's low-score stage
        takes them; ``reported`` tells them apart).
        ``on_inference``: called just before the model runs. The backends
        release the GIL while the model runs and hold it around it, so a
        pipeline starts its other Python work then (``camera/pipeline.py``)."""
        return self.detect_batch([image], floor, on_inference)[0]

    def thresholds(self, floor: float | None = None) -> float | np.ndarray:
        """The score threshold now: one number, or with per-class control the
        [classes] vector (``inf``: a class not reported); with ``floor``, each
        reported class's at most ``floor``."""
        if not self.class_filter.active:
            return self.score_threshold if floor is None else min(self.score_threshold, floor)
        vector = self.class_filter.thresholds_for(self.spec.labels, self.score_threshold)
        return vector if floor is None else lowered(vector, floor)

    def reported(self, detection: Detection) -> bool:
        """Whether ``detection`` reaches its class's threshold (what ``detect``
        without ``floor`` returns), rather than only a ``floor``."""
        return _reaches(detection, self.thresholds())

    def split_reported(self, detections: Sequence[Detection]) -> tuple[list[Detection], list[Detection]]:
        """(the ``reported`` detections, the others): ``detect(image, floor)``'s two stages."""
        thresholds = self.thresholds()
        reported, low = [], []
        for detection in detections:
            (reported if _reaches(detection, thresholds) else low).append(detection)
        return reported, low

    def detect_batch(self, images: Sequence[np.ndarray], floor: float | None = None,
                     on_inference: Callable[[], None] | None = None) -> list[list[Detection]]:
        """``detect`` on each image; one invocation for all of them when the
        model has a dynamic batch axis (ONNX), else one per image
        (``on_inference`` before each)."""
        limits.check(score_threshold=floor)
        start = time.perf_counter()
        prepared = [self._prepare(image) for image in images]
        pre_time = time.perf_counter() - start
        if self._input.shape[0] == -1 and len(prepared) > 1:
            groups = [(np.concatenate([tensor for tensor, _ in prepared]), [t for _, t in prepared])]
        else:
            groups = [(tensor, [transform]) for tensor, transform in prepared]
        inference = post = 0.0
        results = []
        for tensor, transforms in groups:
            if on_inference is not None:
                on_inference()
            begin = time.perf_counter()
            raw = self.backend.run(tensor)
            ran = time.perf_counter()
            thresholds = self.thresholds(floor)
            results += [self._detections(raw, i, transform, thresholds) for i, transform in enumerate(transforms)]
            inference, post = inference + ran - begin, post + time.perf_counter() - ran
        self.timings = Timings(pre_time, inference, post)
        return results

    def run_raw(self, image: np.ndarray) -> RawOutputs:
        """The raw outputs of a raw-output model for one RGB uint8 image, for
        callers that compare networks rather than detections (``ssdkit
        verify``, the quantization report). ``timings`` has the preprocess and
        inference times (postprocess: dequantizing and activating).

        Raises:
          ValueError: the model outputs detections (it has its own NMS), or a bad image.
        """
        if self.decoder is None:
            raise ValueError(f"{self.model_path}: the model outputs detections, not raw box encodings and scores")
        start = time.perf_counter()
        tensor, _ = self._prepare(image)
        begin = time.perf_counter()
        raw = self.backend.run(tensor)
        ran = time.perf_counter()
        boxes = self._value(raw, "box_encodings", 0)
        scores = self._value(raw, "class_predictions", 0)
        result = RawOutputs(boxes[:, :4], self.decoder.activate(scores))
        self.timings = Timings(begin - start, ran - begin, time.perf_counter() - ran)
        return result

    def raw_output(self, raw: dict[str, np.ndarray], role: str) -> np.ndarray:
        """The output playing ``role`` in a backend result, dequantized to float32."""
        info = self._outputs[self.roles.name_of(role)]
        return dequantize(raw[info.name], info.scale, info.zero_point)

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

    def _raw_decoder(self) -> Decoder:
        """The spec's decoder, checked against the shapes of the raw outputs."""
        if self.spec.anchors is None:
            raise ValueError(f"{self.model_path}: the model outputs raw boxes, but the spec '{self.spec.name}' "
                             "has no anchors to decode them")
        decoder = Decoder(self.spec, scores_activated=self.roles.scores_activated)
        problem = decoder.shape_problem(self._outputs[self.roles.name_of("box_encodings")].shape,
                                        self._outputs[self.roles.name_of("class_predictions")].shape)
        if problem:
            raise ValueError(f"{self.model_path}: {problem}")
        return decoder

    def _use_op_inputs(self) -> None:
        """Per-class control on a model with its own NMS: decode the TFLite
        postprocess op's inputs with the spec's ``Decoder`` (the op's NMS, bit
        for bit, with denied classes out before it) when the backend can read
        them and the spec describes that op; else filter after the model's NMS."""
        found = self.backend.postprocess_op_inputs()
        spec = self.spec
        reason = None
        if found is None:
            reason = "NMS runs inside the model and its inputs cannot be read"
        elif spec.anchors is None or spec.nms.kind not in ("tflite", "tflite_regular"):
            reason = "the spec does not describe the model's TFLite postprocess op (anchors and NMS)"
        else:
            boxes, scores, anchors = found
            decoder = Decoder(spec, scores_activated=True)  # the op takes scores, not logits
            if decoder.shape_problem(boxes.shape, scores.shape) or anchors.shape != decoder.anchors.shape or \
                    not np.allclose(anchors, decoder.anchors, atol=1e-5):
                reason = "the postprocess op's anchors or inputs do not match the spec"
            else:
                self._op_decoder, self._op_roles, self.postprocess = decoder, (boxes, scores), "op-inputs"
                return
        self.postprocess = "model+filter"
        log.warning(f"{self.model_path.name}: {reason}, so classes are filtered after the model's NMS: an "
                    "excluded class may still have suppressed an overlapping allowed box or taken one of its "
                    f"{spec.nms.max_detections} detection slots, and no class threshold recovers what the model "
                    "dropped. A raw-output export (_nonms.tflite, raw ONNX) gives exact per-class control.")

    # -- decoding ------------------------------------------------------------

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, Transform]:
        return preprocess(_checked(image), self.spec.preprocessing, self._input, scratch=self._scratch)

    def _item(self, raw: dict[str, np.ndarray], role: str, item: int) -> tuple[np.ndarray, TensorInfo]:
        """Batch item ``item`` of a role's output as the model gave it (outputs
        without a batch axis pass whole), and its tensor's description."""
        info = self._outputs[self.roles.name_of(role)]
        value = np.asarray(raw[info.name])
        return (value[item] if value.ndim > _UNBATCHED_RANK[role] else value), info

    def _value(self, raw: dict[str, np.ndarray], role: str, item: int) -> np.ndarray:
        """``_item`` dequantized to float32."""
        value, info = self._item(raw, role, item)
        return dequantize(value, info.scale, info.zero_point)

    def _detections(self, raw: dict[str, np.ndarray], item: int, transform: Transform,
                    thresholds: float | np.ndarray) -> list[Detection]:
        if not self._settled:
            settled = output_roles.settle(self.roles, raw)
            if settled is not None:
                self.roles, self._settled = settled, True
        if self.decoder is not None:
            (boxes, box_info), (classes, class_info) = (self._item(raw, role, item) for role in output_roles.RAW_ROLES)
            found = self.decoder.decode(boxes, classes, thresholds, (box_info.scale, box_info.zero_point),
                                        (class_info.scale, class_info.zero_point))
            boxes, classes, scores = found.boxes, found.classes, found.scores
        elif self._op_decoder is not None:
            (box_info, score_info) = self._op_roles
            boxes, scores = (np.asarray(raw[info.name]) for info in (box_info, score_info))
            boxes, scores = (v[item] if v.ndim > 2 else v for v in (boxes, scores))
            found = self._op_decoder.decode(boxes, scores, thresholds, (box_info.scale, box_info.zero_point),
                                            (score_info.scale, score_info.zero_point))
            boxes, classes, scores = found.boxes, found.classes, found.scores
        else:
            boxes, classes, scores = self._read_detections(raw, item)
            if np.ndim(thresholds) == 0:
                keep = scores >= thresholds
            else:  # filtered after the model's NMS; a class id beyond the labels is not one that was asked for
                known = (classes >= 0) & (classes < len(thresholds))
                keep = known & (scores >= thresholds[np.where(known, classes, 0)])
            boxes, classes, scores = boxes[keep], classes[keep], scores[keep]
        labels = self.spec.labels
        return [
            Detection(tuple(float(v) for v in box), float(score), int(cls),
                      labels[cls] if 0 <= cls < len(labels) else str(cls))
            for box, score, cls in zip(transform.to_pixels(boxes), scores, classes.tolist())
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


def _reaches(detection: Detection, thresholds: float | np.ndarray) -> bool:
    if np.ndim(thresholds) == 0:
        return detection.score >= thresholds
    return 0 <= detection.class_id < len(thresholds) and detection.score >= thresholds[detection.class_id]


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


def _given_spec(spec) -> DetectorSpec | None:
    """The spec the caller gave, as a ``DetectorSpec`` (None: none given)."""
    if spec is None or isinstance(spec, DetectorSpec):
        return spec
    if isinstance(spec, ModelSpec):
        return DetectorSpec.from_model_spec(spec)
    return load_spec(spec)


def _embedded_spec(model_path: Path, backend: Backend) -> DetectorSpec:
    """The spec embedded in the file, else its sidecar."""
    text = model_files.embedded_spec_text(model_path, backend.metadata())
    if text is not None:
        return parse_spec(text, model_path.parent, f"{model_path}: the embedded spec")
    sidecar = model_files.sidecar_path(model_path)
    if sidecar.is_file():
        return load_spec(sidecar)
    raise ValueError(f"{model_path}: no ssdkit spec in or beside the file; pass spec=SPEC.json (or --spec), "
                     f"write {sidecar.name}, or use a shipped spec: {', '.join(shipped_specs())}")
