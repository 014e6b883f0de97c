"""Where the loop's results go: an annotated video, JSON Lines, the MJPEG
preview and an OpenCV window, in any combination (``Outputs``); with
tracking on, also events: MQTT (``mqtt.py``) and snapshots (``snapshots.py``).

The video is written under a temporary name beside the target and renamed
when closed, so the target is always a finished, playable file. The JSON
Lines file is written in place and flushed every frame, so ``tail -f``
follows it and a killed loop leaves every line but the last complete.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ssdkit.fileio import check_writable_folder

from ..detector import Detection
from ..draw import annotate
from .capture import Frame
from .mjpeg import MjpegServer
from .mqtt import MqttPublisher
from .scene import Scene
from .snapshots import Snapshots

# Codec per container: both are in every OpenCV build with FFmpeg and play everywhere.
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}
JPEG_QUALITY = 80


@dataclass(frozen=True)
class Result:
    """One frame through detection, on its way to the outputs."""

    frame: Frame
    detections: list[Detection]
    seconds: dict[str, float]  # capture, preprocess, inference, postprocess
    track_ids: tuple[int | None, ...] | None = None  # per detection, with tracking on
    events: tuple[dict, ...] = ()
    states: dict | None = None  # zone and line counts after this frame (``Scene.states``)
    low: tuple[Detection, ...] = ()  # below their display threshold, for the tracker only


class VideoOutput:
    """Annotated frames to a video file, opened at the first frame (its size
    and the source's frame rate fix the stream's)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.suffix.lower() not in FOURCC:
            raise ValueError(f"--video {self.path}: unsupported container {self.path.suffix or '(none)'}; "
                             f"use one of {', '.join(FOURCC)}")
        check_writable_folder(self.path.parent)
        self._writer: cv2.VideoWriter | None = None
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None

    def write(self, image: np.ndarray, fps: float) -> None:
        if self._writer is None:
            self._open((image.shape[1], image.shape[0]), fps)
        if (image.shape[1], image.shape[0]) != self._size:  # a camera reconnected at another size
            image = cv2.resize(image, self._size)
        self._writer.write(image)

    def _open(self, size: tuple[int, int], fps: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The temporary name keeps the extension: OpenCV picks the container by it.
        fd, name = tempfile.mkstemp(prefix=f".{self.path.stem}.tmp-", suffix=self.path.suffix, dir=self.path.parent)
        os.close(fd)
        self._tmp, self._size = Path(name), size
        fourcc = FOURCC[self.path.suffix.lower()]
        self._writer = cv2.VideoWriter(name, cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if not self._writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            self._writer = None
            raise OSError(f"--video {self.path}: OpenCV cannot write {fourcc} video at {size[0]}x{size[1]} "
                          f"(is this OpenCV built with FFmpeg?)")

    def close(self) -> None:
        """Finishes the file (an MP4's index is written now) and renames it onto the target."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        os.chmod(self._tmp, 0o666 & ~_umask())
        os.replace(self._tmp, self.path)


class JsonlOutput:
    """One JSON object per frame: frame index, timestamp, detections, per-stage milliseconds."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        check_writable_folder(self.path.parent)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", encoding="utf-8")

    def write(self, line: dict) -> None:
        """One frame's ``record``."""
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def record(result: Result, seconds: dict[str, float]) -> dict:
    """The JSON Lines record of one frame (the same detection fields as ``ssdkit detect``;
    with tracking on, each detection's ``track_id`` and the frame's ``events``)."""
    if result.track_ids is None:
        detections = [d.to_dict() for d in result.detections]
    else:
        detections = [d.to_dict(track_id=t) for d, t in zip(result.detections, result.track_ids)]
    line = {"frame": result.frame.index, "timestamp": round(result.frame.timestamp, 4), "detections": detections}
    if result.track_ids is not None:
        line["events"] = list(result.events)
    line["timings_ms"] = {stage: round(value * 1000, 2) for stage, value in seconds.items()}
    return line


class WindowOutput:
    """An OpenCV window; q or Esc (or closing it) asks the loop to stop."""

    TITLE = "ssdkit camera"

    def __init__(self, on_quit: Callable[[], None]):
        gui = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
        if gui and gui.group(1).upper() == "NONE":
            raise RuntimeError("--window: this OpenCV has no GUI support (opencv-python-headless); "
                               "install opencv-python, or use --serve to watch in a browser")
        self._on_quit = on_quit
        self._shown = False

    def show(self, image: np.ndarray) -> None:
        cv2.imshow(self.TITLE, image)
        self._shown = True
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27) or cv2.getWindowProperty(self.TITLE, cv2.WND_PROP_VISIBLE) < 1:
            self._on_quit()

    def close(self) -> None:
        if self._shown:
            cv2.destroyWindow(self.TITLE)


