"""``--recipe auto``: a full-integer model with 16-bit activations where int8 hurts.

``--keep-float auto`` wins accuracy back by leaving the worst layers in float,
which costs quantize/dequantize hops and float kernels. This keeps every op
integer: the quantization debugger's ranking (``quant_debug.rank_layers``,
rmse/scale of each int8 layer on the calibration images) names the layers,
and ai-edge-quantizer (``runtime/quantize.py``) rewrites the fp32 export with
those at 16-bit activations and 8-bit weights, the rest int8, calibrated on
the same images through the runtime's preprocessing.

The result is ``MODEL_recipe_nonms.tflite`` beside the int8 model, measured as the
quantization report measures (same evaluation set, same latency method) in
``recipe_report.json`` / ``.md`` against fp32 and the converter's int8.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ssdkit.evaluation.evaluate import load_dataset
from ssdkit.evaluation.quant_report import map_drop_points, measure_model
from ssdkit.fileio import write_text_atomic
from ssdkit.runtime.model_files import read_spec
from ssdkit.runtime.quantize import quantize_tflite
from ssdkit.runtime.spec import ModelSpec
from ssdkit.tables import markdown_table

from .savedmodel2tflite import TFLiteOptions

RECIPE_LAYERS = 5  # the debugger's worst layers that get 16-bit activations

log = logging.getLogger(__name__)


def recipe_file(spec: ModelSpec) -> str:
    """Raw outputs always: the quantizer would make a postprocess op's outputs 8-bit (runtime/quantize.py)."""
    return f"{spec.name}_recipe_nonms.tflite"


def export_recipe(saved_model: Path, spec: ModelSpec, options: TFLiteOptions, calibration: Sequence[np.ndarray],
                  fp32_raw: Path, out_dir: Path, layers: int = RECIPE_LAYERS) -> tuple[Path, list[dict]]:
    """Writes ``MODEL_recipe_nonms.tflite`` from the fp32 raw export: the
    debugger's ``layers`` worst int8 layers (ranked on ``options``' converter)
    at 16-bit activations. Returns the file and the ranking it used."""
    from .quant_debug import rank_layers

    ranking = rank_layers(saved_model, spec, dataclasses.replace(options, edgetpu=False), calibration, top=layers)
    names = [layer.tensor for layer in ranking]
    target = Path(out_dir) / recipe_file(spec)
    log.info(f"--recipe auto: {len(names)} layers at 16-bit activations, the rest int8 (ai-edge-quantizer)")
    quantize_tflite(fp32_raw, calibration, target, int16_layers=names, spec=read_spec(fp32_raw))
    return target, [layer.as_dict() for layer in ranking]


def report_recipe(fp32: Path, int8: Path, recipe: Path, ranking: list[dict], out_dir: Path,
                  count: int = 100) -> list[Path]:
    """``recipe_report.json`` and ``.md``: fp32, the converter's int8 and the
    recipe model side by side, all raw-output files (decoded by the runtime alike)."""
    dataset = load_dataset()
    rows = {name: measure_model(path, dataset, count)[0] for name, path in
            (("fp32", fp32), ("int8", int8), ("recipe", recipe))}
    for name in ("int8", "recipe"):
        rows[name]["mAP@0.5_drop_points"] = map_drop_points(rows["fp32"], rows[name])
    report = {"models": rows, "int16_layers": ranking,
              "evaluation_set": {"source": str(dataset.source), "images": min(count, len(dataset.records))}}
    json_path, md_path = out_dir / "recipe_report.json", out_dir / "recipe_report.md"
    write_text_atomic(json_path, json.dumps(report, indent=1) + "\n")
    lines = [
        "# Recipe report", "",
        f"Evaluation set: {report['evaluation_set']['source']} ({report['evaluation_set']['images']} images).", "",
        markdown_table(("model", "size (MB)", "latency (ms)", "mAP", "mAP@0.5", "drop (points)"),
                       [(r["file"], r["size_mb"], r["latency_ms"], r["mAP"], r["mAP@0.5"],
                         r.get("mAP@0.5_drop_points", "")) for r in rows.values()]),
        "", f"{recipe.name}: every op integer; these layers (the quantization debugger's worst, rmse/scale) "
            "at 16-bit activations and 8-bit weights, the rest int8:", "",
        markdown_table(("layer (output tensor)", "op", "rmse/scale"),
                       [(f"`{layer['tensor']}`", layer["op"], f"{layer['rmse/scale']:.3f}") for layer in ranking]),
        "",
    ]
    write_text_atomic(md_path, "\n".join(lines))
    log.info(f"--recipe auto: mAP@0.5 drop {rows['recipe']['mAP@0.5_drop_points']} points "
             f"(int8: {rows['int8']['mAP@0.5_drop_points']}), latency {rows['recipe']['latency_ms']} ms "
             f"(int8: {rows['int8']['latency_ms']}) (see {md_path})")
    return [json_path, md_path]
