"""Inference backends behind one small interface (``base.Backend``)."""
from __future__ import annotations

from pathlib import Path

from .base import Backend, TensorInfo

BACKENDS = ("tflite", "edgetpu", "onnx")


def open_backend(model_path: str | Path, name: str | None = None, threads: int | None = None) -> Backend:
    """Opens ``model_path`` with ``name`` or, by default, the backend its file calls for:
    ``.onnx`` -> ONNX Runtime, ``*_edgetpu.tflite`` -> TFLite with the Edge TPU
    delegate, other ``.tflite`` -> the TFLite interpreter."""
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    if name is None:
        if path.suffix == ".onnx":
            name = "onnx"
        elif path.name.endswith("_edgetpu.tflite"):
            name = "edgetpu"
        else:
            name = "tflite"
    if name == "onnx":
        from .onnx import OnnxBackend

        return OnnxBackend(path, threads)
    if name in ("tflite", "edgetpu"):
        from .tflite import TFLiteBackend

        return TFLiteBackend(path, threads, edgetpu=name == "edgetpu")
    raise ValueError(f"unknown backend {name!r}, expected one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "TensorInfo", "open_backend"]
