"""Inference backends behind one small interface (``base.Backend``).

Each backend module imports its library only when a model is opened with it,
so ``import ssdkit.runtime`` stays cheap and never pulls in TensorFlow.
"""
from __future__ import annotations

import platform
from pathlib import Path

from .base import Backend, TensorInfo

# ``tflite``: the first installed interpreter (ai-edge-litert, tflite-runtime,
# then TensorFlow's tf.lite); ``litert``, ``tflite_runtime``, ``tensorflow``:
# that one; ``edgetpu``: TFLite with the Edge TPU delegate; ``savedmodel``: an
# ssdkit SavedModel folder's ``raw`` signature, run by TensorFlow (for
# evaluation and parity checks on the converter's machine, not on devices);
# ``openvino``: OpenVINO on the CPU (``openvino:DEVICE`` for another device,
# e.g. ``openvino:AUTO``); ``auto``: the fastest installed runtime for the
# file on this machine (``choice.choose_backend``).
BACKENDS = ("tflite", "litert", "tflite_runtime", "tensorflow", "edgetpu", "onnx", "openvino", "savedmodel")
AUTO = "auto"


def backend_for_file(path: Path) -> str:
    """The backend a file calls for: ``.onnx`` -> ONNX Runtime, a model the
    Edge TPU compiler wrote (``*_edgetpu.tflite``) -> the Edge TPU delegate,
    a folder -> TensorFlow's SavedModel loader, an OpenVINO IR (``.xml``) ->
    OpenVINO, any other file -> the TFLite interpreter."""
    if path.is_dir():
        return "savedmodel"
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if path.suffix.lower() == ".xml":
        return "openvino"
    if path.name.lower().endswith("_edgetpu.tflite"):
        return "edgetpu"
    return "tflite"


def open_backend(model_path: str | Path, name: str | None = None, threads: int | None = None,
                 delegate_library: str | None = None) -> Backend:
    """Opens ``model_path`` with backend ``name`` (default: ``backend_for_file``).

    ``delegate_library`` overrides the Edge TPU library name (default: the
    platform's, e.g. ``libedgetpu.so.1`` on Linux).
    """
    path = Path(model_path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: model file not found")
    name = name or backend_for_file(path)
    if name == AUTO:
        from .choice import choose_backend

        name = choose_backend(path, threads).backend
    base, _, device = name.partition(":")
    if base not in BACKENDS or (device and base != "openvino"):
        raise ValueError(f"unknown backend {name!r}, expected one of {', '.join(BACKENDS)}, "
                         f"openvino:DEVICE or {AUTO}")
    if name == "savedmodel":
        from .savedmodel import SavedModelBackend

        return SavedModelBackend(path, threads)
    if not path.is_file():
        raise IsADirectoryError(f"{path}: a folder, not a model file")
    if name == "onnx":
        from .onnx import OnnxBackend

        return OnnxBackend(path, threads)
    if base == "openvino":
        from .openvino import DEFAULT_DEVICE, OpenVinoBackend

        return OpenVinoBackend(path, threads, device or DEFAULT_DEVICE)
    from .tflite import EDGETPU_LIBRARIES, TFLiteBackend

    if name == "edgetpu":
        library = delegate_library or EDGETPU_LIBRARIES.get(platform.system(), EDGETPU_LIBRARIES["Linux"])
        return TFLiteBackend(path, threads, delegate=library)
    return TFLiteBackend(path, threads, interpreter=None if name == "tflite" else name)


__all__ = ["AUTO", "BACKENDS", "Backend", "TensorInfo", "backend_for_file", "open_backend"]
