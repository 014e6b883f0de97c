"""What one artifact costs on this machine: load time, latency, throughput, peak memory.

``ssdkit bench`` runs ``python -m ssdkit.evaluation.measure --one FILE`` once
per format, so each is measured in a fresh process and its peak memory is its
own. This module imports the runtime only (TensorFlow just for a SavedModel
folder, which needs it), so a TFLite or ONNX measurement carries no converter.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .evaluate import load_dataset, open_detector

LATENCY_IMAGES = 10  # the first images of the evaluation set, cycled through the timed runs
DEFAULT_RUNS = 50
DEFAULT_WARMUP = 5
_VERSIONED = ("numpy", "ai-edge-litert", "tflite-runtime", "onnxruntime", "openvino", "tensorflow",
              "opencv-python-headless")


def time_calls(call: Callable[[int], object], runs: int, warmup: int = DEFAULT_WARMUP) -> np.ndarray:
    """Seconds of each of ``runs`` calls ``call(i)``, after ``warmup`` untimed
    ones (first calls allocate buffers and fill caches)."""
    for i in range(warmup):
        call(i)
    seconds = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        call(i)
        seconds[i] = time.perf_counter() - start
    return seconds


def size_mb(path: Path) -> float:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return sum(p.stat().st_size for p in files) / 1e6


def peak_rss_mb() -> float:
    """This process's peak resident memory. On Linux, VmHWM of /proc/self/status:
    ``ru_maxrss`` there keeps the parent's peak across fork and exec, so a
    child started by a process holding TensorFlow would report TensorFlow's."""
    try:
        status = Path("/proc/self/status").read_text().splitlines()
    except OSError:  # macOS: ru_maxrss, in bytes
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def measure(path: Path, images: Sequence[np.ndarray], runs: int = DEFAULT_RUNS, device: str | None = None,
            warmup: int = DEFAULT_WARMUP, backend: str | None = None) -> dict:
    """Loads ``path`` (with ``backend``, default: from the file name) and times
    ``Detector.detect`` (preprocess, inference, postprocess: what an
    application waits for) on ``images`` in turn."""
    start = time.perf_counter()
    detector = open_detector(path, device, backend=backend)
    load_s = time.perf_counter() - start
    inference = []

    def detect(i: int) -> None:
        detector.detect(images[i % len(images)])
        inference.append(detector.timings.inference)

    with detector:
        seconds = time_calls(detect, runs, warmup)
    return {
        "size_mb": round(size_mb(path), 3),
        "load_s": round(load_s, 3),
        "latency_ms": {"median": round(1000 * float(np.median(seconds)), 3),
                       "p90": round(1000 * float(np.percentile(seconds, 90)), 3),
                       "inference_median": round(1000 * float(np.median(inference[warmup:])), 3)},
        "throughput_ips": round(runs / float(seconds.sum()), 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def machine_info() -> dict:
    """The machine and software a measurement was made on."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "packages": {name: version for name in _VERSIONED if (version := _version(name))},
    }


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    # x86: "model name"; Raspberry Pi and other ARM boards: "Model" or "Hardware".
    for key in ("model name", "Model", "Hardware"):
        for line in lines:
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or platform.machine()


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssdkit.evaluation.measure", description=__doc__.splitlines()[0])
    parser.add_argument("--one", required=True, type=Path, help="the .tflite, .onnx or SavedModel folder to measure")
    parser.add_argument("--data", help="evaluation set whose first images are timed (default: synthetic validation)")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--device", help="device profile: threads and delegate")
    parser.add_argument("--backend", help="runtime to run the file with (default: from the file name)")
    args = parser.parse_args(argv)
    dataset = load_dataset(args.data)
    images = [dataset.load_image(record) for record in dataset.records[:LATENCY_IMAGES]]
    if not images:
        raise SystemExit(f"{dataset.source}: no images to time")
    print(json.dumps(measure(args.one, images, args.runs, args.device, args.warmup, args.backend)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
