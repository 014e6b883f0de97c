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
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .evaluate import load_dataset, open_detector

LATENCY_IMAGES = 10  # the first images of the evaluation set, cycled through the timed runs
DEFAULT_RUNS = 50
DEFAULT_WARMUP = 5
# The latency comparison's defaults (``compare_latency``): the quantization report's and make bench's.
LATENCY_THREADS = min(os.cpu_count() or 1, 4)
LATENCY_ROUNDS = 5
LATENCY_RUNS = 20  # per model and round
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


def compare_latency(paths: Sequence[str | Path], threads: int = LATENCY_THREADS, rounds: int = LATENCY_ROUNDS,
                    runs: int = LATENCY_RUNS, warmup: int = DEFAULT_WARMUP) -> dict[str, dict]:
    """Median ``invoke`` time of each model's interpreter alone (a fixed input
    tensor through ``backend.run``: no decoding, resizing or NMS of the
    runtime, the part quantization changes), with ``threads`` threads,
    measured in interleaved rounds: model A ``runs`` times, model B, ...,
    ``rounds`` times over, so a machine whose speed drifts (shared cores,
    turbo, another job) slows every model alike and their ratio holds.

    Run it in a process of its own (``measure_latency_in_subprocess``): in one
    that has loaded TensorFlow, its thread pools compete with the interpreter's.
    Returns ``{path: {"median_ms", "p90_ms", "runs"}}`` in the order given."""
    from ssdkit.runtime import Detector

    detectors, tensors = [], []
    try:
        for path in paths:
            detector = Detector(path, threads=threads)
            detectors.append(detector)
            spec = detector.backend.inputs[0]
            tensors.append(np.zeros([d if d > 0 else 1 for d in spec.shape], spec.dtype))  # dynamic batch: 1
        seconds: list[list[np.ndarray]] = [[] for _ in detectors]
        for round_ in range(rounds):
            for i, (detector, tensor) in enumerate(zip(detectors, tensors)):
                seconds[i].append(time_calls(lambda _: detector.backend.run(tensor), runs,
                                             warmup if round_ == 0 else 1))
    finally:
        for detector in detectors:
            detector.close()
    result = {}
    for path, timed in zip(paths, seconds):
        values = 1000 * np.concatenate(timed)
        result[str(path)] = {"median_ms": round(float(np.median(values)), 3),
                             "p90_ms": round(float(np.percentile(values, 90)), 3), "runs": int(values.size)}
    return result


def measure_latency_in_subprocess(paths: Sequence[str | Path], threads: int = LATENCY_THREADS,
                                  rounds: int = LATENCY_ROUNDS, runs: int = LATENCY_RUNS) -> dict[str, dict]:
    """``compare_latency`` in a fresh Python process that imports the runtime
    only, as ``ssdkit bench`` and ``make bench`` measure: the calling
    process (the exporter) holds TensorFlow, whose idle thread pools and
    memory distort timings taken beside them."""
    import tempfile

    absolute = [str(Path(path).resolve()) for path in paths]
    argv = [sys.executable, "-m", "ssdkit.evaluation.measure", "--latency", *absolute,
            "--threads", str(threads), "--rounds", str(rounds), "--runs", str(runs)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # Run from a neutral folder: ``-m`` puts the working directory first on
    # sys.path, and a checkout's ssdkit/ folder there would shadow the install.
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    if result.returncode != 0:
        raise RuntimeError(f"measuring latency failed: {result.stderr.strip()[-1000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return {str(path): measured[full] for path, full in zip(paths, absolute)}


def int8_vs_fp32_latency(fp32: str | Path, int8: str | Path, threads: int = LATENCY_THREADS) -> dict:
    """The int8 / fp32 latency of the quantization report and of ``make
    bench`` (``benchmarks/runtime_overhead.py``): one function, so the two
    agree by construction on a given machine and pair of files. Both pass the
    models with their postprocess op (``MODEL_fp32.tflite``,
    ``MODEL_int8.tflite``: what is deployed; the op runs in float in both, so
    it makes the ratio a little closer to 1 than the raw graphs' would be):
    ``compare_latency`` with ``threads``, fp32 first in each round, in a
    fresh process (``measure_latency_in_subprocess``).

    Returns ``{"fp32_ms", "int8_ms", "ratio", "threads"}`` (medians; ratio int8 / fp32)."""
    latency = measure_latency_in_subprocess([fp32, int8], threads)
    fp32_ms, int8_ms = latency[str(fp32)]["median_ms"], latency[str(int8)]["median_ms"]
    return {"fp32_ms": fp32_ms, "int8_ms": int8_ms, "ratio": int8_ms / fp32_ms, "threads": threads}


def int8_capability() -> str:
    """What this CPU has for int8 matrix products, the main reason int8 is or
    is not faster than fp32: ``AVX-512 VNNI``, ``AVX-VNNI``, ``AVX2`` (no
    VNNI: int8 kernels gain little over fp32), ``NEON dot product``
    (ARMv8.2 ``asimddp``/``dotprod``), ``NEON`` or ``none known``."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip().lower() in ("flags", "features"):
                flags.update(value.split())
    except OSError:
        pass
    if not flags and platform.system() == "Darwin" and platform.machine() == "arm64":
        return "NEON dot product"  # every Apple silicon core has it
    for flag, name in (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"), ("avx2", "AVX2"),
                       ("asimddp", "NEON dot product"), ("asimd", "NEON"), ("neon", "NEON")):
        if flag in flags:
            return name
    return "none known"


def machine_info() -> dict:
    """The machine and software a measurement was made on."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "int8": int8_capability(),
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
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--one", type=Path, help="the .tflite, .onnx or SavedModel folder to measure")
    what.add_argument("--latency", nargs="+", type=Path, metavar="MODEL",
                      help="compare these models' interpreter latency in interleaved rounds (JSON by path)")
    parser.add_argument("--data", help="evaluation set whose first images are timed (default: synthetic validation)")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--device", help="device profile: threads and delegate")
    parser.add_argument("--backend", help="runtime to run the file with (default: from the file name)")
    parser.add_argument("--threads", type=int, default=LATENCY_THREADS, help="--latency: interpreter threads")
    parser.add_argument("--rounds", type=int, default=LATENCY_ROUNDS, help="--latency: interleaved rounds")
    args = parser.parse_args(argv)
    if args.latency:
        runs = args.runs if args.runs != DEFAULT_RUNS else LATENCY_RUNS
        print(json.dumps(compare_latency(args.latency, args.threads, args.rounds, runs, args.warmup)))
        return 0
    dataset = load_dataset(args.data)
    images = [dataset.load_image(record) for record in dataset.records[:LATENCY_IMAGES]]
    if not images:
        raise SystemExit(f"{dataset.source}: no images to time")
    print(json.dumps(measure(args.one, images, args.runs, args.device, args.warmup, args.backend)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
