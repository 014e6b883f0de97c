"""SavedModel (``raw`` / ``raw_batch`` signature) -> ONNX with tf2onnx.

The file ``<model>_raw.onnx`` maps ``normalized_images`` float32 [N, H, W, 3]
(NHWC, ``(pixel - 127.5) / 127.5``) to ``box_encodings`` [N, A, 4] and
``class_predictions`` [N, A, C+1] (logits; the spec's ``score_activation``
turns them into scores). The spec, with these output roles, is stored in
``metadata_props["ssdkit_spec"]``, so ``ssdkit.runtime.Detector`` needs no
other file. Opsets 13-17 are accepted; 17, the default, is the one the tests
run through ONNX Runtime and OpenCV's DNN module (5.0).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import tensorflow as tf

from ssdkit.fileio import atomic_path
from ssdkit.runtime.model_files import ONNX_KEY
from ssdkit.runtime.spec import ModelSpec, OutputRoles

DEFAULT_OPSET = 17
SUPPORTED_OPSETS = range(13, 18)


def export_onnx(saved_model: Path, spec: ModelSpec, out_dir: Path, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = False) -> Path:
    import onnx
    import tf2onnx

    if opset not in SUPPORTED_OPSETS:
        raise ValueError(f"opset {opset} is not supported, expected {SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1}")
    loaded = tf.saved_model.load(str(saved_model))
    signature = "raw_batch" if dynamic_batch else "raw"
    if signature not in loaded.signatures:
        raise ValueError(f"{saved_model}: SavedModel has no '{signature}' signature; export it with ssdkit")
    raw = loaded.signatures[signature]
    height, width = spec.input_size
    batch = None if dynamic_batch else 1
    function = tf.function(
        lambda images: raw(normalized_images=images),
        input_signature=[tf.TensorSpec([batch, height, width, 3], tf.float32, name="normalized_images")],
    )
    target = out_dir / f"{spec.name}_raw.onnx"
    print(f"ssdkit export: converting to {target.name} (opset {opset})", file=sys.stderr)
    try:
        model, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature, opset=opset)
    except Exception as exc:  # tf2onnx raises many types; the user needs one line
        raise RuntimeError(f"{saved_model}: tf2onnx could not convert the model ({type(exc).__name__}: {exc})") from exc
    roles = OutputRoles("raw", (("box_encodings", "box_encodings"), ("class_predictions", "class_predictions")))
    file_spec = dataclasses.replace(spec, outputs=roles)
    onnx.helper.set_model_props(model, {ONNX_KEY: file_spec.to_json()})
    onnx.checker.check_model(model, full_check=True)
    with atomic_path(target) as tmp:
        onnx.save(model, str(tmp))
    return target
