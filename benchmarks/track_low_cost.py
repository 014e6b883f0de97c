"""What ByteTrack's low-score stage costs the detector: postprocess time per
frame when the camera loop decodes down to ``--track-low`` (0.1) instead of
the display threshold (0.5), on frames of the synthetic-shapes script
(``datasets/synth_video.py``), alternated, median over the frames.

    python benchmarks/track_low_cost.py --model build/bench/ssd_mnv2_int8.tflite [--frames 40] [--rounds 2]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ssdkit.datasets import synth_video as script
from ssdkit.runtime import Detector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--floor", type=float, default=0.1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        video = script.write_video(Path(folder) / "script.avi", args.frames)
        capture = cv2.VideoCapture(str(video))
        frames = [cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB) for _ in range(args.frames)]
        capture.release()
    detector = Detector(args.model, score_threshold=0.5, threads=1)
    times: dict[str, list[float]] = {"0.5": [], str(args.floor): []}
    found: dict[str, int] = {key: 0 for key in times}
    for _ in range(args.rounds):
        for key, floor in (("0.5", None), (str(args.floor), args.floor)):
            for frame in frames:
                found[key] += len(detector.detect(frame, floor))
                times[key].append(detector.timings.postprocess)
    print(f"{args.model.name}, {args.frames} frames x {args.rounds} rounds, postprocess ms a frame (median)")
    for key, values in times.items():
        print(f"decoded down to {key}: {1000 * np.median(values):.3f} ms, "
              f"{found[key] / (args.frames * args.rounds):.1f} detections a frame")


if __name__ == "__main__":
    main()
