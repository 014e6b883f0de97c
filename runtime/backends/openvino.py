"""OpenVINO: ssdkit's ONNX exports (fp32 and int8 QDQ) and OpenVINO IR (``.xml``).

OpenVINO reads the ONNX file itself (no conversion step), keeps its
``metadata_props`` (the embedded spec) in the model's ``rt_info``, and on
x86 runs QDQ int8 graphs with its own int8 kernels (oneDNN), which is why it
can beat ONNX Runtime on the same file. An IR written by ``ssdkit export
--format openvino`` carries the spec in its ``rt_info`` too.

Devices: ``CPU`` (default), or any OpenVINO device name (``AUTO``, ``GPU``,
``NPU``) through the backend name ``openvino:DEVICE``. fp32 models run in
fp32 on every device that allows it (``INFERENCE_PRECISION_HINT``): on CPUs
with bf16 or fp16 units OpenVINO would otherwise lower the precision by
itself, and the runtime's outputs would no longer match the other backends.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Backend, TensorInfo

DEFAULT_DEVICE = "CPU"


def _info(port) -> TensorInfo:
    shape = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
    return TensorInfo(port.get_any_name(), shape, np.dtype(port.get_element_type().to_dtype()))


def _text(value) -> str:
    return value.astype(str) if hasattr(value, "astype") else str(value)


class OpenVinoBackend(Backend):
    """One model compiled for one OpenVINO device.

    Args:
      path: a ``.onnx`` file or an OpenVINO IR ``.xml`` (its ``.bin`` beside it).
      threads: CPU inference threads (None: OpenVINO's default, all cores).
      device: ``CPU``, ``AUTO``, ``GPU``, ``NPU``... (what ``openvino.Core().available_devices`` lists).
    """

    name = "openvino"

    def __init__(self, path: Path, threads: int | None = None, device: str = DEFAULT_DEVICE):
        try:
            import openvino
        except ImportError as exc:
            raise RuntimeError("OpenVINO is not installed; install it with: pip install 'ssdkit[openvino]'") from exc
        core = openvino.Core()
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises its own exception types for bad files
            raise ValueError(f"{path}: not a model OpenVINO can read ({type(exc).__name__}: {exc})") from exc
        self.device = device
        self.name = "openvino" if device == DEFAULT_DEVICE else f"openvino:{device}"
        self._config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads and device == "CPU":
            self._config["INFERENCE_NUM_THREADS"] = threads
        self._core, self._model, self._path = core, model, path
        self._metadata = _metadata(model)
        self.inputs = tuple(_info(port) for port in model.inputs)
        self.outputs = tuple(_info(port) for port in model.outputs)
        self._requests: dict[int, object] = {}
        self._request_for(1)  # compile errors surface when the model is opened

    def _request_for(self, batch: int):
        """An infer request for one image (batch 1: the model reshaped to a
        static batch, 2-5x faster in OpenVINO's CPU plugin than the dynamic
        model on small inputs) or for any batch (the model as it is),
        compiled on first use."""
        key = 1 if batch == 1 else -1
        request = self._requests.get(key)
        if request is None:
            model = self._model
            shape = self._model.inputs[0].get_partial_shape()
            if key == 1 and shape.rank.is_static and len(shape) and not shape[0].is_static:
                model = self._model.clone()
                model.reshape({0: [1, *[d.get_length() if d.is_static else -1 for d in list(shape)[1:]]]})
            try:
                compiled = self._core.compile_model(model, self.device, self._config)
            except Exception as exc:
                devices = ", ".join(self._core.available_devices) or "none"
                raise ValueError(f"{self._path}: OpenVINO cannot compile the model for device {self.device!r} "
                                 f"(available: {devices}; {type(exc).__name__}: {exc})") from exc
            request = self._requests[key] = compiled.create_infer_request()
        return request

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        request = self._request_for(int(tensor.shape[0]) if self.inputs[0].shape[:1] == (-1,) else 1)
        request.infer({0: tensor})
        # The request's output memory is reused by the next call: copy.
        return {info.name: np.array(request.get_output_tensor(i).data) for i, info in enumerate(self.outputs)}

    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def close(self) -> None:
        self._requests = {}
        self._model = self._core = None


def _metadata(model) -> dict[str, str]:
    """String entries of the model's ``rt_info``: an ONNX file's
    ``metadata_props`` (under ``framework``) and an IR's own keys."""
    found = {}
    info = model.get_rt_info()
    for key in info.keys() if hasattr(info, "keys") else ():
        value = info[key]
        if key == "framework" and isinstance(value, dict):
            found.update({k: _text(v) for k, v in value.items()})
        elif not isinstance(value, dict):
            found[key] = _text(value)
    return found
