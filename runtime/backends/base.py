"""The interface every backend implements: tensor descriptions and one run call."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float = 0.0  # quantization of an integer tensor; 0 when float
    zero_point: int = 0


class Backend(Protocol):
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        """Runs the model's single input; returns raw outputs by tensor name."""
        ...
