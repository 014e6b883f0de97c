"""``Detector``: one small API over every artifact and backend.

Input: an RGB uint8 HxWx3 image of any size. Output: ``Detection``s with
boxes in pixels of that image. The model's spec (embedded in the file, a
sidecar ``.spec.json``, or given) says how to preprocess and, for models
exported without the postprocess op, how to decode: then the shared
``postprocess.detection_postprocess`` runs in numpy, with the same result
the TFLite op would give.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import postprocess
from .backends import open_backend
from .model_files import read_spec
from .preprocess import preprocess
from .spec import ModelSpec, OutputRoles


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # ymin, xmin, ymax, xmax in pixels
    score: float
    class_id: int  # 0-based index into the spec's labels
    label: str


@dataclass
class Timings:
    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0


class Detector:
    """Runs an SSD detector (TFLite, Edge TPU or ONNX) on RGB images.

    Args:
      model_path: a ``.tflite`` or ``.onnx`` file.
      spec: a ``ModelSpec`` or a path to its JSON, for files without one.
      threads: interpreter threads (default: the backend's).
      score_threshold: detections below it are dropped.
      backend: ``tflite``, ``edgetpu`` or ``onnx`` (default: from the file name).
      device: a device profile name (``ssdkit devices``): its threads and delegate.
    """

    def __init__(self, model_path: str | Path, spec: ModelSpec | str | Path | None = None, threads: int | None = None,
                 score_threshold: float = 0.5, backend: str | None = None, device: str | None = None):
        self.model_path = Path(model_path)
        if device is not None:
            from ssdkit.devices.profiles import load_profile

            profile = load_profile(device)
            threads = threads or profile.threads
            if backend is None and profile.delegate == "edgetpu" and self.model_path.suffix == ".tflite":
                backend = "edgetpu"
        self.backend = open_backend(self.model_path, backend, threads)
        if isinstance(spec, (str, Path)):
            spec = ModelSpec.from_json(Path(spec).read_text())
        self.spec = spec or read_spec(self.model_path)
        if self.spec is None:
            raise ValueError(f"{self.model_path}: no ssdkit spec in or beside the file; pass spec=SPEC.json")
        if len(self.backend.inputs) != 1:
            raise ValueError(f"{self.model_path}: {len(self.backend.inputs)} inputs, expected one image input")
        self.score_threshold = score_threshold
        self.roles = self.spec.outputs or _roles_from_shapes(self.backend.outputs, self.spec)
        self._outputs = {info.name: info for info in self.backend.outputs}
        self._anchors = self.spec.anchors_center_size() if self.roles.kind == "raw" else None
        self.timings = Timings()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def detect(self, image: np.ndarray) -> list[Detection]:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image of dtype {image.dtype} and shape {image.shape}, expected uint8 HxWx3 RGB")
        start = time.perf_counter()
        info = self.backend.inputs[0]
        tensor, transform = preprocess(image, self.spec.preprocessing, info.dtype, (info.scale, info.zero_point))
        inferred = time.perf_counter()
        raw = self.backend.run(tensor)
        done = time.perf_counter()
        boxes, classes, scores, count = self._decode(raw)
        keep = scores[:count] >= self.score_threshold
        pixels = transform.to_pixels(boxes[:count][keep])
        labels = self.spec.labels
        result = [
            Detection(tuple(float(v) for v in box), float(score), int(cls), labels[int(cls)] if 0 <= cls < len(labels) else str(int(cls)))
            for box, score, cls in zip(pixels, scores[:count][keep], classes[:count][keep])
        ]
        self.timings = Timings(inferred - start, done - inferred, time.perf_counter() - done)
        return result

    def detect_batch(self, images) -> list[list[Detection]]:
        return [self.detect(image) for image in images]

    def raw_output(self, raw: dict, role: str) -> np.ndarray:
        """The output playing ``role`` in a backend result, dequantized to float32."""
        name = self.roles.name_of(role)
        info = self._outputs[name]
        value = raw[name]
        if info.dtype.kind in "iu":
            value = postprocess.dequantize(value, info.scale, info.zero_point)
        return np.asarray(value, np.float32)

    def _decode(self, raw: dict):
        if self.roles.kind == "detections":
            boxes = self.raw_output(raw, "detection_boxes").reshape(-1, 4)
            classes = self.raw_output(raw, "detection_classes").reshape(-1)
            scores = self.raw_output(raw, "detection_scores").reshape(-1)
            count = int(self.raw_output(raw, "num_detections").reshape(-1)[0])
            return boxes, classes, scores, count
        encodings = self.raw_output(raw, "box_encodings").reshape(-1, 4)
        scores = self.raw_output(raw, "class_predictions").reshape(encodings.shape[0], -1)
        if not self.roles.scores_activated:
            scores = postprocess.activate(scores, self.spec.postprocessing.score_activation)
        post = self.spec.postprocessing
        return postprocess.detection_postprocess(
            encodings, scores, self._anchors, max_detections=post.max_detections,
            nms_score_threshold=max(post.score_threshold, 0.0), nms_iou_threshold=post.iou_threshold,
            scales=self.spec.box_coder.scales,
        )


def _roles_from_shapes(outputs, spec: ModelSpec) -> OutputRoles:
    """Output roles of a file whose spec names none (a third-party model).

    Four outputs are TFLite's postprocess op. TF1 exports (export_tflite_ssd_graph)
    list them boxes, classes, scores, count; TF2 exports
    (export_tflite_graph_tf2) as scores, boxes, count, classes. Boxes are the
    [1, N, 4] one and the count the [1] one in both; the two [1, N] outputs
    keep their relative order only within a generation, so TF2's order is
    recognised by the count coming third.
    """
    shapes = [info.shape for info in outputs]
    names = [info.name for info in outputs]
    if len(outputs) == 4:
        box = next(i for i, s in enumerate(shapes) if len(s) == 3 and s[-1] == 4)
        count = next(i for i, s in enumerate(shapes) if len(s) == 1)
        rest = [i for i in range(4) if i not in (box, count)]
        classes, scores = (rest[1], rest[0]) if count == 2 else (rest[0], rest[1])
        return OutputRoles("detections", (("detection_boxes", names[box]), ("detection_classes", names[classes]),
                                          ("detection_scores", names[scores]), ("num_detections", names[count])))
    if len(outputs) == 2:
        box = next(i for i, s in enumerate(shapes) if s[-1] == 4 and s[-1] != spec.num_classes + 1)
        return OutputRoles("raw", (("box_encodings", names[box]), ("class_predictions", names[1 - box])))
    raise ValueError(f"cannot tell the roles of {len(outputs)} outputs {names}; give them in the spec's 'outputs'")
