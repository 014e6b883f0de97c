"""``backend="auto"``: the fastest installed runtime for one model file on this machine.

Which runtime is fastest depends on the machine, not only on the file: the
same QDQ int8 ONNX runs in ONNX Runtime at 22.6 ms and in OpenVINO at 11.8 ms
on an AVX2-only x86 (issue 16), while on an AVX-512 VNNI machine the order
can flip. So the choice is measured, not guessed: on first use every
installed runtime that can open the file runs it a few times on a blank
input (``bare_call_seconds``), and the fastest wins. The answer is cached
per (machine, file contents, threads) in ``$SSDKIT_CACHE/backend_choices.json``
(default ``~/.cache/ssdkit``), so later runs start at once; a changed file
or another machine or runtime version measures again.

The choice never changes the file, only the runtime that runs it. A device
profile may pin a runtime (``"backend"`` in its JSON: the Coral profiles pin
the Edge TPU delegate, the Raspberry Pi ones TFLite), which skips measuring.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger("ssdkit.runtime")

CACHE_FILE = "backend_choices.json"
# The runtimes that can run each kind of file, in the order used when they
# measure the same (a tie keeps the first: the one ssdkit has run longest).
_RUNTIME_PACKAGES = {"onnx": "onnxruntime", "openvino": "openvino"}
_VERSIONED = ("ai-edge-litert", "tflite-runtime", "onnxruntime", "openvino", "numpy")
MEASURE_RUNS = 15
MEASURE_WARMUP = 3

# (backend name, model path, threads) -> median seconds of one bare call.
Timer = Callable[[str, Path, "int | None"], float]


@dataclass(frozen=True)
class Choice:
    """The runtime ``auto`` picked for a file and why (``reason``: one line)."""

    backend: str
    reason: str
    median_ms: dict[str, float] = field(default_factory=dict)  # per measured runtime
    cached: bool = False


def cache_path() -> Path:
    """Where choices are kept: ``$SSDKIT_BACKEND_CHOICES`` (a file), else
    ``backend_choices.json`` in ``$SSDKIT_CACHE`` (default ``~/.cache/ssdkit``)."""
    if os.environ.get("SSDKIT_BACKEND_CHOICES"):
        return Path(os.environ["SSDKIT_BACKEND_CHOICES"])
    return Path(os.environ.get("SSDKIT_CACHE", Path.home() / ".cache" / "ssdkit")) / CACHE_FILE


def installed(backend: str) -> bool:
    """Whether the package a runtime needs is importable (without importing it)."""
    base = backend.partition(":")[0]
    if base in _RUNTIME_PACKAGES:
        return importlib.util.find_spec(_RUNTIME_PACKAGES[base]) is not None
    if base in ("tflite", "edgetpu"):
        return any(importlib.util.find_spec(m) is not None for m in ("ai_edge_litert", "tflite_runtime", "tensorflow"))
    if base == "savedmodel":
        return importlib.util.find_spec("tensorflow") is not None
    return False


def runtimes_for(path: Path) -> tuple[str, ...]:
    """Every runtime that can run ``path``, installed or not, in tie order."""
    path = Path(path)
    if path.is_dir():
        return ("savedmodel",)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return ("onnx", "openvino")
    if suffix == ".xml":
        return ("openvino",)
    if path.name.lower().endswith("_edgetpu.tflite"):
        return ("edgetpu",)
    return ("tflite",)


def machine_key() -> str:
    """What makes timings comparable: CPU, core count, OS and runtime versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    versions = []
    for name in _VERSIONED:
        try:
            versions.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return "|".join([cpu, str(os.cpu_count()), platform.system(), platform.machine(), *versions])


