"""Median invoke latency of several models measured in interleaved rounds, as
the quantization report measures fp32 against int8 (``evaluation/measure.py``
``compare_latency``: the interpreter alone, fixed input, A B C ... A B C ...),
so a machine whose speed drifts slows every model alike and the ratios hold.
For comparisons the report does not make, e.g. ``--keep-float`` against
``ssdkit quantize --recipe`` models:

    python tools/compare_latency.py A.tflite B.tflite [C.tflite ...] [--threads 2]

Prints one line per model: median and p90 ms, and the ratio to the first.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from ssdkit.evaluation.measure import LATENCY_ROUNDS, LATENCY_RUNS, LATENCY_THREADS, compare_latency

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help=".tflite or .onnx files")
    parser.add_argument("--threads", type=int, default=LATENCY_THREADS)
    parser.add_argument("--rounds", type=int, default=LATENCY_ROUNDS)
    parser.add_argument("--runs", type=int, default=LATENCY_RUNS, help="runs per model and round")
    args = parser.parse_args(argv)
    rows = compare_latency(args.models, threads=args.threads, rounds=args.rounds, runs=args.runs)
    first = next(iter(rows.values()))["median_ms"]
    for path, row in rows.items():
        print(f"{row['median_ms']:9.2f} ms  p90 {row['p90_ms']:9.2f} ms  x{row['median_ms'] / first:.3f}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
