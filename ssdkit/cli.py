"""The ``ssdkit`` command: each subpackage registers its own subcommands.

A subcommand module exposes ``register(subparsers)`` and keeps its heavy
imports (TensorFlow, OpenCV) inside the handlers, so ``ssdkit detect`` on a
device never loads the converter. Handlers raise ``ValueError``,
``RuntimeError`` or ``OSError`` for user-facing failures; ``main`` turns them
into one line on stderr and exit code 2 (``SSDKIT_DEBUG=1`` shows the traceback).
Every command takes ``-q`` (warnings and errors only) and ``-v`` (debug
messages and TensorFlow's own logs), before or after its name; ``main``
hands them to ``ssdkit.log.configure``. Argument errors are one line too
(``ArgumentParser.error``), and numbers are checked against
``ssdkit.runtime.limits`` while parsing: both before any handler imports
TensorFlow.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from typing import Sequence

from . import log

# Modules that contribute subcommands, in the order `ssdkit --help` lists them.
_COMMAND_MODULES = (
    "ssdkit.convert.cli",
    "ssdkit.convert.odapi.cli",
    "ssdkit.datasets.cli",
    "ssdkit.evaluation.eval_cli",
    "ssdkit.evaluation.verify_cli",
    "ssdkit.evaluation.bench_cli",
    "ssdkit.evaluation.explore_cli",
    "ssdkit.runtime.cli",
    "ssdkit.runtime.quantize_cli",
    "ssdkit.runtime.camera.cli",
    "ssdkit.devices.cli",
)

EXIT_USER_ERROR = 2

# Which extra installs a missing optional module (pip install 'ssdkit[EXTRA]').
_EXTRA_FOR_MODULE = {
    "tensorflow": "convert", "tf_keras": "convert", "tf2onnx": "convert", "onnx": "convert",
    "official": "convert", "flatbuffers": "convert", "skimage": "convert", "PIL": "eval", "pycocotools": "eval",
    "onnxruntime": "onnx", "openvino": "openvino", "cv2": "camera", "matplotlib": "dev", "pytest": "dev", "tqdm": "eval",
    "trackers": "track", "supervision": "track", "paho": "mqtt",
    "ai_edge_quantizer": "quantize", "model_explorer": "explore",
}
# trackers' metadata requires opencv-python, a second OpenCV beside opencv-python-headless: installed
# without its dependencies, after the extra that brings the ones it uses (README.md, tracking).
_INSTALL_ALSO = {"trackers": " && pip install --no-deps 'trackers>=2.6,<3'"}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: "ssdkit detect: error: argument
    --threshold: score threshold must be a number from 0 to 1, got 2" and
    exit code 2, without the usage block (``--help`` shows it). Subcommand
    parsers inherit the class (``add_subparsers`` uses the parent's type)."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="ssdkit", description=__doc__.splitlines()[0])
    _add_verbosity(parser, top=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(subparsers)
    for command in _subcommand_parsers(parser):
        _add_verbosity(command, top=False)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser, top: bool) -> None:
    """-q / -v. A subcommand's copies default to "not given", so ``ssdkit -v
    export`` and ``ssdkit export -v`` both count."""
    unset = {} if top else {"default": argparse.SUPPRESS}
    group = parser.add_argument_group("output")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors", **unset)
    choice.add_argument("-v", "--verbose", action="count", help="debug messages, and TensorFlow's own logs",
                        **({"default": 0} if top else unset))


def _subcommand_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:  # argparse keeps subparsers there; no public accessor
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += [sub, *_subcommand_parsers(sub)]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or an argument error (2, its line printed): a code like any other
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    verbosity = -1 if args.quiet else args.verbose
    log.configure(args.command, verbosity)

    def show_warning(message, category, filename, lineno, file=None, line=None):
        log.LOGGER.warning(str(message))

    warnings.showwarning = show_warning
    try:
        with log.native_stderr_captured(enabled=verbosity < 1):
            return int(args.handler(args) or 0)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in _EXTRA_FOR_MODULE or os.environ.get("SSDKIT_DEBUG"):
            raise
        install = f"pip install 'ssdkit[{_EXTRA_FOR_MODULE[top]}]'" + _INSTALL_ALSO.get(top, "")
        log.LOGGER.error(f"{top} is not installed; install it with: {install}")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("ssdkit: interrupted", file=log.STDERR)
        return 130
    except BrokenPipeError:  # `ssdkit models | head`: the reader left; nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit must not fail
        return 0
    except (ValueError, RuntimeError, OSError) as exc:
        if os.environ.get("SSDKIT_DEBUG"):
            raise
        log.LOGGER.error(str(exc))
        return EXIT_USER_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
