"""Why the camera loop's output thread waits for the model to run before it
starts its Python (``runtime/camera/pipeline.py``, ``_Turns``).

A detect thread runs the detector on frame after frame and hands each
result to an output thread that does ``--work`` ms of pure-Python work per
frame (what tracking, zones and events are: about 1 ms a frame on a desktop
CPU, several on a Raspberry Pi). Both orders, alternated, best of
``--rounds``:

- at once: the output thread starts when the result arrives, just as the
  detect thread begins its next frame; it takes the GIL at the detect
  thread's first short call that releases it (cvtColor, resize) and keeps it
  until it is done or the 5 ms switch interval runs out, so its work adds
  to the detector's time per frame;
- in turn: the output thread waits until the model runs (the interpreter has
  released the GIL), so its work overlaps inference.

    python benchmarks/camera_gil.py --model build/bench/ssd_mnv2_int8.tflite [--work 0,1,3] [--frames 300]

Frames per second of the pair, and the ratio to the detector alone
(``--work 0``). With fewer free cores than busy threads (other jobs on the
machine) the figures also move with the load; on a quiet machine the order
is what differs.
"""
from __future__ import annotations

import argparse
import queue
import threading
import time
from pathlib import Path

import cv2

from ssdkit.datasets import synth_video as script
from ssdkit.runtime.camera.pipeline import _Turns
from ssdkit.runtime.detector import Detector


def python_work(ms: float) -> None:
    """``ms`` of this thread's CPU time in the interpreter (the GIL held throughout)."""
    end = time.thread_time() + ms / 1000
    while time.thread_time() < end:
        sum(range(50))


def run(detector: Detector, frames: list, work_ms: float, in_turn: bool) -> float:
    """Frames per second of detection plus an output thread doing ``work_ms`` a frame."""
    results: queue.Queue = queue.Queue(2)
    turns = _Turns()

    def output() -> None:
        while results.get() is not None:
            if in_turn:
                turns.wait()
            python_work(work_ms)

    thread = threading.Thread(target=output, name="output")
    thread.start()
    begin = time.perf_counter()
    for image in frames:
        turns.detector(True)
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        found = detector.detect(rgb, on_inference=turns.model_runs if in_turn else None)
        turns.detector(True)
        records = [d.to_dict() for d in found]
        turns.detector(False)
        results.put(records)
    results.put(None)
    thread.join()
    return len(frames) / (time.perf_counter() - begin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--work", default="0,1,3", help="ms of Python a frame in the output thread")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    works = [float(w) for w in args.work.split(",")]
    frames = [cv2.cvtColor(script.render_frame(i), cv2.COLOR_RGB2BGR) for i in range(args.frames)]
    with Detector(args.model) as detector:
        for image in frames[:20]:
            detector.detect(image)  # warm-up
        best = {(w, t): 0.0 for w in works for t in (False, True)}
        for _ in range(args.rounds):
            for key in best:
                best[key] = max(best[key], run(detector, frames, *key))
    alone = max(best[(0.0, False)], best[(0.0, True)]) if 0.0 in works else None
    print(f"{args.model.name}, {args.frames} frames, best of {args.rounds}: FPS (ratio to detection alone)")
    print(f"{'output Python a frame':24}{'at once':>18}{'in turn':>18}")
    for w in works:
        cells = [best[(w, t)] for t in (False, True)]
        text = [f"{fps:.1f}" + (f" ({fps / alone:.3f})" if alone else "") for fps in cells]
        print(f"{w:.1f} ms{'':18}{text[0]:>18}{text[1]:>18}")


if __name__ == "__main__":
    main()
