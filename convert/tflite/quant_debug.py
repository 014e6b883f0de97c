"""Which int8 layers lose most, and what keeping them in float wins back.

``layer_errors`` runs TFLite's quantization debugger on the raw (no-NMS)
graph with the export's own calibrated model and calibration images: every int8
op's output is compared with the float op run on the same input, and layers
are ranked by rmse/scale, the root-mean-square error in units of the output's
quantization step (rounding alone gives 1/sqrt(12) = 0.29; TF's debugger
guide treats well above that as suspect). The names it returns are what
``TFLiteOptions.keep_float`` takes. It costs about as much as calibrating,
so the export runs it only when asked: ``--layer-errors`` writes its errors
as Model Explorer node data (``evaluation/node_data.py``, ``ssdkit explore``),
and ``--keep-float auto`` ranks layers with it when int8 is over budget.

``keep_float_auto`` is ``--keep-float auto``: when the quantization report
shows a mAP@0.5 drop over the budget, it exports the int8 model with the 3,
5, 7, then 10 worst layers in float, measures each as the report does, and
replaces the int8 file with the first that meets the budget. If none does,
the pure int8 model stays. Either way the report gets the ranking and the
trials, for ``--keep-float NAME,NAME`` to pick from.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ssdkit.evaluation.quant_report import map_drop_points
from ssdkit.log import timed

from .savedmodel2tflite import TFLiteOptions, TFLiteSession

KEEP_FLOAT_STEPS = (3, 5, 7, 10)  # layers kept in float, tried in turn
RANKED = max(KEEP_FLOAT_STEPS)  # layers the report's ranking lists

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerError:
    tensor: str  # the op's output tensor: the name --keep-float takes
    op: str  # the op type, e.g. CONV_2D
    rmse_per_scale: float

    def as_dict(self) -> dict:
        return {"tensor": self.tensor, "op": self.op, "rmse/scale": round(self.rmse_per_scale, 4)}


def layer_errors(session: TFLiteSession, options: TFLiteOptions) -> list[LayerError]:
    """Every int8 layer's rmse/scale, worst first (layers whose error is not
    finite, e.g. a constant output of scale 0, left out).

    The raw graph holds every layer the NMS graph does, under the same names,
    without the postprocess op the debugger cannot compare. Its calibrated
    model is the export's (``session.calibrated``): the debugger instruments
    it with NumericVerify ops, as ``QuantizationDebugger(converter=...)``
    would after calibrating again, and runs it once over the calibration
    tensors. An export runs it at most once: the ranking for
    ``--keep-float auto`` and the node data ``ssdkit explore`` shows (``--layer-errors``)."""
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    raw_options = dataclasses.replace(options, nms=False, keep_float=())
    debug_model = mlir_quantize(session.calibrated(raw_options), enable_numeric_verify=True)
    log.info(f"quantization debugger: comparing each int8 layer with float on {len(session.tensors())} images")
    with warnings.catch_warnings():
        # The debugger runs TF's own interpreter, deprecated for LiteRT's: nothing the user can act on.
        warnings.filterwarnings("ignore", r"\s*Warning: tf.lite.Interpreter is deprecated", UserWarning)
        debugger = tf.lite.experimental.QuantizationDebugger(quant_debug_model_content=debug_model,
                                                             debug_dataset=session.dataset("comparing layers"))
        with timed(log, "quantization debugger ran"):
            debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    layers = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        error = math.sqrt(float(row["mean_squared_error"])) / float(row["scale"])
        if math.isfinite(error):
            layers.append(LayerError(row["tensor_name"], row["op_name"], error))
    return sorted(layers, key=lambda layer: layer.rmse_per_scale, reverse=True)


def rank_layers(session: TFLiteSession, options: TFLiteOptions, top: int = RANKED) -> list[LayerError]:
    """The ``top`` int8 layers with the largest rmse/scale, worst first."""
    return layer_errors(session, options)[:top]


def keep_float_auto(session: TFLiteSession, options: TFLiteOptions, int8: Path, max_map_drop: float,
                    report: dict, measure: Callable[[Path], dict],
                    errors: Callable[[], Sequence[LayerError]] | None = None) -> dict | None:
    """The report's keep-float section, replacing ``int8`` by the first mix
    within ``max_map_drop``; None (and one line) when int8 is within it already.
    ``session`` and ``options`` are the export's, as it wrote ``int8``;
    ``measure(path)`` gives a mixed model's report row (size, latency, mAP@0.5);
    ``errors``: gives ``layer_errors``' result, called only when int8 is
    over the budget (the export shares one debugger run with its node data)."""
    pure = {**report["models"]["int8"], "mAP@0.5_drop_points": report["int8_vs_fp32"]["mAP@0.5_drop_points"]}
    if pure["mAP@0.5_drop_points"] <= max_map_drop:
        log.info(f"--keep-float auto: int8 is within the budget ({pure['mAP@0.5_drop_points']} <= "
                 f"{max_map_drop} points of mAP@0.5); every layer stays int8")
        return None
    ranking = list(errors()[:RANKED]) if errors is not None else rank_layers(session, options)
    trials, kept = [], []
    with tempfile.TemporaryDirectory(prefix=".keep-float-", dir=int8.parent) as tmp:
        for count in (k for k in KEEP_FLOAT_STEPS if k <= len(ranking)):
            log.info(f"--keep-float auto: trying the {count} worst layers in float")
            mixed_options = dataclasses.replace(options, keep_float=tuple(layer.tensor for layer in ranking[:count]))
            folder = Path(tmp) / str(count)
            folder.mkdir()
            mixed = session.export(folder, mixed_options)
            row = measure(mixed)
            drop = map_drop_points(report["models"]["fp32"], row)
            trials.append({"layers_in_float": count, "size_mb": row["size_mb"], "latency_ms": row["latency_ms"],
                           "mAP@0.5": row["mAP@0.5"], "mAP@0.5_drop_points": drop})
            if drop <= max_map_drop:
                os.replace(mixed, int8)
                kept = ranking[:count]
                break
    _say(int8.name, pure, trials[-1] if kept else None, max_map_drop)
    return {"budget_points": max_map_drop, "file": int8.name, "int8": pure,
            "kept_in_float": [layer.as_dict() for layer in kept],
            "ranking": [layer.as_dict() for layer in ranking], "trials": trials}


def _say(name: str, pure: dict, chosen: dict | None, max_map_drop: float) -> None:
    if chosen is None:
        log.info(f"--keep-float auto: no mix of up to {max(KEEP_FLOAT_STEPS)} layers in float met the "
                 f"budget of {max_map_drop} points; {name} stays pure int8 (the trials are in report.md)")
        return
    log.info(f"--keep-float auto: {name} keeps the worst {chosen['layers_in_float']} of its layers in "
             f"float: mAP@0.5 drop {chosen['mAP@0.5_drop_points']} points (int8: {pure['mAP@0.5_drop_points']}), "
             f"latency {chosen['latency_ms']} ms (int8: {pure['latency_ms']}), "
             f"size {chosen['size_mb']} MB (int8: {pure['size_mb']})")
