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


def _median_ms(call, calls: int) -> float:
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return 1000 * float(np.median(seconds))


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
    # Per round, the median of each; rounds interleave every runtime and
    # file, so a burst of load from other processes hits them alike. Figures
    # are the best round's (least disturbed); ratios the median of the
    # per-round ratios.
    rounds = {key: [] for key in [*bare, *autos]}
    for _ in range(args.rounds):
        for key, (backend, tensor) in bare.items():
            backend.run(tensor)
            rounds[key].append(_median_ms(lambda: backend.run(tensor), args.calls))
        for path, detector in autos.items():
            detector.detect(photo)
            rounds[path].append(_median_ms(lambda: detector.detect(photo), args.calls))
    median = {key: min(values) for key, values in rounds.items()}
    print(f"{args.rounds} interleaved rounds x {args.calls} calls; ms = the best round's median; bare = Backend.run "
          f"on the preprocessed photo (default threads); detect = Detector(backend='auto').detect (preprocess + "
          f"inference + NMS); ratios = median over rounds")
    for path, detector in autos.items():
        runs = {runtime: median[(p, runtime)] for (p, runtime) in bare if p == path}
        fastest = min(runs, key=runs.get)
        line = "  ".join(f"{runtime} {ms:6.2f}" for runtime, ms in runs.items())
        ratio = float(np.median(np.array(rounds[path]) / np.array(rounds[(path, fastest)])))
        print(f"{path.name:28s} bare: {line}")
        print(f"{'':28s} auto picked {detector.backend.name} ({'fastest' if detector.backend.name == fastest else 'NOT the fastest'}"
              f" here: {fastest}); detect {median[path]:6.2f} ms = {ratio:.2f}x the fastest bare call "
              f"(target <= {AUTO_TARGET}) {'ok' if ratio <= AUTO_TARGET else 'MISSED'}")
    best_key = min(bare, key=median.get)
    print(f"fastest bare call over all files: {best_key[0].name} in {best_key[1]}, {median[best_key]:.2f} ms")
    int8 = [key for key in bare if "int8" in key[0].name]
    fp32 = [key for key in bare if "int8" not in key[0].name]
    if int8 and fp32:
        a, b = min(int8, key=median.get), min(fp32, key=median.get)
        ratio = float(np.median(np.array(rounds[a]) / np.array(rounds[b])))
        print(f"best int8 path {a[0].name} in {a[1]} / best fp32 path {b[0].name} in {b[1]}: {ratio:.2f} "
              f"({'int8 is faster' if ratio < 1 else 'int8 is NOT faster'} on this machine)")
    if args.bench:
        from ssdkit.evaluation.bench import bench

        result = bench(args.bench, runs=20, images=10)
        chosen = result["recommended"]
        key = next((k for k in bare if k[0].name == chosen["file"] and k[1] == chosen["runtime"]), None)
        if key is None:
            print(f"ssdkit bench recommends {chosen['file']} in {chosen['runtime']}: not among the files given")
        else:
            ratio = float(np.median(np.array(rounds[key]) / np.array(rounds[best_key])))
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
