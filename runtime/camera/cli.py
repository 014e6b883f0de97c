"""``ssdkit camera MODEL --source SRC``: a detector on a camera, stream or video file.

Runs until the source ends (a file), ``--max-frames``, SIGINT or SIGTERM;
then finishes the current frame, closes every output and exits 0. A live
source that fails is retried with backoff; after ``--max-retries`` the
command exits 2. Needs OpenCV (``pip install 'ssdkit[camera]'``).
"""
from __future__ import annotations

import argparse
from dataclasses import fields

from .. import class_filter
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

    tracking = camera.add_argument_group(
        "tracking, zones and counts",
        "needs the track extra and trackers: pip install 'ssdkit[track]' && pip install --no-deps "
        "'trackers>=2.6,<3' (README.md says why)")
    tracking.add_argument("--track", action="store_true",
                          help="give detections stable track ids (ByteTrack) and appeared/disappeared events")
    tracking.add_argument("--track-lost", type=arg("track_lost"), default=1.0, metavar="SECONDS",
                          help="how long a track that is no longer detected is kept before it has disappeared, "
                               f"{span('track_lost')} (default 1)")
    tracking.add_argument("--track-low", type=arg("track_low"), default=0.1, metavar="SCORE",
                          help=f"ByteTrack's second stage: detections from this score up to --threshold (or their "
                               f"class's) keep a track going through a dip in score; they start no track and are "
                               f"not shown, {span('track_low')} (default 0.1)")
    tracking.add_argument("--zones", metavar="FILE",
                          help="zones (enter/leave/dwell events) and counting lines from a JSON file; implies --track")

    snapshots = camera.add_argument_group("event snapshots")
    snapshots.add_argument("--snapshots", metavar="DIR",
                           help="save a JPEG per event frame here, its path in the event; implies --track")
    snapshots.add_argument("--snapshot-clip", type=arg("snapshot_clip"), default=0.0, metavar="SECONDS",
                           help=f"also an MP4 of the SECONDS before each event, {span('snapshot_clip')} (default 0: none)")
    snapshots.add_argument("--max-disk", default="1GB", metavar="SIZE",
                           help="cap on the snapshot files (e.g. 500MB, 2GB); the oldest go first (default 1GB)")

    mqtt = camera.add_argument_group("MQTT", "needs the mqtt extra (pip install 'ssdkit[mqtt]'); topics in README.md")
    mqtt.add_argument("--mqtt", metavar="HOST[:PORT]",
                      help="publish events, detection summaries and zone counts to this broker (port 1883, "
                           "8883 with TLS)")
    mqtt.add_argument("--mqtt-topic", metavar="PREFIX", help="topic prefix (default ssdkit/HOSTNAME)")
    mqtt.add_argument("--mqtt-username", metavar="NAME", help="broker user name")
    mqtt.add_argument("--mqtt-password-file", metavar="FILE",
                      help="file holding the broker password (or set SSDKIT_MQTT_PASSWORD)")
    mqtt.add_argument("--mqtt-tls", action="store_true", help="connect with TLS, checked against the system's CAs")
    mqtt.add_argument("--mqtt-ca", metavar="FILE", help="CA certificate of the broker (implies --mqtt-tls)")
    mqtt.add_argument("--mqtt-cert", metavar="FILE", help="client certificate (with --mqtt-key)")
    mqtt.add_argument("--mqtt-key", metavar="FILE", help="client certificate's private key")
    mqtt.add_argument("--mqtt-qos", type=arg("qos"), default=1, metavar="QOS",
                      help=f"QoS of events and zone/line counts, {span('qos')} (default 1); summaries are QoS 0")
    mqtt.add_argument("--mqtt-summary-rate", type=arg("summary_rate"), default=1.0, metavar="PER_SECOND",
                      help=f"detection summaries a second, {span('summary_rate')} (default 1; 0: none)")
    mqtt.add_argument("--mqtt-queue", type=arg("message_queue"), default=1000, metavar="N",
                      help=f"messages kept while the broker is away, {span('message_queue')}; beyond, the oldest are "
                           "dropped (default 1000)")
    mqtt.add_argument("--mqtt-ha-discovery", action=argparse.BooleanOptionalAction, default=True,
                      help="announce zones and lines to Home Assistant (MQTT discovery; default on)")
    mqtt.add_argument("--mqtt-ha-prefix", default="homeassistant", metavar="PREFIX",
                      help="Home Assistant's discovery prefix (default homeassistant)")
    class_filter.add_arguments(camera)
    camera.set_defaults(handler=_camera)


def _camera(args) -> int:
    try:
        import cv2
    except ImportError as exc:
        raise RuntimeError("ssdkit camera needs OpenCV: pip install 'ssdkit[camera]' "
                           "(on Raspberry Pi OS: sudo apt install python3-opencv)") from exc
    from .loop import LoopConfig, run_loop

    # OpenCV's own warning for a source it cannot open would repeat each retry message.
    # cv2.utils.logging is missing from some builds (the 4.10 wheels); cv2.setLogLevel is the older name.
    cv_log = getattr(getattr(cv2, "utils", None), "logging", None)
    if cv_log is not None:
        cv_log.setLogLevel(cv_log.LOG_LEVEL_ERROR)
    elif hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(2)  # 2: errors (OpenCV's LOG_LEVEL_ERROR)

    classes = class_filter.from_args(args)
    values = {f.name: getattr(args, f.name) for f in fields(LoopConfig) if hasattr(args, f.name)}
    run_loop(LoopConfig(**values, class_thresholds=dict(classes.thresholds)))
    return 0
