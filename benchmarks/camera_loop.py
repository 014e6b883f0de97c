"""Camera-loop throughput against the detector alone, on a video file.

The loop overlaps capture, detection and output in three threads, so its
frame rate should approach 1 / (detection time per frame) when detection
is the slowest stage. This writes a video (a moving rectangle, 320x240
MJPG), times ``Detector.detect`` on its frames one after another, then runs
the loop over the same file at ``fast`` pace (every frame) with a video and
a JSON Lines output, and prints both rates and their ratio.

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/camera_loop.py [--model M.tflite] [--frames 300]

Without ``--model`` it exports a small untrained ssd_mnv2 (width 0.5,
160x160, fp32; needs TensorFlow, about a minute).
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

from ssdkit.runtime import Detector
from ssdkit.runtime.camera.loop import LoopConfig, run_loop

SIZE = (320, 240)


def write_video(path: Path, frames: int) -> None:
    rng = np.random.default_rng(0)
    background = rng.integers(0, 80, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, SIZE)
    for i in range(frames):
        image = background.copy()
        x = (4 * i) % (SIZE[0] - 60)
        cv2.rectangle(image, (x, 60), (x + 60, 160), (0, 200, 255), -1)
        writer.write(image)
    writer.release()


def export_model(folder: Path) -> Path:
    from ssdkit.convert.export import ExportOptions, export
    from ssdkit.convert.checkpoint import prepare_model
    from ssdkit.convert.tflite.savedmodel2tflite import TFLiteOptions

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "randomly initialised": fine for timing
        ssd = prepare_model("ssd_mnv2", width=0.5, input_size=(160, 160), labels=("a", "b"), backbone_weights="none")
    return export(ssd, "tflite", folder, ExportOptions(tflite=TFLiteOptions(quant="fp32")))[-1]


def detector_alone(model: Path, video: Path, threshold: float, threads: int | None) -> float:
    """Median seconds per frame of colour conversion + ``detect``: the detection thread's work."""
    capture = cv2.VideoCapture(str(video))
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    times = []
    with Detector(model, score_threshold=threshold, threads=threads) as detector:
        for i, frame in enumerate(frames):
            begin = time.perf_counter()
            detector.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            if i >= 10:  # after warm-up
                times.append(time.perf_counter() - begin)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a .tflite or .onnx model (default: export a small one)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--threads", type=int, help="interpreter threads (default: the backend's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = args.model or export_model(folder / "model")
        video = folder / "input.avi"
        write_video(video, args.frames)
        alone = detector_alone(model, video, args.threshold, args.threads)
        stats = run_loop(LoopConfig(model=str(model), source=str(video), file_pace="fast", threshold=args.threshold,
                                    threads=args.threads, video=str(folder / "out.mp4"),
                                    jsonl=str(folder / "out.jsonl"), stats_every=0))
    loop_fps = stats["fps_recent"] or stats["fps"]
    print(f"{model.name}, {args.frames} frames of {SIZE[0]}x{SIZE[1]}")
    print(f"detector alone   {alone * 1000:7.2f} ms a frame  {1 / alone:7.1f} FPS")
    print(f"camera loop      {1000 / loop_fps:7.2f} ms a frame  {loop_fps:7.1f} FPS  "
          f"(limited by {stats['limited_by']}; per-thread p50 ms {stats['thread_ms']})")
    print(f"loop / detector  {loop_fps * alone:7.2f}")


if __name__ == "__main__":
    main()
