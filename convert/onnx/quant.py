"""fp32 raw ONNX -> int8 raw ONNX: ONNX Runtime's static quantization.

QDQ format (QuantizeLinear/DequantizeLinear pairs around standard ops, which
ONNX Runtime fuses into int8 kernels), per-channel int8 weights, int8 activations with MinMax ranges. Calibration
uses the TFLite path's images through ``ssdkit.runtime.preprocess``, so both
int8 formats see exactly the tensors the device will. Before quantizing,
ONNX Runtime's ``quant_pre_process`` folds what the converter left apart
(pads into convolutions), so fewer tensors need a quantization range.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from ssdkit.log import progress
from ssdkit.runtime.model_files import read_spec
from ssdkit.runtime.preprocess import preprocess
from ssdkit.runtime.spec import ModelSpec

from .files import one_line, write_onnx

log = logging.getLogger(__name__)


def int8_file_name(raw_path: Path) -> str:
    """``<model>_raw.onnx`` -> ``<model>_raw_int8.onnx``."""
    return f"{raw_path.stem}_int8{raw_path.suffix}"


def calibration_reader(images: Sequence[np.ndarray], spec: ModelSpec, input_name: str):
    """A ``CalibrationDataReader`` feeding each image as the device would
    preprocess it. The tensors are made up front, so a bad image fails with
    preprocess's own message, not inside ONNX Runtime."""
    from onnxruntime.quantization import CalibrationDataReader

    feeds = iter(progress([{input_name: preprocess(image, spec.preprocessing)[0]} for image in images], "calibrating"))

    class Images(CalibrationDataReader):
        def get_next(self) -> dict | None:
            return next(feeds, None)

    return Images()


def quantize_onnx(raw_path: Path, images: Sequence[np.ndarray]) -> Path:
    """Writes ``<model>_raw_int8.onnx`` beside ``raw_path``, calibrated on
    ``images`` (RGB uint8); it carries the raw file's spec."""
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    if not images:
        raise ValueError("int8 export needs representative images for calibration, got none")
    spec = read_spec(raw_path)
    target = raw_path.with_name(int8_file_name(raw_path))
    input_name = onnx.load(str(raw_path), load_external_data=False).graph.input[0].name
    log.info(f"quantizing to {target.name}, calibrating on {len(images)} images")
    reader = calibration_reader(images, spec, input_name)
    with tempfile.TemporaryDirectory(prefix="ssdkit-onnx-quant-") as work:
        prepared, quantized = Path(work) / "prepared.onnx", Path(work) / "int8.onnx"
        try:
            # Symbolic shape inference needs sympy and adds nothing here: only the batch is dynamic.
            quant_pre_process(str(raw_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(quantized), reader,
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        except Exception as exc:  # ONNX Runtime raises many types; the user needs one line
            raise RuntimeError(f"{raw_path.name}: ONNX Runtime could not quantize the model ({one_line(exc)})") from exc
        model = onnx.load(str(quantized))
    return write_onnx(model, spec, target)
