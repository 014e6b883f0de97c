"""TFLite interpreters: ai-edge-litert, tflite-runtime, or TensorFlow's tf.lite;
with the Edge TPU delegate for ``*_edgetpu.tflite`` models.

tf.lite is the last resort: importing TensorFlow costs seconds and hundreds of
MB, which is why the device runtime prefers the small interpreters and only
imports TensorFlow when neither is installed (or when asked by name).
"""
from __future__ import annotations

import ctypes
import importlib
import platform
import warnings
from pathlib import Path

import numpy as np

from .base import Backend, TensorInfo

# Interpreter packages by backend name, in the order ``tflite`` tries them.
INTERPRETERS = {
    "litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "tflite_runtime": ("tflite_runtime.interpreter", "tflite-runtime"),
    "tensorflow": ("tensorflow", "tensorflow"),  # its tf.lite
}
# libedgetpu's file name per OS (what pycoral and the Coral docs load).
EDGETPU_LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
POSTPROCESS_OP = "TFLite_Detection_PostProcess"


def interpreter_package(system: str | None = None, machine: str | None = None) -> str:
    """The pip package that provides a TFLite interpreter on this platform:
    ai-edge-litert has wheels for Linux x86_64/aarch64 and macOS arm64 only;
    tflite-runtime covers the rest (32-bit Raspberry Pi OS, armv7l)."""
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    if (system == "Linux" and machine in ("x86_64", "amd64", "aarch64", "arm64")) or \
            (system == "Darwin" and machine == "arm64"):
        return "ai-edge-litert"
    return "tflite-runtime"


def _import(name: str):
    module = importlib.import_module(INTERPRETERS[name][0])
    return module.lite if name == "tensorflow" else module


def interpreter_module(name: str | None = None):
    """The interpreter module for backend ``name`` (``litert``,
    ``tflite_runtime``, ``tensorflow``), or the first one installed."""
    if name is not None:
        try:
            return _import(name)
        except ImportError as exc:
            package = INTERPRETERS[name][1]
            raise RuntimeError(f"the {name} backend needs {package}; install it with: pip install {package}") from exc
    for key in ("litert", "tflite_runtime"):
        try:
            return _import(key)
        except ImportError:
            continue
    try:
        module = _import("tensorflow")
    except ImportError:
        raise RuntimeError("no TFLite interpreter is installed; install it with: "
                           f"pip install {interpreter_package()}") from None
    warnings.warn(f"running TFLite through TensorFlow (slow to import, large); pip install {interpreter_package()}")
    return module


def _load_delegate(module, library: str, model: Path):
    # Try the shared library first: a failed load_delegate leaves a noisy
    # half-built Delegate behind (its __del__ raises), and the OS error
    # here is the useful one ("cannot open shared object file").
    try:
        ctypes.CDLL(library)
    except OSError as exc:
        raise RuntimeError(f"{model}: cannot load the Edge TPU runtime {library} ({exc}); install libedgetpu "
                           "(Debian/Raspberry Pi OS: apt install libedgetpu1-std) and plug in the accelerator") from exc
    load = getattr(module, "load_delegate", None) or module.experimental.load_delegate
    try:
        return load(library)
    except (ValueError, OSError, RuntimeError) as exc:
        raise RuntimeError(f"{model}: the Edge TPU delegate {library} did not start ({exc}); "
                           "is the accelerator plugged in and not used by another process?") from exc


def _info(detail: dict) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorInfo(detail["name"], tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]),
                      float(scale), int(zero_point))


class TFLiteBackend(Backend):
    """One model in a TFLite interpreter.

    Args:
      path: the ``.tflite`` file.
      threads: interpreter threads (None: the interpreter's default).
      interpreter: ``litert``, ``tflite_runtime``, ``tensorflow`` or None for
        the first installed.
      delegate: a delegate library to load (``libedgetpu.so.1``), or None.
    """

    def __init__(self, path: Path, threads: int | None = None, interpreter: str | None = None,
                 delegate: str | None = None):
        module = interpreter_module(interpreter)
        self.name = "edgetpu" if delegate else (interpreter or "tflite")
        delegates = [_load_delegate(module, delegate, path)] if delegate else None
        try:
            self._interpreter = module.Interpreter(model_path=str(path), num_threads=threads,
                                                   experimental_delegates=delegates)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            if "edgetpu-custom-op" in str(exc):
                raise ValueError(f"{path}: the model is compiled for the Edge TPU; run it with backend 'edgetpu' "
                                 "(needs libedgetpu and the accelerator)") from exc
            raise ValueError(f"{path}: not a model this TFLite interpreter can run ({exc})") from exc
        self._input_index = [d["index"] for d in self._interpreter.get_input_details()]
        output_details = self._interpreter.get_output_details()
        self._output_index = {d["name"]: d["index"] for d in output_details}
        self.inputs = tuple(_info(d) for d in self._interpreter.get_input_details())
        self.outputs = tuple(_info(d) for d in output_details)

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        self._interpreter.set_tensor(self._input_index[0], tensor)
        self._interpreter.invoke()
        return {name: self._interpreter.get_tensor(index) for name, index in self._output_index.items()}

    def postprocess_op_outputs(self) -> tuple[str, ...] | None:
        # The op's output list is (boxes, classes, scores, count) whatever
        # order the converter gave the model's outputs, so the graph answers
        # what tensor names and output order cannot (see roles.py).
        # _get_ops_details is private but present in every interpreter
        # since TF 2.5; without it the caller falls back to heuristics.
        ops_details = getattr(self._interpreter, "_get_ops_details", None)
        if ops_details is None:
            return None
        names = {index: name for name, index in self._output_index.items()}
        ops = [op for op in ops_details() if op.get("op_name") == POSTPROCESS_OP]
        if len(ops) != 1 or not all(int(i) in names for i in ops[0]["outputs"]) or len(ops[0]["outputs"]) != 4:
            return None
        return tuple(names[int(i)] for i in ops[0]["outputs"])

    def postprocess_op_inputs(self) -> tuple[TensorInfo, TensorInfo, np.ndarray] | None:
        # The op is the graph's last, so its inputs are still in the arena
        # after ``invoke`` (nothing runs after it to reuse their memory) and
        # ``get_tensor`` reads them without experimental_preserve_all_tensors.
        ops_details = getattr(self._interpreter, "_get_ops_details", None)
        if ops_details is None:
            return None
        ops = [op for op in ops_details() if op.get("op_name") == POSTPROCESS_OP]
        if len(ops) != 1 or len(ops[0]["inputs"]) != 3:
            return None
        details = {d["index"]: d for d in self._interpreter.get_tensor_details()}
        boxes, scores, anchors = (details.get(int(i)) for i in ops[0]["inputs"])
        if boxes is None or scores is None or anchors is None:
            return None
        try:
            anchor_values = np.array(self._interpreter.get_tensor(anchors["index"]), np.float32)
        except ValueError:  # not a constant the interpreter can hand out
            return None
        for detail in (boxes, scores):
            self._output_index.setdefault(detail["name"], detail["index"])
        return _info(boxes), _info(scores), anchor_values

    def close(self) -> None:
        self._interpreter = None