class Outputs:
    """Every requested output; frames are annotated (and JPEG-encoded) only when something shows them.

    With a ``scene`` (tracking), ``track`` gives each result its track ids and
    events before the others see it; ``snapshots`` and ``mqtt`` take the events.
    """

    def __init__(self, video: VideoOutput | None = None, jsonl: JsonlOutput | None = None,
                 server: MjpegServer | None = None, window: WindowOutput | None = None,
                 scene: Scene | None = None, mqtt: MqttPublisher | None = None, snapshots: Snapshots | None = None):
        self.video, self.jsonl, self.server, self.window = video, jsonl, server, window
        self.scene, self.mqtt, self.snapshots = scene, mqtt, snapshots

    def track(self, result: Result) -> Result:
        """Track ids, events (with their snapshot paths) and zone counts for ``result``."""
        if self.scene is None:
            return result
        track_ids, events = self.scene.update(result.frame, result.detections, result.low)
        result = replace(result, track_ids=track_ids, events=tuple(events), states=self.scene.states())
        if self.snapshots is not None:
            frame = result.frame
            self.snapshots.frame(frame.index, frame.timestamp, frame.fps, frame.image, result)
            for event in events:
                event.update(self.snapshots.snapshot())
        return result

    def draw(self, image: np.ndarray, result: Result) -> np.ndarray:
        """The BGR frame with boxes and labels and, with tracking on, each box's
        track id ("#7 person 0.91"), the zones with their counts and the lines
        with theirs: one look (``runtime/draw.py``) on the video, the preview,
        the window and the snapshots."""
        if self.scene is None or result.track_ids is None:
            return annotate(image, result.detections, channels="bgr")
        captions = [f"#{t} {d.label} {d.score:.2f}" if t is not None else f"{d.label} {d.score:.2f}"
                    for d, t in zip(result.detections, result.track_ids)]
        return annotate(image, result.detections, self.scene.shapes(result.states), captions=captions,
                        channels="bgr")

    def show(self, result: Result) -> None:
        """The annotated frame to the video, the stream (if anyone watches) and the window."""
        streaming = self.server is not None and self.server.clients > 0
        if not (self.video or self.window or streaming):
            return
        image = self.draw(result.frame.image, result)
        if self.video:
            self.video.write(image, result.frame.fps)
        if streaming:
            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if ok:
                self.server.publish(jpeg.tobytes())
        if self.window:
            self.window.show(image)

    def log(self, result: Result, seconds: dict[str, float]) -> None:
        """The frame's JSON line, with every stage's time; events, counts and the summary to MQTT.
        The frame's record is built once, and only if the JSON Lines file or a due summary takes it."""
        line = record(result, seconds) if self.jsonl else None
        if self.jsonl:
            self.jsonl.write(line)
        if self.mqtt:
            for event in result.events:
                self.mqtt.event(event)
            if result.states is not None:
                self.mqtt.states(result.states)
            now = time.monotonic()
            if self.mqtt.summary_due(now):
                self.mqtt.summary(line or record(result, seconds), now)

    def close(self) -> None:
        """Closes everything, even if one of them fails; the first failure is raised."""
        error = None
        for output in (self.video, self.jsonl, self.window, self.server, self.snapshots, self.mqtt):
            if output is None:
                continue
            try:
                output.close()
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
