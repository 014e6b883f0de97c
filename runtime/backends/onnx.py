"""ONNX Runtime (CPU provider)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import TensorInfo

_ONNX_TYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32}


class OnnxBackend:
    def __init__(self, path: Path, threads: int | None = None):
        try:
            import onnxruntime
        except ImportError as exc:
            raise RuntimeError("ONNX Runtime is not installed; install it with: pip install 'ssdkit[onnx]'") from exc
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def info(arg) -> TensorInfo:
            shape = tuple(d if isinstance(d, int) else 1 for d in arg.shape)
            return TensorInfo(arg.name, shape, np.dtype(_ONNX_TYPES.get(arg.type, np.float32)))

        self.inputs = [info(a) for a in self._session.get_inputs()]
        self.outputs = [info(a) for a in self._session.get_outputs()]

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        values = self._session.run(None, {self.inputs[0].name: tensor})
        return {info.name: value for info, value in zip(self.outputs, values)}
