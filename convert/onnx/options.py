"""ONNX export choices, checked without importing onnx or TensorFlow (the
command line validates them before any heavy import)."""
from __future__ import annotations

from ssdkit.runtime import limits

DEFAULT_OPSET = 17
# 13: the lowest with every op the NMS graph uses; 17: the newest the tests run
# through ONNX Runtime and OpenCV (see savedmodel2onnx.py). limits.LIMITS["opset"] says the same.
SUPPORTED_OPSETS = range(int(limits.LIMITS["opset"].low), int(limits.LIMITS["opset"].high) + 1)
ONNX_QUANTS = ("fp32", "int8")


def check_opset(opset: int) -> int:
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(f"opset {opset} is not supported, expected {SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1}")
    return opset


def check_quant(quant: str) -> str:
    if quant not in ONNX_QUANTS:
        raise ValueError(f"ONNX export supports --quant {' or '.join(ONNX_QUANTS)}, not {quant!r}")
    return quant
