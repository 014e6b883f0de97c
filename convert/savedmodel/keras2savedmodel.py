"""Keras model -> SavedModel with the OD API's serving signature and a raw one.

Signatures:
- ``serving_default``: ``images`` uint8 [N, H, W, 3] RGB -> ``detection_boxes``
  [N, 100, 4] (ymin, xmin, ymax, xmax, normalized), ``detection_classes``
  (float, 1-based label ids as in the OD API's TF2 exports),
  ``detection_scores``, ``num_detections``: per-class NMS with the spec's
  postprocessing settings (the OD API's ``batch_non_max_suppression``).
- ``raw``: ``normalized_images`` float32 [1, H, W, 3] -> ``box_encodings``
  [1, A, 4] and ``class_predictions`` [1, A, C+1] logits, what the TFLite
  and ONNX exporters convert (static shapes, as the Edge TPU needs).
- ``raw_batch``: the same with any batch size, for dynamic-batch ONNX.

The spec is written to ``assets.extra/ssdkit_spec.json`` (plus ``labels.txt``),
which TensorFlow ignores and the runtime reads without TensorFlow.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from ssdkit.fileio import atomic_path
from ssdkit.log import timed
from ssdkit.runtime.model_files import write_savedmodel_spec
from ssdkit.runtime.spec import ModelSpec

from . import tf_box_coder
from ..models.ssd import SSDModel

log = logging.getLogger(__name__)



def normalize(images, spec: ModelSpec):
    """uint8 RGB -> the network's input, as the spec's preprocessing says."""
    pre = spec.preprocessing
    x = tf.cast(images, tf.float32)
    if pre.color_order == "BGR":
        x = x[..., ::-1]
    return (x - tf.constant(pre.mean, tf.float32)) / tf.constant(pre.std, tf.float32)


def scores_from_logits(logits, spec: ModelSpec):
    """``decoder.activate`` in TensorFlow ops, for the graphs (serving, TFLite)."""
    if spec.postprocessing.score_activation == "softmax":
        return tf.nn.softmax(logits, axis=-1)
    return tf.sigmoid(logits)


class DetectionModule(tf.Module):
    """The exported object: the Keras model plus its anchors and spec."""

    def __init__(self, model: SSDModel):
        super().__init__(name=model.spec.name)
        self.model = model.keras_model
        self._spec = model.spec
        self._anchors = tf.constant(model.spec.anchor_corners(), tf.float32)
        height, width = model.spec.input_size
        self.serve = tf.function(
            self._serve, input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8, name="images")]
        )
        self.raw = tf.function(
            self._raw, input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32, name="normalized_images")]
        )
        self.raw_batch = tf.function(
            self._raw, input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name="normalized_images")]
        )

    def _raw(self, normalized_images):
        outputs = self.model(normalized_images, training=False)
        return {"box_encodings": outputs["box_encodings"], "class_predictions": outputs["class_predictions"]}

    def _serve(self, images):
        spec, post = self._spec, self._spec.postprocessing
        outputs = self.model(normalize(images, spec), training=False)
        boxes = tf_box_coder.decode(outputs["box_encodings"], self._anchors, spec.box_coder.scales)
        scores = scores_from_logits(outputs["class_predictions"], spec)[..., 1:]
        nms = tf.image.combined_non_max_suppression(
            boxes[:, :, tf.newaxis, :], scores,
            max_output_size_per_class=post.detections_per_class, max_total_size=post.max_detections,
            iou_threshold=post.iou_threshold, score_threshold=post.score_threshold, clip_boxes=True,
        )
        return {
            "detection_boxes": nms.nmsed_boxes,
            "detection_classes": nms.nmsed_classes + 1.0,
            "detection_scores": nms.nmsed_scores,
            "num_detections": tf.cast(nms.valid_detections, tf.float32),
        }


@contextlib.contextmanager
def unfused_graphs():
    """Grappler's remapper off for the graphs run inside (restored after).

    Why: the remapper fuses a convolution with the inference-mode batch norm
    after it into one kernel (oneDNN's fused conv on x86), which rounds
    differently from the two ops Keras runs eagerly: about 5e-7 apart in 42%
    of one SSDLite MobileNetV3-Small layer's values. A float network stays
    within the round-trip check's 1e-4; a QAT network's fake-quant op after
    the batch norm turns a value that lies on a rounding boundary into a whole
    int8 step (0.077), and every later fake-quant layer spreads it: the QAT
    checkpoint of README.md's table differed in 5149 of 8136 box encodings
    (0.25) and 3360 class logits (0.35), though the saved graph computes what
    Keras computes. With the remapper off the loaded graph runs the ops as
    written and matches eager Keras exactly, so the check compares the export,
    not two roundings. The TFLite converter folds batch norm itself."""
    before = tf.config.optimizer.get_experimental_options().get("remapping", True)
    tf.config.optimizer.set_experimental_options({"remapping": False})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"remapping": before})


def _check_round_trip(path: Path, model: SSDModel):
    """Loads the written SavedModel and checks both signatures against Keras,
    so a broken export fails here instead of on the user's device. Returns
    the loaded SavedModel."""
    height, width = model.spec.input_size
    image = np.random.default_rng(0).uniform(-1, 1, (1, height, width, 3)).astype(np.float32)
    loaded = tf.saved_model.load(str(path))
    with unfused_graphs():  # eager Keras runs them unfused too
        raw = loaded.signatures["raw"](normalized_images=tf.constant(image))
    expected = model.keras_model(image, training=False)
    for key in ("box_encodings", "class_predictions"):
        got, want = raw[key].numpy(), expected[key].numpy()
        off = ~np.isclose(got, want, atol=1e-4)
        if off.any():
            raise RuntimeError(f"{path}: the saved '{key}' output differs from the Keras model's in {off.sum()} of "
                               f"{off.size} values (max difference {np.abs(got - want).max():.3g})")
    served = loaded.signatures["serving_default"](images=tf.zeros([1, height, width, 3], tf.uint8))
    if served["detection_boxes"].shape != (1, model.spec.postprocessing.max_detections, 4):
        raise RuntimeError(f"{path}: serving_default returned boxes of shape {served['detection_boxes'].shape}")
    return loaded


def export_savedmodel(model: SSDModel, target: Path) -> Path:
    """Writes the SavedModel folder ``target`` atomically and verifies it."""
    return export_and_load_savedmodel(model, target)[0]


def export_and_load_savedmodel(model: SSDModel, target: Path):
    """``export_savedmodel``, also returning the SavedModel its check loaded
    (``tf.saved_model.load``: its variables are read into memory, so it stays
    usable after the folder is moved into place), for a converter that would
    otherwise load it again: loading takes as long as a TFLite conversion."""
    with atomic_path(target, directory=True) as tmp:
        with timed(log, "traced and saved the SavedModel"):
            module = DetectionModule(model)
            tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve, "raw": module.raw,
                                                              "raw_batch": module.raw_batch})
        write_savedmodel_spec(tmp, model.spec)
        with timed(log, "loaded the SavedModel back and checked it against Keras"):
            loaded = _check_round_trip(tmp, model)
    return target, loaded
