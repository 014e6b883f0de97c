"""A SavedModel folder as a runtime ``Backend``: its ``raw`` signature.

``Detector(saved_model_dir)`` then preprocesses, decodes and runs NMS
exactly as for the ONNX and ``_nonms`` TFLite files, so
evaluation and parity checks compare the networks, not two NMS
implementations (the ``serving_default`` signature's per-class NMS is
TensorFlow's own). TensorFlow is imported only when a folder is opened, as
the TFLite backend imports its interpreter: the runtime never needs it.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..model_files import SAVEDMODEL_FOLDER
from .base import Backend, TensorInfo

SIGNATURE = "raw"


class SavedModelBackend(Backend):
    name = "savedmodel"

    def __init__(self, path: Path, threads: int | None = None):
        path = Path(path)
        if not (path / "saved_model.pb").is_file():
            nested = path / SAVEDMODEL_FOLDER
            hint = f"; did you mean {nested}?" if (nested / "saved_model.pb").is_file() else ""
            raise FileNotFoundError(f"{path}: not a SavedModel folder (no saved_model.pb){hint}")
        import tensorflow as tf
        if threads:
            _set_threads(tf, threads)
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:  # TensorFlow raises many types for a broken folder
            raise ValueError(f"{path}: not a SavedModel TensorFlow can load ({type(exc).__name__}: {exc})") from exc
        if SIGNATURE not in loaded.signatures:
            raise ValueError(f"{path}: the SavedModel has no '{SIGNATURE}' signature "
                             f"(it has {', '.join(loaded.signatures) or 'none'}); re-export it with ssdkit")
        self._loaded = loaded  # the signature needs its object alive
        self._function = loaded.signatures[SIGNATURE]
        self._tf = tf
        (input_name, input_spec), = self._function.structured_input_signature[1].items()
        self.inputs = (_info(input_name, input_spec),)
        self.outputs = tuple(_info(name, spec) for name, spec in sorted(self._function.structured_outputs.items()))

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        result = self._function(**{self.inputs[0].name: self._tf.constant(tensor)})
        return {name: value.numpy() for name, value in result.items()}

    def close(self) -> None:
        self._loaded = self._function = None


def _info(name: str, spec) -> TensorInfo:
    shape = tuple(-1 if d is None else int(d) for d in spec.shape)
    return TensorInfo(name, shape, np.dtype(spec.dtype.as_numpy_dtype))


def _set_threads(tf, threads: int) -> None:
    """TensorFlow takes its thread counts only before its first operation."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        warnings.warn(f"TensorFlow is already running in this process; it keeps its thread count, not {threads}",
                      stacklevel=3)