def file_digest(path: Path) -> str:
    """SHA-256 of the model's bytes (an IR's ``.bin`` included)."""
    digest = hashlib.sha256()
    files = [path] + ([path.with_suffix(".bin")] if path.suffix.lower() == ".xml" else [])
    for item in files:
        if item.is_file():
            with open(item, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def bare_call_seconds(backend: str, path: Path, threads: int | None, runs: int = MEASURE_RUNS,
                      warmup: int = MEASURE_WARMUP) -> float:
    """Median seconds of ``Backend.run`` on a blank input: the runtime alone,
    as ``auto`` compares them (pre- and postprocessing are the same for all)."""
    from . import open_backend

    opened = open_backend(path, backend, threads)
    try:
        info = opened.inputs[0]
        shape = tuple(1 if d == -1 else d for d in info.shape)
        blank = np.full(shape, info.zero_point if info.quantized else 0, info.dtype)
        for _ in range(warmup):
            opened.run(blank)
        seconds = []
        for _ in range(runs):
            start = time.perf_counter()
            opened.run(blank)
            seconds.append(time.perf_counter() - start)
        return float(np.median(seconds))
    finally:
        opened.close()


def _load_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store(path: Path, key: str, entry: dict) -> None:
    from ssdkit.fileio import write_text_atomic

    data = _load_cache(path)
    data[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError as exc:  # a read-only home: measure again next time
        log.warning(f"cannot cache the backend choice in {path} ({exc})")


def choose_backend(model_path: str | Path, threads: int | None = None, pinned: str | None = None,
                   timer: Timer | None = None, pinned_by: str = "the device profile") -> Choice:
    """The runtime to run ``model_path`` with, and one log line saying why.

    Args:
      pinned: a runtime the device profile requires (used when it can run
        the file, without measuring).
      timer: ``(backend, path, threads) -> seconds`` (default
        ``bare_call_seconds``); tests pass a deterministic one.

    Raises:
      RuntimeError: no installed runtime can run the file (says what to install).
    """
    path = Path(model_path)
    candidates = runtimes_for(path)
    if pinned is not None and pinned.partition(":")[0] in candidates:
        choice = Choice(pinned, f"pinned by {pinned_by}")
        log.info(f"backend auto: {pinned} for {path.name} ({choice.reason})")
        return choice
    available = [name for name in candidates if installed(name)]
    if not available:
        packages = " or ".join(_RUNTIME_PACKAGES.get(name, "ai-edge-litert") for name in candidates)
        raise RuntimeError(f"{path}: no runtime for this file is installed; install {packages}")
    if len(available) == 1:
        return Choice(available[0], f"the only installed runtime for {path.suffix or 'a folder'}")
    key = json.dumps([machine_key(), file_digest(path), threads or 0])
    cache = cache_path()
    entry = _load_cache(cache).get(key)
    if isinstance(entry, dict) and entry.get("backend") in available:
        choice = Choice(entry["backend"], _reason(entry["backend"], entry["median_ms"], cached=True),
                        entry["median_ms"], cached=True)
        log.info(f"backend auto: {choice.backend} for {path.name} ({choice.reason})")
        return choice
    timer = timer or bare_call_seconds
    measured: dict[str, float] = {}
    for name in available:
        try:
            measured[name] = round(1000 * timer(name, path, threads), 3)
        except (RuntimeError, ValueError) as exc:  # this runtime cannot run this file: not a candidate
            log.debug(f"backend auto: {name} cannot run {path.name} ({exc})")
    if not measured:
        raise RuntimeError(f"{path}: none of {', '.join(available)} could run the file")
    best = min(measured, key=lambda name: (measured[name], available.index(name)))
    _store(cache, key, {"backend": best, "median_ms": measured, "file": str(path),
                        "measured": time.strftime("%Y-%m-%dT%H:%M:%S")})
    choice = Choice(best, _reason(best, measured, cached=False), measured)
    log.info(f"backend auto: {best} for {path.name} ({choice.reason})")
    return choice


def _reason(best: str, measured: dict[str, float], cached: bool) -> str:
    times = ", ".join(f"{name} {ms:.2f} ms" for name, ms in sorted(measured.items(), key=lambda kv: kv[1]))
    return f"fastest on this machine: {times} a call; {'cached, measured earlier' if cached else 'measured now'}"
