"""ONNX Runtime on the CPU: raw SSD heads or models that end in their own NMS."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Backend, TensorInfo

_ONNX_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
}


def _info(arg) -> TensorInfo:
    # Symbolic dimensions ("N", None) are dynamic: -1, as in TensorInfo's contract.
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    if arg.type not in _ONNX_TYPES:
        raise ValueError(f"tensor {arg.name!r} has ONNX type {arg.type}, expected one of {sorted(_ONNX_TYPES)}")
    return TensorInfo(arg.name, shape, np.dtype(_ONNX_TYPES[arg.type]))


class OnnxBackend(Backend):
    name = "onnx"

    def __init__(self, path: Path, threads: int | None = None):
        try:
            import onnxruntime
        except ImportError as exc:
            raise RuntimeError("ONNX Runtime is not installed; install it with: pip install 'ssdkit[onnx]'") from exc
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are about graph rewrites, not the user's input
        if threads:
            options.intra_op_num_threads = threads
        try:
            self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ValueError(f"{path}: not a model ONNX Runtime can load ({type(exc).__name__}: {exc})") from exc
        self.inputs = tuple(_info(a) for a in self._session.get_inputs())
        self.outputs = tuple(_info(a) for a in self._session.get_outputs())
        self._output_names = [info.name for info in self.outputs]

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        values = self._session.run(self._output_names, {self.inputs[0].name: tensor})
        return dict(zip(self._output_names, values))

    def metadata(self) -> dict[str, str]:
        return dict(self._session.get_modelmeta().custom_metadata_map)

    def close(self) -> None:
        self._session = None
