"""Writing an ONNX artifact: spec in ``metadata_props``, checked, then renamed
into place, so a file in the output folder is always complete and valid."""
from __future__ import annotations

from pathlib import Path

import onnx

from ssdkit.fileio import atomic_path
from ssdkit.runtime.model_files import onnx_metadata
from ssdkit.runtime.spec import ModelSpec


def one_line(exc: BaseException) -> str:
    """``Type: first line`` of an exception from tf2onnx, onnx or ONNX Runtime,
    whose messages often run to pages of graph dumps."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else 'no message'}"


def write_onnx(model: onnx.ModelProto, spec: ModelSpec, target: Path) -> Path:
    """Embeds ``spec`` (with the file's output roles), runs the full checker
    (shape inference included) and writes ``target`` atomically."""
    onnx.helper.set_model_props(model, onnx_metadata(spec))
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise RuntimeError(f"{target.name}: the ONNX graph is invalid ({one_line(exc)})") from exc
    with atomic_path(target) as tmp:
        onnx.save(model, str(tmp))
    return target
