"""Full-integer quantization of a float ``.tflite`` without TensorFlow: ``ssdkit quantize``.

Google's ai-edge-quantizer (a pip package on top of ai-edge-litert, no
TensorFlow) calibrates a float TFLite model on sample inputs and rewrites it
with a recipe: here every supported op int8 (weights per channel, activations
per tensor). The calibration tensors are the runtime's own preprocessing of
RGB images (``preprocess``), so a device can quantize for its own camera's
pictures.

Per-layer recipe (``int16_layers``, ``ssdkit quantize --recipe``): the named
ops get 16-bit activations with 8-bit weights (a16w8), the rest int8. The
recipe's int8 entry for every op comes first and one entry per named op after
it, since ai-edge-quantizer takes the last matching entry; an entry's regex
matches the op's scope, which is its output tensor names joined by ``;`` with
a trailing ``;`` (``get_op_scope`` in its tfl_flatbuffer_utils). The quantizer
puts a QUANTIZE (requantize) op on each int8/int16 boundary. ``--recipe auto``
takes the worst layers of the quantization debugger's ranking, as an int8
export with ``--layer-errors`` writes it beside its int8 model (``MODEL_int8.node_data.json``, Model
Explorer node data keyed by op index: ``evaluation/node_data.py``).

The input model is an ssdkit float export with raw outputs
(``MODEL_fp32_nonms.tflite``): the quantizer makes the model's inputs and
outputs int8 too, which would turn the postprocess op's boxes and scores into
8-bit numbers, so the runtime's decoder (TFLite's op in numpy) does the
postprocessing instead. The result carries the same spec and labels, its
output roles renamed to the quantized outputs, and runs in ``Detector``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import sys
import types
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ssdkit.fileio import atomic_path

from .model_files import embed_in_tflite, node_data_path, read_spec
from .preprocess import preprocess
from .spec import ModelSpec

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'ssdkit[quantize]' (ai-edge-quantizer)"


def _quantizer_module():
    try:
        from ai_edge_quantizer import quantizer, recipe
    except ImportError as exc:
        raise RuntimeError(f"ssdkit quantize needs ai-edge-quantizer: {INSTALL_HINT} ({exc})") from None
    return quantizer, recipe


def calibration_tensors(spec: ModelSpec, images: Iterable[np.ndarray]) -> list[np.ndarray]:
    """The runtime's preprocessing of each RGB image. The first tensor gets one
    black and one white pixel, so the input's range is exactly that of pixels
    0..255 (as the TF converter's calibration in ssdkit's exports)."""
    extremes = preprocess(np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8),
                          dataclasses.replace(spec.preprocessing, input_height=1, input_width=2))[0]
    tensors = []
    for image in images:
        tensor = preprocess(image, spec.preprocessing)[0]
        if not tensors:
            tensor[0, 0, :2] = extremes[0, 0]
        tensors.append(tensor)
    if not tensors:
        raise ValueError("quantization needs calibration images, got none")
    return tensors


@contextlib.contextmanager
def _quiet_bars():
    """ai-edge-quantizer draws tqdm bars whatever stderr is; ssdkit draws bars on a terminal only."""
    if sys.stderr.isatty():
        yield
        return
    import tqdm
    from ai_edge_quantizer.utils import progress_utils

    module = progress_utils.tqdm
    progress_utils.tqdm = types.SimpleNamespace(tqdm=lambda **kwargs: tqdm.tqdm(**{**kwargs, "disable": True}))
    try:
        yield
    finally:
        progress_utils.tqdm = module


def _signature(model: Path) -> tuple[str, str]:
    """(signature key, input name) of the model's one signature."""
    from .backends.tflite import interpreter_module

    interpreter = interpreter_module().Interpreter(model_path=str(model))
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        raise ValueError(f"{model}: {len(signatures)} signatures, expected 1 (an ssdkit TFLite export)")
    key, io = next(iter(signatures.items()))
    if len(io["inputs"]) != 1:
        raise ValueError(f"{model}: {len(io['inputs'])} inputs, expected 1 image input")
    return key, io["inputs"][0]


def _check_float(model: Path) -> None:
    from .backends.tflite import interpreter_module

    interpreter = interpreter_module().Interpreter(model_path=str(model))
    dtype = interpreter.get_input_details()[0]["dtype"]
    if dtype != np.float32:
        raise ValueError(f"{model}: input is {np.dtype(dtype).name}, expected a float32 model "
                         "(quantize the fp32 export, e.g. MODEL_fp32.tflite)")


def op_outputs(model: str | Path) -> list[list[str]]:
    """The output tensor names of each op, by op index; an op's first output
    is its name in ``--keep-float``, the debugger's ranking and here."""
    from .backends.tflite import interpreter_module

    interpreter = interpreter_module().Interpreter(model_path=str(model))
    tensors = {detail["index"]: detail["name"] for detail in interpreter.get_tensor_details()}
    # _get_ops_details is private but the interpreter's only op list (stable since TF 2.5).
    return [[tensors[index] for index in op["outputs"] if index in tensors and tensors[index]]
            for op in interpreter._get_ops_details()]


