"""``ssdkit quantize MODEL_fp32_nonms.tflite --calib-data DIR``: int8 on the device, no TensorFlow.

Calibrates the float raw export on the images of DIR (through the runtime's
preprocessing: the pictures the device's own camera takes are the best
calibration set) and writes a full-integer model with ai-edge-quantizer
(``runtime/quantize.py``). ``--recipe auto`` gives the quantization
debugger's worst layers (the ranking the export writes beside its int8 model)
16-bit activations with 8-bit weights, the rest int8: still integer-only.
Exit code 2 for a bad model, folder or option; the output file is written
atomically and an existing file is never overwritten.
"""
from __future__ import annotations

import logging
from pathlib import Path

from . import limits

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    quantize = subparsers.add_parser("quantize", help="int8-quantize a float raw .tflite export on your images, "
                                                      "without TensorFlow (ai-edge-quantizer)",
                                     description=__doc__.splitlines()[0])
    quantize.add_argument("model", help="a float ssdkit export with raw outputs (MODEL_fp32_nonms.tflite)")
    quantize.add_argument("--calib-data", required=True, help="folder of calibration images (RGB pictures)")
    quantize.add_argument("--calib-samples", type=limits.arg("calib_samples"), default=100,
                          help=f"images to use, {limits.span('calib_samples')} (default 100)")
    quantize.add_argument("--recipe", type=_recipe, default="int8",
                          help="int8 (default), auto (the --recipe-layers worst layers of the quantization "
                               "debugger's ranking at int16 activations, int8 weights), or layer names "
                               "(op output tensor names) separated by commas")
    quantize.add_argument("--recipe-layers", type=limits.arg("recipe_layers"), default=DEFAULT_INT16_LAYERS,
                          help=f"with --recipe auto: how many layers, {limits.span('recipe_layers')} "
                               f"(default {DEFAULT_INT16_LAYERS})")
    quantize.add_argument("--ranking", help="with --recipe auto: the debugger's ranking, Model Explorer node data "
                                            "(default: MODEL_int8.node_data.json beside MODEL, as the export writes it)")
    quantize.add_argument("--out", help="output file (default: MODEL with _fp32 replaced by _aeq_int8, "
                                        "or _aeq_a16w8 with a --recipe other than int8)")
    quantize.set_defaults(handler=_quantize)


DEFAULT_INT16_LAYERS = 5  # the middle of --keep-float auto's 3, 5, 7, 10


def _recipe(text: str) -> str | tuple[str, ...]:
    """``--recipe``: "int8", "auto", or layer names separated by commas."""
    import argparse

    if text in ("int8", "auto"):
        return text
    names = tuple(name for name in text.split(",") if name)
    if not names:
        raise argparse.ArgumentTypeError(f"--recipe {text!r}: expected int8, auto or layer names separated by commas")
    return names


def _int16_layers(args, model: Path) -> tuple[str, ...]:
    """The layers ``--recipe`` names, or for auto the worst of the export's ranking."""
    from .model_files import node_data_path
    from .quantize import op_outputs, ranked_layers

    if args.recipe == "int8":
        return ()
    if isinstance(args.recipe, tuple):
        return args.recipe
    # The export's int8 model of the same folder (its ops are the node data's ids): MODEL_int8_nonms.tflite
    # (an export with --no-nms) or MODEL_int8.tflite.
    names = dict.fromkeys([model.name.replace("_fp32", "_int8"), model.name.replace("_fp32_nonms", "_int8")])
    candidates = [model.with_name(name) for name in names if name != model.name]
    found = [path for path in candidates if path.is_file() and (args.ranking or node_data_path(path).is_file())]
    if not found:
        raise FileNotFoundError(f"--recipe auto: no int8 export with the debugger's ranking beside {model.name} "
                                f"(looked for {' or '.join(node_data_path(path).name for path in candidates)}; "
                                "export with --quant int8 --layer-errors, or name the layers: --recipe NAME,NAME)")
    int8 = found[0]
    ours = {outputs[0] for outputs in op_outputs(model) if outputs}
    ranking = [(name, error) for name, error in ranked_layers(int8, args.ranking) if name in ours]
    if not ranking:
        raise ValueError(f"--recipe auto: the ranking of {int8.name} names no layer of {model.name} "
                         "(is it the same export's float model?)")
    chosen = ranking[:args.recipe_layers]
    log.info("--recipe auto: int16 activations for " + ", ".join(f"{name} ({error:.2f})" for name, error in chosen))
    return tuple(name for name, _ in chosen)


def _quantize(args) -> int:
    from .cli import _imaging, _read
    from .images import image_files
    from .quantize import quantize_tflite

    model = Path(args.model)
    if not model.is_file():
        raise FileNotFoundError(f"{model}: no such model file")
    folder = Path(args.calib_data)
    if not folder.is_dir():
        raise ValueError(f"--calib-data {folder}: not a folder of images")
    files = image_files(folder)[:args.calib_samples]
    if not files:
        raise ValueError(f"--calib-data {folder}: no image files (.jpg, .png, ...)")
    int16_layers = _int16_layers(args, model)
    tag = "_aeq_a16w8" if int16_layers else "_aeq_int8"
    out = Path(args.out) if args.out else model.with_name(model.name.replace("_fp32", tag)
                                                          if "_fp32" in model.name else f"{model.stem}{tag}.tflite")
    if out.exists():
        raise ValueError(f"{out}: exists; give another --out (ssdkit never overwrites a file)")
    imaging = _imaging()
    if imaging is None:
        raise RuntimeError("reading images needs OpenCV or Pillow: pip install 'ssdkit[camera]' or pillow")
    images = [_read(path, imaging) for path in files]
    print(quantize_tflite(model, images, out, int16_layers=int16_layers))
    return 0
