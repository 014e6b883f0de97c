"""Logging: library code says what it does, the command line decides what is shown.

Library modules log to ``logging.getLogger(__name__)``, children of the one
``ssdkit`` logger, never ``print`` to stderr; long loops (calibration,
evaluation, training) go through ``progress``. Used as a library, ssdkit
shows only warnings and errors (Python's default) and draws no bars.

The ``ssdkit`` command calls ``configure`` once it knows the verbosity:

- ``-q``: warnings and errors only;
- default: progress messages too, as ``ssdkit COMMAND: message``, and
  progress bars (tqdm) when stderr is a terminal;
- ``-v``: debug messages, and the logs of TensorFlow, absl, the TFLite
  converter and ONNX tools, which are silenced otherwise.

TensorFlow's C++ logs follow ``TF_CPP_MIN_LOG_LEVEL`` (read when TensorFlow
is imported, so ``configure`` sets it first), but absl's C++ logging (the
converter's ``W0000 ...`` lines) and the quantizer's ``fully_quantize: 0,
inference_type: 6`` line write to file descriptor 2 directly: outside
``-v``, ``native_stderr_captured`` runs the command with descriptor 2
pointed at a temporary file, while ssdkit's own messages and bars go to
the real stderr.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from typing import Iterable, Iterator, TextIO, TypeVar

LOGGER = logging.getLogger("ssdkit")
# Python loggers of the libraries whose chatter -v shows and the default hides.
THIRD_PARTY_LOGGERS = ("tensorflow", "absl", "tf2onnx", "h5py", "onnxruntime")
_T = TypeVar("_T")


class _Settings:
    bars = False  # draw progress bars (set by configure: a terminal and not -q)
    stream: TextIO | None = None  # where messages go while descriptor 2 is captured
    handler: logging.Handler | None = None


class _Stderr:
    """A file object for ssdkit's messages and bars: the real stderr even
    while descriptor 2 is captured, else whatever ``sys.stderr`` is now (so
    pytest's capture and redirections see them)."""

    def _target(self) -> TextIO:
        return _Settings.stream or sys.stderr

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return self._target().isatty()


STDERR = _Stderr()


class _Handler(logging.Handler):
    """``ssdkit COMMAND: message`` (``warning:`` / ``error:`` after the
    command for those levels), written above any progress bar."""

    def __init__(self, command: str):
        super().__init__()
        self.prefix = f"ssdkit {command}" if command else "ssdkit"

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f" {record.levelname.lower()}:"
        return f"{self.prefix}:{level} {record.getMessage()}"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if _Settings.bars and "tqdm" in sys.modules:
                from tqdm import tqdm

                tqdm.write(text, file=STDERR)
            else:
                STDERR.write(text + "\n")
                STDERR.flush()
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


def configure(command: str = "", verbosity: int = 0) -> None:
    """How much the ``ssdkit`` command shows: ``verbosity`` -1 (``-q``), 0 or
    1+ (``-v``). Call before TensorFlow is imported (its C++ log level is read
    at import). Replaces an earlier configuration (tests call ``main`` often)."""
    if _Settings.handler is not None:
        LOGGER.removeHandler(_Settings.handler)
    _Settings.handler = _Handler(command)
    LOGGER.addHandler(_Settings.handler)
    LOGGER.setLevel(logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO)
    _Settings.bars = verbosity >= 0 and _isatty(sys.stderr)
    if verbosity > 0:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        # 3: errors too (the CUDA probe's "failed call to cuInit"); real failures arrive as exceptions.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbosity > 0 else logging.ERROR)


def verbose() -> bool:
    """Whether debug messages (``-v``) are shown."""
    return LOGGER.isEnabledFor(logging.DEBUG)


def progress(items: Iterable[_T], what: str, total: int | None = None, unit: str = "image") -> Iterable[_T]:
    """``items`` with a progress bar "what: 12/100 images" on a terminal when
    the command line asked for bars; the plain iterable otherwise.

    Raises ModuleNotFoundError (naming tqdm) when a bar is wanted and tqdm
    is not installed: the ``ssdkit`` command then says which extra to install."""
    if not _Settings.bars:
        return items
    from tqdm import tqdm

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    return tqdm(items, desc=what, total=total, unit=unit, file=STDERR, leave=False, dynamic_ncols=True)


def bar(what: str, total: int | None, unit: str = "B"):
    """A progress bar driven by hand (``update(n)``, ``close()``) for work
    that is not a loop over items, such as a download's bytes (``unit`` "B"
    scales to kB/MB); None when the command line asked for no bars."""
    if not _Settings.bars:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit=unit, unit_scale=unit == "B", file=STDERR, leave=False,
                dynamic_ncols=True)


def note(items: Iterable, text: str) -> None:
    """Shows ``text`` after the bar of ``items`` (a ``progress`` result), e.g.
    the training loss; nothing when ``items`` has no bar."""
    set_postfix = getattr(items, "set_postfix_str", None)
    if set_postfix is not None:
        set_postfix(text, refresh=False)


@contextlib.contextmanager
def timed(logger: logging.Logger, what: str) -> Iterator[None]:
    """Logs "what in 12.3 s" at debug level (``-v``) when the block ends:
    the phases of a long job (an export) with their durations, to see where
    its time goes."""
    import time

    start = time.perf_counter()
    yield
    logger.debug(f"{what} in {time.perf_counter() - start:.1f} s")


@contextlib.contextmanager
def native_stderr_captured(enabled: bool = True) -> Iterator[None]:
    """Points file descriptor 2 at a temporary file for the block, so C++
    libraries' direct writes (absl's ``W0000`` lines, the quantizer's
    ``fully_quantize`` line) are not shown; ssdkit's messages and bars still
    reach the real stderr through ``STDERR``. Does nothing when not
    ``enabled`` or when descriptor 2 cannot be duplicated."""
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    sink = tempfile.TemporaryFile()
    previous = _Settings.stream
    try:
        os.dup2(sink.fileno(), 2)
        if _writes_to_fd2(sys.stderr):
            _Settings.stream = os.fdopen(os.dup(saved), "w", buffering=1)
        yield
    finally:
        if _Settings.stream is not previous:
            _Settings.stream.close()
        _Settings.stream = previous
        os.dup2(saved, 2)
        os.close(saved)
        sink.close()


def _writes_to_fd2(stream: TextIO) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