def ranked_layers(int8_model: str | Path, node_data: str | Path | None = None) -> list[tuple[str, float]]:
    """(output tensor name, rmse/scale) of the layers the export's
    quantization debugger measured, worst first: the node data beside
    ``int8_model`` (``MODEL_int8.node_data.json``), whose node ids are op
    indices of ``int8_model``."""
    int8_model = Path(int8_model)
    node_data = Path(node_data) if node_data else node_data_path(int8_model)
    if not node_data.is_file():
        raise FileNotFoundError(f"{node_data}: no quantization debugger ranking (an int8 export with "
                                "--layer-errors writes it beside MODEL_int8.tflite: ssdkit export --quant int8 "
                                "--layer-errors, or make tflite LAYER_ERRORS=1)")
    try:
        results = json.loads(node_data.read_text())["results"]
        errors = {int(node): float(entry["value"]) for node, entry in results.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{node_data}: not Model Explorer node data with results {{node id: {{value}}}} ({exc})") \
            from None
    names = [outputs[0] if outputs else "" for outputs in op_outputs(int8_model)]
    ranked = [(names[node], error) for node, error in errors.items() if 0 <= node < len(names) and names[node]]
    return sorted(ranked, key=lambda item: item[1], reverse=True)


def _recipe(quantizer, ops: Sequence[Sequence[str]], int16_layers: Sequence[str]):
    """Every supported op int8, then the ``int16_layers`` ops a16w8 (the last
    matching entry wins), each matched by its whole scope (fused op names
    contain ``;`` and may begin with another op's name).
    Raises ValueError for a name that is no op's output."""
    from ai_edge_quantizer import qtyping

    scopes = {outputs[0]: ";".join(outputs) + ";" for outputs in ops if outputs}
    unknown = [name for name in int16_layers if name not in scopes]
    if unknown:
        raise ValueError(f"--recipe: the model has no op with output {', '.join(map(repr, unknown))} (names are "
                         "op output tensor names, as the export's report and node data list them)")
    every = qtyping.TFLOperationName.ALL_SUPPORTED
    quantizer.add_static_config(regex=".*", operation_name=every, activation_num_bits=8, weight_num_bits=8)
    for name in int16_layers:
        quantizer.add_static_config(regex=f"^{re.escape(scopes[name])}$", operation_name=every,
                                    activation_num_bits=16, weight_num_bits=8)


def quantize_tflite(float_model: str | Path, images: Sequence[np.ndarray], out: str | Path,
                    spec: ModelSpec | None = None, int16_layers: Sequence[str] = ()) -> Path:
    """Writes ``out``: ``float_model`` quantized to int8 (weights per channel,
    activations per tensor), calibrated on ``images`` (RGB uint8);
    ``int16_layers`` (op output tensor names) get int16 activations (a16w8).

    Raises ValueError for a model that is not float or carries no spec, or a
    layer name it does not have, and RuntimeError when ai-edge-quantizer is
    not installed."""
    quantizer, recipe = _quantizer_module()
    float_model, out = Path(float_model), Path(out)
    spec = spec or read_spec(float_model)
    if spec is None:
        raise ValueError(f"{float_model}: no embedded ssdkit spec (quantize an ssdkit fp32 export)")
    _check_float(float_model)
    if spec.outputs is not None and spec.outputs.kind != "raw":
        raise ValueError(f"{float_model}: has the postprocess op; quantize the raw export (MODEL_fp32_nonms.tflite), "
                         "the runtime decodes its outputs")
    key, input_name = _signature(float_model)
    tensors = calibration_tensors(spec, images)
    if int16_layers:
        q = quantizer.Quantizer(str(float_model))
        _recipe(q, op_outputs(float_model), int16_layers)
    else:
        q = quantizer.Quantizer(str(float_model), recipe.static_wi8_ai8())
    log.info(f"calibrating {float_model.name} on {len(tensors)} images")
    with _quiet_bars():
        calibration = q.calibrate({key: [{input_name: t} for t in tensors]})
        result = q.quantize(calibration, enable_progress_report=False)
    model = bytes(result.quantized_model)
    with atomic_path(out) as tmp:
        tmp.write_bytes(embed_in_tflite(model, _renamed_outputs(spec, model)))
    return out


def _renamed_outputs(spec: ModelSpec, model: bytes) -> ModelSpec:
    """The spec with its output roles pointing at the quantized model's outputs
    (the quantizer appends ``_quantized`` to the names of outputs it quantizes)."""
    from .backends.tflite import interpreter_module

    names = [d["name"] for d in interpreter_module().Interpreter(model_content=model).get_output_details()]
    if spec.outputs is None:
        return spec
    renamed = []
    for role, name in spec.outputs.names:
        found = [n for n in (name, f"{name}_quantized") if n in names]
        if not found:
            raise ValueError(f"the quantized model has no output for {role} ({name!r}); its outputs are {names}")
        renamed.append((role, found[0]))
    return dataclasses.replace(spec, outputs=dataclasses.replace(spec.outputs, names=tuple(renamed)))
