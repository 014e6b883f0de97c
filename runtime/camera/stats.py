"""Running statistics of the camera loop: FPS, per-stage latency
percentiles, dropped frames, and which stage limits the throughput.

Samples are kept for the last ``WINDOW`` frames only, so a loop that runs
for days uses constant memory and the percentiles describe the recent past.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

import numpy as np

WINDOW = 1000
# Stages in the order a frame passes them; ``detect`` is preprocess +
# inference + postprocess, the work of the detection thread.
# ``track`` (tracking, zones and events) is there only with tracking on.
STAGES = ("capture", "preprocess", "inference", "postprocess", "track", "output", "latency")
# The work of each thread: the slowest one bounds the loop's throughput.
THREAD_STAGES = {"capture": ("capture",), "detect": ("preprocess", "inference", "postprocess"),
                 "output": ("track", "output")}


class LoopStats:
    """Thread-safe: capture, detection and output threads record into it,
    the main thread and the MJPEG server read ``snapshot``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples = {stage: deque(maxlen=WINDOW) for stage in STAGES}
        self._done_at: deque[float] = deque(maxlen=WINDOW)
        self.started = time.monotonic()
        self.frames = 0
        self.dropped = 0
        self.sources: dict[str, Callable[[], dict]] = {}  # more statistics by name (mqtt, snapshots)

    def frame_dropped(self) -> None:
        with self._lock:
            self.dropped += 1

    def frame_done(self, seconds: dict[str, float]) -> None:
        """One frame through every stage; ``seconds`` per stage (``STAGES``)."""
        with self._lock:
            self.frames += 1
            self._done_at.append(time.monotonic())
            for stage, value in seconds.items():
                self._samples[stage].append(value)

    def snapshot(self) -> dict:
        """Plain JSON: frames, dropped, fps (overall and over the window), p50/p90 ms per stage, limiting stage."""
        with self._lock:
            samples = {stage: np.array(values) for stage, values in self._samples.items()}
            done = list(self._done_at)
            frames, dropped = self.frames, self.dropped
        elapsed = time.monotonic() - self.started
        recent = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0.0
        stages = {stage: {"p50": round(float(np.percentile(v, 50)) * 1000, 2),
                          "p90": round(float(np.percentile(v, 90)) * 1000, 2)}
                  for stage, v in samples.items() if v.size}
        busy = {thread: sum(float(np.median(samples[s])) for s in parts if samples[s].size)
                for thread, parts in THREAD_STAGES.items() if samples[parts[-1]].size}
        return {"frames": frames, "dropped": dropped, "elapsed_s": round(elapsed, 2),
                "fps": round(frames / elapsed, 2) if elapsed > 0 else 0.0, "fps_recent": round(recent, 2),
                "stages_ms": stages, "limited_by": max(busy, key=busy.get) if busy else None,
                "thread_ms": {thread: round(value * 1000, 2) for thread, value in busy.items()},
                **{name: source() for name, source in self.sources.items()}}


def format_stats(snapshot: dict) -> str:
    """One line for stderr."""
    stages = ", ".join(f"{stage} {v['p50']:.1f}/{v['p90']:.1f}" for stage, v in snapshot["stages_ms"].items())
    line = (f"{snapshot['frames']} frames in {snapshot['elapsed_s']:.1f} s, {snapshot['fps']:.1f} FPS "
            f"({snapshot['fps_recent']:.1f} recent), {snapshot['dropped']} dropped")
    if stages:
        line += f"; p50/p90 ms: {stages}"
    if "mqtt" in snapshot:
        mqtt = snapshot["mqtt"]
        line += (f"; mqtt {'connected' if mqtt['connected'] else 'DISCONNECTED'}, {mqtt['published']} published, "
                 f"{mqtt['queued']} queued, {mqtt['dropped']} dropped, {mqtt['reconnects']} reconnects")
    if "snapshots" in snapshot:
        snaps = snapshot["snapshots"]
        line += f"; snapshots {snaps['written']} written, {snaps['dropped']} dropped, {snaps['removed']} removed"
        if snaps.get("failed"):
            line += f", {snaps['failed']} failed ({snaps['error']})"
    limiter = snapshot["limited_by"]
    if limiter:
        ms = snapshot["thread_ms"][limiter]
        line += f"; limited by {limiter} ({ms:.1f} ms a frame, at most {1000 / ms:.1f} FPS)" if ms > 0 \
            else f"; limited by {limiter}"
    return line
