"""One camera loop from start to clean end: the pieces built in an order
that fails early (a bad model, output path or port is an error before any
thread starts), signals turned into a clean stop, statistics printed.
"""
from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from typing import Callable

from ssdkit.fileio import check_not_inputs

from .. import limits
from ..detector import Detector
from .capture import Capture, FrameSlot, check_video_file, parse_source
from .mjpeg import MjpegServer, parse_address
from .outputs import JsonlOutput, Outputs, VideoOutput, WindowOutput
from .pipeline import Pipeline
from .stats import LoopStats, format_stats

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

    def __post_init__(self):
        limits.check(score_threshold=self.threshold, threads=self.threads, frames=self.max_frames,
                     stats_every=self.stats_every, retries=self.max_retries, retry_delay=self.retry_delay)


def run_loop(config: LoopConfig) -> dict:
    """Runs until the source ends, ``max_frames``, SIGINT/SIGTERM or the
    window's q; returns the final statistics (``LoopStats.snapshot``).
    Raises the first error of any stage, after every output is closed."""
    source = parse_source(config.source)
    inputs = [config.model] + ([config.source] if source.kind == "file" else [])
    check_not_inputs({"--video": config.video, "--jsonl": config.jsonl}, inputs)
    if source.kind == "file":
        check_video_file(source)
    with Detector(config.model, device=config.device, spec=config.spec, threads=config.threads,
                  score_threshold=config.threshold, backend=config.backend) as detector:
        stats = LoopStats()
        capture = Capture(source, FrameSlot(stats.frame_dropped), config.file_pace, config.max_retries,
                          config.retry_delay)
        pipeline = Pipeline(capture, detector, _outputs(config, stats, capture.stop), stats, config.max_frames)
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

