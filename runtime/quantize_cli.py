"""``ssdkit quantize MODEL_fp32_nonms.tflite --calib-data DIR``: int8 on the device, no TensorFlow.

Calibrates the float raw export on the images of DIR (through the runtime's
preprocessing: the pictures the device's own camera takes are the best
calibration set) and writes a full-integer model with ai-edge-quantizer
(``runtime/quantize.py``).
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
    quantize.add_argument("--out", help="output file (default: MODEL with _fp32 replaced by _aeq_int8)")
    quantize.set_defaults(handler=_quantize)


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
    out = Path(args.out) if args.out else model.with_name(model.name.replace("_fp32", "_aeq_int8")
                                                          if "_fp32" in model.name else f"{model.stem}_aeq_int8.tflite")
    if out.exists():
        raise ValueError(f"{out}: exists; give another --out (ssdkit never overwrites a file)")
    imaging = _imaging()
    if imaging is None:
        raise RuntimeError("reading images needs OpenCV or Pillow: pip install 'ssdkit[camera]' or pillow")
    images = [_read(path, imaging) for path in files]
    print(quantize_tflite(model, images, out))
    return 0
