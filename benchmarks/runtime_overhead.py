"""The runtime's cost around ``invoke()``, and int8 against fp32 latency.

For each model: the median time of the bare interpreter (``set_tensor``,
``invoke``, ``get_tensor``) and of ``Detector.detect`` on a 640x480 camera
frame, whose difference is the runtime's preprocess + postprocess overhead.
The target (issue 4): overhead under 10% of the int8 ssd_mnv2 inference time.

    python benchmarks/runtime_overhead.py INT8.tflite [FP32.tflite] [--runs 50] [--threads N]

The int8 / fp32 line is ``evaluation.measure.int8_vs_fp32_latency``, the
function the quantization report's latency column calls (same threads,
same models with their postprocess op, fp32 first, in a fresh process).
"""
from __future__ import annotations

import argparse
import numpy as np

from ssdkit.evaluation.measure import LATENCY_THREADS, int8_capability, int8_vs_fp32_latency, time_calls
from ssdkit.runtime import Detector


def measure(path: str, runs: int, threads: int) -> dict[str, float]:
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    with Detector(path, threads=threads, score_threshold=0.3) as detector:
        tensor = np.zeros(detector.backend.inputs[0].shape, detector.backend.inputs[0].dtype)
        bare = 1000 * float(np.median(time_calls(lambda _: detector.backend.run(tensor), runs, warmup=3)))
        full = 1000 * float(np.median(time_calls(lambda _: detector.detect(frame), runs, warmup=3)))
    return {"invoke_ms": bare, "detect_ms": full, "overhead_ms": full - bare, "overhead_ratio": (full - bare) / bare}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="an int8 .tflite, then optionally its fp32 twin")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=LATENCY_THREADS)
    args = parser.parse_args()
    results = {path: measure(path, args.runs, args.threads) for path in args.models}
    for i, (path, r) in enumerate(results.items()):
        print(f"{path}: invoke {r['invoke_ms']:.2f} ms, detect {r['detect_ms']:.2f} ms, runtime overhead "
              f"{r['overhead_ms']:.2f} ms = {100 * r['overhead_ratio']:.1f}% of invoke"
              + (" (target for int8: < 10%)" if i == 0 else ""))
    if len(args.models) == 2:
        # The quantization report's function: interleaved rounds of the interpreter alone, in a fresh process.
        latency = int8_vs_fp32_latency(fp32=args.models[1], int8=args.models[0], threads=args.threads)
        print(f"int8 / fp32 invoke latency: {latency['ratio']:.2f} (int8 {latency['int8_ms']:.2f} ms, "
              f"fp32 {latency['fp32_ms']:.2f} ms; {args.threads} threads, interleaved rounds; "
              f"CPU int8: {int8_capability()})")


if __name__ == "__main__":
    main()
