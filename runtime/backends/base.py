"""The interface every backend implements: tensor descriptions and one run call.

A backend owns one loaded model. ``Detector`` only talks to this interface,
so a new interpreter is one new module, not a change to the detector.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output as the backend reports it.

    ``shape`` has -1 for a dynamic dimension (an ONNX batch axis). ``scale``
    and ``zero_point`` are the per-tensor quantization of an integer tensor,
    ``real = (q - zero_point) * scale``; a scale of 0 means not quantized.
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.dtype.kind in "iu" and self.scale != 0.0


class Backend(ABC):
    """A loaded model: ``inputs``/``outputs`` describe it, ``run`` invokes it."""

    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    @abstractmethod
    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        """Feeds the model's single input; returns every output by tensor name."""

    def metadata(self) -> dict[str, str]:
        """Key/value metadata stored in the model file (ONNX ``metadata_props``)."""
        return {}

    def postprocess_op_outputs(self) -> tuple[str, ...] | None:
        """Output names of an embedded ``TFLite_Detection_PostProcess`` op in
        the op's order (boxes, classes, scores, count), or None without one."""
        return None

    def postprocess_op_inputs(self) -> tuple[TensorInfo, TensorInfo, np.ndarray] | None:
        """The box encodings and class scores an embedded postprocess op takes,
        and its anchors [A, 4] (ycenter, xcenter, h, w): after this call ``run``
        returns the two tensors too, under their names. None where the backend
        cannot reach them (the default)."""
        return None

    def close(self) -> None:
        """Releases the interpreter or session (the backend is unusable after)."""
