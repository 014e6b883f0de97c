"""Every installed runtime on every model file, bare, against what ssdkit picks.

Per file: the median of a bare ``Backend.run`` in each runtime that can run
it (ONNX Runtime and OpenVINO for an ``.onnx``, TFLite/XNNPACK for a
``.tflite``), on the same preprocessed photo, in interleaved rounds so load
from other processes hits every runtime alike; then ``Detector(file,
backend="auto").detect`` on the photo (preprocess, inference, NMS: what
``ssdkit detect`` runs), its choice measured afresh (empty choice cache).
Targets: auto's detect within 15% of the fastest bare call for the same file;
with ``--bench DIR``, ``ssdkit bench``'s recommended file + runtime within 10%
of the fastest bare call over all files.

    python benchmarks/runtimes.py FILE... [--bench DIR] [--rounds 7] [--calls 15]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ssdkit.runtime import Detector
from ssdkit.runtime.backends import open_backend
from ssdkit.runtime.backends.choice import installed, runtimes_for

AUTO_TARGET, BENCH_TARGET = 1.15, 1.10


def _photo() -> np.ndarray:
    import cv2

    path = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "images" / "astronaut.png"
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _median_ms(call, calls: int) -> list[float]:
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return [1000 * s for s in seconds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--bench", type=Path, help="also run `ssdkit bench` on this folder and check its recommendation")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=15)
    args = parser.parse_args()
    os.environ["SSDKIT_BACKEND_CHOICES"] = str(Path(tempfile.mkdtemp()) / "choices.json")  # measure afresh
    photo = _photo()
    bare, autos = {}, {}
    for path in args.files:
        detector = Detector(path, backend="auto")
        tensor, _ = detector._prepare(photo)  # the tensor detect feeds the model
        autos[path] = detector
        for runtime in runtimes_for(path):
            if installed(runtime):
                backend = open_backend(path, runtime)
                bare[(path, runtime)] = (backend, tensor)
    times = {key: [] for key in [*bare, *autos]}
    for _ in range(args.rounds):
        for key, (backend, tensor) in bare.items():
            backend.run(tensor)
            times[key] += _median_ms(lambda: backend.run(tensor), args.calls)
        for path, detector in autos.items():
            detector.detect(photo)
            times[path] += _median_ms(lambda: detector.detect(photo), args.calls)
    median = {key: float(np.median(values)) for key, values in times.items()}
    print(f"{args.rounds} rounds x {args.calls} calls, median ms; bare = Backend.run on the preprocessed photo "
          f"(default threads); detect = Detector(backend='auto').detect (preprocess + inference + NMS)")
    for path, detector in autos.items():
        runs = {runtime: median[(p, runtime)] for (p, runtime) in bare if p == path}
        fastest = min(runs, key=runs.get)
        line = "  ".join(f"{runtime} {ms:6.2f}" for runtime, ms in runs.items())
        ratio = median[path] / runs[fastest]
        print(f"{path.name:28s} bare: {line}")
        print(f"{'':28s} auto picked {detector.backend.name} ({'fastest' if detector.backend.name == fastest else 'NOT the fastest'}"
              f" here: {fastest}); detect {median[path]:6.2f} ms = {ratio:.2f}x the fastest bare call "
              f"(target <= {AUTO_TARGET}) {'ok' if ratio <= AUTO_TARGET else 'MISSED'}")
    best_key = min(bare, key=median.get)
    print(f"fastest bare call over all files: {best_key[0].name} in {best_key[1]}, {median[best_key]:.2f} ms")
    if args.bench:
        from ssdkit.evaluation.bench import bench

        result = bench(args.bench, runs=30, images=20)
        chosen = result["recommended"]
        key = next((k for k in bare if k[0].name == chosen["file"] and k[1] == chosen["runtime"]), None)
        if key is None:
            print(f"ssdkit bench recommends {chosen['file']} in {chosen['runtime']}: not among the files given")
        else:
            ratio = median[key] / median[best_key]
            print(f"ssdkit bench {args.bench} recommends {chosen['file']} in {chosen['runtime']} "
                  f"(its detect {chosen['latency_ms_median']:.2f} ms in bench); bare call {median[key]:.2f} ms = "
                  f"{ratio:.2f}x the fastest bare call (target <= {BENCH_TARGET}) "
                  f"{'ok' if ratio <= BENCH_TARGET else 'MISSED'}")
    for backend, _ in bare.values():
        backend.close()
    for detector in autos.values():
        detector.close()


if __name__ == "__main__":
    main()
