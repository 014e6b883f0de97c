"""SavedModel (``raw`` / ``raw_batch`` signature) -> ONNX with tf2onnx.

The file ``<model>_raw.onnx`` maps ``normalized_images`` float32 [N, H, W, 3]
(NHWC, ``(pixel - 127.5) / 127.5``; N is 1, or named ``N`` with a dynamic
batch) to ``box_encodings`` [N, A, 4] and ``class_predictions`` [N, A, C+1]
(logits; the spec's ``score_activation`` turns them into scores). The spec,
with these output roles, is stored in ``metadata_props["ssdkit_spec"]``, so
``ssdkit.runtime.Detector`` needs no other file. ``onnx_nms.py`` and
``onnx_quant.py`` derive the NMS and int8 files from this one.

Opsets 13-17 are accepted (13: the lowest with every op the NMS graph uses).
17, the default, is the one the tests run through ONNX Runtime and OpenCV's
DNN module (5.0); tf2onnx 1.17 also writes 18, which no op here needs and
older OpenCV and ONNX Runtime builds on devices may not read.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import onnx
import tensorflow as tf

from ssdkit.runtime.roles import OutputRoles
from ssdkit.runtime.spec import ModelSpec

from .files import one_line, write_onnx
from .options import DEFAULT_OPSET, check_opset

log = logging.getLogger(__name__)


def raw_file_name(model_name: str) -> str:
    return f"{model_name}_raw.onnx"


def _raw_function(saved_model: Path, spec: ModelSpec, dynamic_batch: bool):
    """The signature to convert, as a tf.function with the input name and
    shape the file will have, and the loaded SavedModel (keep it referenced:
    a signature holds only weak references to its variables)."""
    if not (Path(saved_model) / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{saved_model}: not a SavedModel folder (no saved_model.pb)")
    loaded = tf.saved_model.load(str(saved_model))
    signature = "raw_batch" if dynamic_batch else "raw"
    if signature not in loaded.signatures:
        raise ValueError(f"{saved_model}: SavedModel has no '{signature}' signature; export it with ssdkit")
    raw = loaded.signatures[signature]
    height, width = spec.input_size
    function = tf.function(
        lambda images: raw(normalized_images=images),
        input_signature=[tf.TensorSpec([None if dynamic_batch else 1, height, width, 3], tf.float32,
                                       name="normalized_images")],
    )
    return function, loaded


def _name_dimensions(model: onnx.ModelProto, spec: ModelSpec) -> None:
    """Gives the dynamic batch one name, ``N``, on the input and the outputs
    (tf2onnx invents a different one per tensor) and fixes the anchor and
    class dimensions, so tools show the shapes the README documents."""
    known = {"box_encodings": (spec.num_anchors, 4), "class_predictions": (spec.num_anchors, spec.num_classes + 1)}
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not dims[0].HasField("dim_value"):
            dims[0].dim_param = "N"
        for dim, size in zip(dims[1:], known.get(value.name, ())):
            dim.dim_value = size


def export_onnx(saved_model: Path, spec: ModelSpec, out_dir: Path, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = False) -> Path:
    """Converts the ``raw`` (``raw_batch`` with ``dynamic_batch``) signature
    to ``out_dir/<model>_raw.onnx``, written only if it converts and checks."""
    import tf2onnx

    check_opset(opset)
    function, _loaded = _raw_function(saved_model, spec, dynamic_batch)
    target = Path(out_dir) / raw_file_name(spec.name)
    log.info(f"converting to {target.name} (opset {opset})")
    try:
        model, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature, opset=opset)
    except Exception as exc:  # tf2onnx raises many types; the user needs one line
        raise RuntimeError(f"{saved_model}: tf2onnx could not convert the model ({one_line(exc)})") from exc
    _name_dimensions(model, spec)
    return write_onnx(model, dataclasses.replace(spec, outputs=OutputRoles.named_as_roles("raw")), target)
