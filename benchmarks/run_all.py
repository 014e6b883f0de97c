"""``make bench``: runs every benchmark in this folder in one go and writes
benchmarks/RESULTS.md with the command, the machine and each script's output.

The models come from ``ssdkit export`` (the shipped ssd_mnv2 demo weights, int8
and fp32) into build/bench/, exported once and reused.

    python benchmarks/run_all.py [--out benchmarks/RESULTS.md]
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

from ssdkit.evaluation.measure import machine_info
from ssdkit.fileio import write_text_atomic

HERE = Path(__file__).resolve().parent
MODELS = Path("build/bench")
INT8, FP32 = MODELS / "ssd_mnv2_int8.tflite", MODELS / "ssd_mnv2_fp32.tflite"


def _run(argv: list[str]) -> str:
    print("+", " ".join(argv), file=sys.stderr, flush=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stderr[-2000:]}")
    return result.stdout.strip()


def _relative(argument: str) -> str:
    """Paths inside the checkout as the README's commands write them."""
    path = Path(argument)
    return path.relative_to(Path.cwd()).as_posix() if path.is_absolute() and path.is_relative_to(Path.cwd()) else argument


def _export_models() -> None:
    ssdkit = [sys.executable, "-m", "ssdkit.cli", "export", "--model", "ssd_mnv2", "--format", "tflite",
              "--out", str(MODELS), "--no-report"]
    if not INT8.is_file():
        _run([*ssdkit, "--quant", "int8"])
    if not FP32.is_file():
        _run([*ssdkit, "--quant", "fp32"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    _export_models()
    started = time.perf_counter()
    python = sys.executable
    runs = {
        "Shared NMS vs TFLite_Detection_PostProcess": [python, str(HERE / "nms_vs_tflite.py")],
        "Runtime overhead around invoke(), int8 vs fp32": [python, str(HERE / "runtime_overhead.py"), str(INT8),
                                                          str(FP32)],
        "Import and load: ssdkit.runtime vs TensorFlow": [python, str(HERE / "import_memory.py"), str(INT8)],
        "Camera loop vs 1 / inference latency": [python, str(HERE / "camera_loop.py"), "--model", str(INT8)],
        "Tracking and zones: cost per frame": [python, str(HERE / "tracking_cost.py")],
        "Camera loop with tracking, zones, MQTT and snapshots; broker outage": [
            python, str(HERE / "camera_events.py"), "--model", str(INT8)],
    }
    sections = []
    for title, argv in runs.items():
        output = _run(argv)
        print(output, flush=True)
        command = " ".join(["python", *(_relative(a) for a in argv[1:])])
        sections.append(f"## {title}\n\n`{command}`\n\n```\n{output}\n```\n")
    machine = machine_info()
    packages = ", ".join(f"{name} {version}" for name, version in machine.pop("packages").items())
    header = (f"# Benchmark results\n\nWritten by `make bench` ({datetime.date.today().isoformat()}, "
              f"{time.perf_counter() - started:.0f} s). Machine: "
              + ", ".join(f"{k} {v}" for k, v in machine.items() if v) + f"; {packages}.\n\n"
              "Models: `ssdkit export --model ssd_mnv2 --format tflite --quant int8|fp32 --out build/bench "
              "--no-report` (shipped demo weights).\n\n")
    write_text_atomic(Path(args.out), header + "\n".join(sections))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
