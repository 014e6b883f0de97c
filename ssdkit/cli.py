"""The ``ssdkit`` command: each subpackage registers its own subcommands.

A subcommand module exposes ``register(subparsers)`` and keeps its heavy
imports (TensorFlow, OpenCV) inside the handlers, so ``ssdkit detect`` on a
device never loads the converter. Handlers raise ``ValueError``,
``RuntimeError`` or ``OSError`` for user-facing failures; ``main`` turns them
into one line on stderr and exit code 2 (``SSDKIT_DEBUG=1`` shows the traceback).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from typing import Sequence

# Modules that contribute subcommands, in the order `ssdkit --help` lists them.
_COMMAND_MODULES = (
    "ssdkit.convert.cli",
    "ssdkit.datasets.cli",
    "ssdkit.evaluation.eval_cli",
    "ssdkit.evaluation.verify_cli",
    "ssdkit.evaluation.bench_cli",
    "ssdkit.runtime.cli",
    "ssdkit.runtime.camera.cli",
    "ssdkit.devices.cli",
)

EXIT_USER_ERROR = 2

# Which extra installs a missing optional module (pip install 'ssdkit[EXTRA]').
_EXTRA_FOR_MODULE = {
    "tensorflow": "convert", "tf_keras": "convert", "tf2onnx": "convert", "onnx": "convert",
    "official": "convert", "flatbuffers": "convert", "PIL": "eval", "pycocotools": "eval",
    "onnxruntime": "onnx", "cv2": "camera", "matplotlib": "dev", "pytest": "dev",
    "trackers": "track", "supervision": "track", "paho": "mqtt",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssdkit", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"ssdkit {args.command}: warning: {message}", file=sys.stderr)

    warnings.showwarning = show_warning
    try:
        return int(args.handler(args) or 0)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in _EXTRA_FOR_MODULE or os.environ.get("SSDKIT_DEBUG"):
            raise
        print(f"ssdkit {args.command}: error: {top} is not installed; "
              f"install it with: pip install 'ssdkit[{_EXTRA_FOR_MODULE[top]}]'", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("ssdkit: interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as exc:
        if os.environ.get("SSDKIT_DEBUG"):
            raise
        print(f"ssdkit {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
