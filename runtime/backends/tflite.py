"""TFLite interpreters: ai-edge-litert, else tflite-runtime, else TensorFlow's tf.lite.

tf.lite is the last resort: importing TensorFlow costs seconds and hundreds of
MB, which is why the device runtime prefers the small interpreters.
"""
from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from .base import TensorInfo

# libedgetpu's file name per OS, as pycoral loads it.
EDGETPU_LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}


def interpreter_module():
    """The first TFLite interpreter module installed, or a RuntimeError naming the package."""
    try:
        from ai_edge_litert import interpreter

        return interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter

        return interpreter
    except ImportError:
        pass
    try:
        import tensorflow as tf

        return tf.lite
    except ImportError:
        pass
    raise RuntimeError(f"no TFLite interpreter is installed; install it with: pip install {_package_for_platform()}")


def _package_for_platform() -> str:
    system, machine = platform.system(), platform.machine().lower()
    if (system == "Linux" and machine in ("x86_64", "aarch64")) or (system == "Darwin" and machine == "arm64"):
        return "ai-edge-litert"
    return "tflite-runtime"


def _info(detail: dict) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorInfo(detail["name"], tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]),
                      float(scale), int(zero_point))


class TFLiteBackend:
    def __init__(self, path: Path, threads: int | None = None, edgetpu: bool = False):
        module = interpreter_module()
        delegates = []
        if edgetpu:
            library = EDGETPU_LIBRARIES.get(platform.system(), "libedgetpu.so.1")
            try:
                delegates = [module.load_delegate(library)]
            except (ValueError, OSError) as exc:
                raise RuntimeError(f"{path}: cannot load the Edge TPU delegate {library} ({exc}); "
                                   "install libedgetpu and plug in the accelerator") from exc
        try:
            self._interpreter = module.Interpreter(
                model_path=str(path), num_threads=threads, experimental_delegates=delegates or None)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"{path}: not a model this TFLite interpreter can run ({exc})") from exc
        self._input = self._interpreter.get_input_details()
        self.inputs = [_info(d) for d in self._input]
        self.outputs = [_info(d) for d in self._interpreter.get_output_details()]
        self._output_index = {d["name"]: d["index"] for d in self._interpreter.get_output_details()}

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        self._interpreter.set_tensor(self._input[0]["index"], tensor)
        self._interpreter.invoke()
        return {name: self._interpreter.get_tensor(index) for name, index in self._output_index.items()}
