"""``ssdkit bench MODEL_DIR``: size, speed, memory, mAP and parity of every exported format.

Exit code 0, or 1 when a format could not be measured or fails ``ssdkit
verify``'s check (the files are written either way), 2 for bad arguments.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

from ssdkit.runtime.limits import arg, span


def register(subparsers) -> None:
    from .evaluate import DEFAULT_THRESHOLD
    from .measure import DEFAULT_RUNS

    command = subparsers.add_parser("bench", help="measure every exported format in a folder: cost, mAP, parity",
                                    description=__doc__.splitlines()[0])
    command.add_argument("model_dir", help="an export folder (saved_model/ and .tflite/.onnx files, e.g. build/ssd_mnv2)")
    command.add_argument("--device", help="device profile (see `ssdkit devices`): threads and delegate "
                                          "(default: the one this machine looks like)")
    command.add_argument("--runs", type=arg("runs"), default=DEFAULT_RUNS,
                         help=f"timed runs per format, {span('runs')} (default {DEFAULT_RUNS})")
    command.add_argument("--data", help="COCO JSON or Pascal VOC folder (default: the synthetic validation split)")
    command.add_argument("--images", type=arg("images"),
                         help=f"evaluate mAP and parity on the first N images, {span('images')} (default: all)")
    command.add_argument("--threshold", type=arg("score_threshold"), default=DEFAULT_THRESHOLD,
                         help=f"minimum detection score, {span('score_threshold')} (default {DEFAULT_THRESHOLD})")
    command.add_argument("--out", help="folder for bench.json, bench.md and bench.png (default MODEL_DIR)")
    command.set_defaults(handler=_bench)


def _bench(args) -> int:
    from ssdkit.fileio import check_writable_folder
    from ssdkit.tables import text_table

    from .bench import bench, problems, table, write_results

    out = args.out or args.model_dir
    check_writable_folder(out)
    result = bench(args.model_dir, args.data, args.device, args.runs, args.images, args.threshold)
    print(text_table(*table(result)))
    for line in problems(result):
        log.warning(line)
    for path in write_results(result, out):
        print(path)
    return 1 if problems(result) else 0
