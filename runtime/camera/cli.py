"""``ssdkit camera MODEL --source SRC``: a detector on a camera, stream or video file.

Runs until the source ends (a file), ``--max-frames``, SIGINT or SIGTERM;
then finishes the current frame, closes every output and exits 0. A live
source that fails is retried with backoff; after ``--max-retries`` the
command exits 2. Needs OpenCV (``pip install 'ssdkit[camera]'``).
"""
from __future__ import annotations

from dataclasses import fields

from ..limits import arg, span


def register(subparsers) -> None:
    camera = subparsers.add_parser("camera", help="run a detector on a camera, stream or video file",
                                   description=__doc__.splitlines()[0])
    camera.add_argument("model", help="a .tflite or .onnx file exported by ssdkit (or any SSD model with --spec)")
    camera.add_argument("--source", required=True,
                        help="camera index (0), /dev/videoN, a video file, rtsp://... or http://... URL, or picamera2")
    camera.add_argument("--device", help="device profile (see `ssdkit devices`): threads and delegate")
    camera.add_argument("--threshold", type=arg("score_threshold"), default=0.5,
                        help=f"minimum score, {span('score_threshold')} (default 0.5)")
    camera.add_argument("--threads", type=arg("threads"),
                        help=f"interpreter threads, {span('threads')} (default: the device profile's)")
    camera.add_argument("--spec", help="spec JSON (or a shipped spec's name) for a model without an embedded one")
    camera.add_argument("--backend", help="tflite, litert, tflite_runtime, tensorflow, edgetpu or onnx")
    camera.add_argument("--video", help="write the annotated frames to this video (.mp4, .mkv, .mov or .avi)")
    camera.add_argument("--jsonl", help="write one JSON line of detections and stage times per frame")
    camera.add_argument("--serve", metavar="HOST:PORT",
                        help="serve a live preview: / (page), /stream.mjpg, /stats.json (e.g. 127.0.0.1:8080)")
    camera.add_argument("--window", action="store_true", help="show an OpenCV window (q or Esc stops)")
    camera.add_argument("--max-frames", type=arg("frames"), metavar="N",
                        help=f"stop after this many frames ({span('frames')})")
    camera.add_argument("--stats-every", type=arg("stats_every"), default=10.0, metavar="SECONDS",
                        help=f"print running statistics this often, {span('stats_every')} (default 10; 0: only at the end)")
    camera.add_argument("--file-pace", choices=("realtime", "fast"), default="realtime",
                        help="video files: realtime reads at the file's frame rate and drops the frames the "
                             "detector cannot keep up with, like a camera (default); fast processes every "
                             "frame as fast as the pipeline goes")
    camera.add_argument("--max-retries", type=arg("retries"), metavar="N",
                        help="give up after this many failed attempts in a row to open or read a live source, "
                             f"{span('retries')} (default: retry forever)")
    camera.add_argument("--retry-delay", type=arg("retry_delay"), default=0.5, metavar="SECONDS",
                        help=f"first wait before retrying a live source, {span('retry_delay')}; doubles each time up "
                             "to 30 s (default 0.5)")
    camera.set_defaults(handler=_camera)


def _camera(args) -> int:
    try:
        import cv2
    except ImportError as exc:
        raise RuntimeError("ssdkit camera needs OpenCV: pip install 'ssdkit[camera]' "
                           "(on Raspberry Pi OS: sudo apt install python3-opencv)") from exc
    from .loop import LoopConfig, run_loop

    # OpenCV's own warning for a source it cannot open would repeat each retry message.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

    run_loop(LoopConfig(**{f.name: getattr(args, f.name) for f in fields(LoopConfig)}))
    return 0
