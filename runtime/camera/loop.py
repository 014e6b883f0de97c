"""One camera loop from start to clean end: the pieces built in an order
that fails early (a bad model, output path or port is an error before any
thread starts), signals turned into a clean stop, statistics printed.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ssdkit.fileio import check_not_inputs

from .. import limits
from ..class_filter import ClassFilter
from ..detector import Detector
from .capture import Capture, FrameSlot, check_video_file, parse_source
from .mjpeg import MjpegServer, parse_address
from .outputs import JsonlOutput, Outputs, VideoOutput, WindowOutput
from .mqtt import MqttOptions, MqttPublisher, default_topic, parse_broker
from .pipeline import Pipeline
from .scene import Scene
from .snapshots import Snapshots, parse_size
from .stats import LoopStats, format_stats
from .tracking import Tracker, TrackerOptions
from .zones import load_zones

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class LoopConfig:
    """The ``ssdkit camera`` options (see its ``--help``)."""

    model: str
    source: str
    device: str | None = None
    threshold: float = 0.5
    threads: int | None = None
    spec: str | None = None
    backend: str | None = None
    video: str | None = None
    jsonl: str | None = None
    serve: str | None = None
    window: bool = False
    max_frames: int | None = None
    stats_every: float = 10.0
    file_pace: str = "realtime"
    max_retries: int | None = None
    retry_delay: float = 0.5
    # Tracking, zones and events (tracking is on with any of track, zones, snapshots).
    track: bool = False
    track_lost: float = 1.0
    zones: str | None = None
    snapshots: str | None = None
    snapshot_clip: float = 0.0
    max_disk: str = "1GB"
    mqtt: str | None = None
    mqtt_topic: str | None = None
    mqtt_username: str | None = None
    mqtt_password_file: str | None = None
    mqtt_tls: bool = False
    mqtt_ca: str | None = None
    mqtt_cert: str | None = None
    mqtt_key: str | None = None
    mqtt_qos: int = 1
    mqtt_summary_rate: float = 1.0
    mqtt_queue: int = 1000
    mqtt_ha_discovery: bool = True
    mqtt_ha_prefix: str = "homeassistant"
    # Per-class control (``class_filter``) and ByteTrack's low-score stage.
    classes: tuple[str, ...] | None = None
    exclude_classes: tuple[str, ...] | None = None
    class_thresholds: dict[str, float] | None = None
    track_low: float = 0.1

    @property
    def tracking(self) -> bool:
        return self.track or self.zones is not None or self.snapshots is not None

    def __post_init__(self):
        limits.check(score_threshold=self.threshold, threads=self.threads, frames=self.max_frames,
                     stats_every=self.stats_every, retries=self.max_retries, retry_delay=self.retry_delay,
                     track_lost=self.track_lost, snapshot_clip=self.snapshot_clip,
                     summary_rate=self.mqtt_summary_rate, message_queue=self.mqtt_queue, qos=self.mqtt_qos,
                     track_low=self.track_low)
        ClassFilter.build(self.classes, self.exclude_classes, self.class_thresholds)  # its errors, before any I/O


def run_loop(config: LoopConfig) -> dict:
    """Runs until the source ends, ``max_frames``, SIGINT/SIGTERM or the
    window's q; returns the final statistics (``LoopStats.snapshot``).
    Raises the first error of any stage, after every output is closed."""
    source = parse_source(config.source)
    inputs = [config.model] + ([config.source] if source.kind == "file" else [])
    check_not_inputs({"--video": config.video, "--jsonl": config.jsonl}, inputs)
    if source.kind == "file":
        check_video_file(source)
    zones = load_zones(config.zones) if config.zones else None  # a bad file fails before the model loads
    mqtt_options = _mqtt_options(config) if config.mqtt else None
    max_disk = parse_size(config.max_disk) if config.snapshots else None
    with Detector(config.model, device=config.device, spec=config.spec, threads=config.threads,
                  score_threshold=config.threshold, backend=config.backend, classes=config.classes,
                  exclude_classes=config.exclude_classes, class_thresholds=config.class_thresholds) as detector:
        stats = LoopStats()
        capture = Capture(source, FrameSlot(stats.frame_dropped), config.file_pace, config.max_retries,
                          config.retry_delay)
        outputs = _outputs(config, stats, capture.stop)
        try:
            _event_outputs(outputs, config, stats, source, detector, zones, mqtt_options, max_disk)
        except BaseException:
            outputs.close()
            raise
        pipeline = Pipeline(capture, detector, outputs, stats, config.max_frames)
        with _stop_on_signals(pipeline):
            pipeline.start()
            while not pipeline.wait(config.stats_every or None):
                log.info(format_stats(stats.snapshot()))
            try:
                pipeline.join()
            finally:
                log.info(f"done: {format_stats(stats.snapshot())}")
    return stats.snapshot()


def _outputs(config: LoopConfig, stats: LoopStats, stop: Callable[[], None]) -> Outputs:
    """Every output ``config`` asks for, each checked now; on a failure the ones opened are closed."""
    outputs = Outputs()
    try:
        if config.video:
            outputs.video = VideoOutput(config.video)
        if config.window:
            outputs.window = WindowOutput(stop)
        if config.serve:
            outputs.server = MjpegServer(*parse_address(config.serve), stats=stats.snapshot)
            log.info(f"serving {outputs.server.url} (stream: {outputs.server.url}stream.mjpg)")
        if config.jsonl:
            outputs.jsonl = JsonlOutput(config.jsonl)
    except BaseException:
        outputs.close()
        raise
    return outputs


def _event_outputs(outputs: Outputs, config: LoopConfig, stats: LoopStats, source, detector: Detector,
                   zones, mqtt_options: MqttOptions | None, max_disk: int | None) -> None:
    """Tracking, snapshots and MQTT, as ``config`` asks; each library is imported only then."""
    if config.tracking:
        fps = _nominal_fps(source)
        tracker = Tracker(TrackerOptions(lost_seconds=config.track_lost), fps)
        outputs.scene = Scene(tracker, zones, video_clock=not source.live, floor=config.track_low)
    if config.snapshots:
        outputs.snapshots = Snapshots(config.snapshots, max_disk, config.snapshot_clip,
                                      draw=lambda image, result: outputs.draw(image, result))
        stats.sources["snapshots"] = outputs.snapshots.stats
    if mqtt_options is not None:
        outputs.mqtt = MqttPublisher(mqtt_options, tuple(z.name for z in zones.zones) if zones else (),
                                     tuple(l.name for l in zones.lines) if zones else (), report=log.warning)
        stats.sources["mqtt"] = outputs.mqtt.stats
        if not config.tracking:
            log.info("mqtt: detection summaries only; --track (or --zones) adds events")


def _mqtt_options(config: LoopConfig) -> MqttOptions:
    host, port = parse_broker(config.mqtt)
    password = os.environ.get("SSDKIT_MQTT_PASSWORD")
    if config.mqtt_password_file:
        try:
            password = Path(config.mqtt_password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except FileNotFoundError:
            raise FileNotFoundError(f"--mqtt-password-file {config.mqtt_password_file}: no such file") from None
    if password is not None and config.mqtt_username is None:
        raise ValueError("--mqtt-password-file (or SSDKIT_MQTT_PASSWORD) needs --mqtt-username")
    return MqttOptions(host, port, topic=config.mqtt_topic or default_topic(), username=config.mqtt_username,
                       password=password, tls=config.mqtt_tls, ca_file=config.mqtt_ca, cert_file=config.mqtt_cert,
                       key_file=config.mqtt_key, qos=config.mqtt_qos, summary_rate=config.mqtt_summary_rate,
                       queue_size=config.mqtt_queue, ha_discovery=config.mqtt_ha_discovery,
                       ha_prefix=config.mqtt_ha_prefix)


def _nominal_fps(source) -> float:
    """The tracker's reference frame rate: a file's own, else 30 (it runs on the clock anyway)."""
    if source.kind != "file":
        return 30.0
    import cv2

    capture = cv2.VideoCapture(source.text)
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return fps if 0 < fps < 1000 else 30.0


class _stop_on_signals:
    """SIGINT and SIGTERM ask ``pipeline`` to stop after the current frame;
    a second one, with the default handlers back, ends the process at once."""

    def __init__(self, pipeline: Pipeline):
        self._pipeline = pipeline
        self._previous: dict[int, object] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may handle signals; the caller stops the loop itself
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        log.info(f"{signal.Signals(signum).name}: stopping after the current frame (again: stop at once)")
        self._pipeline.stop()

