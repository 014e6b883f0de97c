"""Frame sources and the capture thread.

The capture thread reads as fast as the source delivers and keeps only the
newest frame (``FrameSlot``): a model slower than the camera drops frames
instead of falling ever further behind. A video file is the exception when
read at ``fast`` pace: then every frame waits for the detector, so a file
is processed completely and as fast as the pipeline allows.

A live source (camera, stream, Picamera2) that cannot be opened or stops
delivering is reopened with exponential backoff and reported on stderr; a
file ends the loop at its end.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import cv2
import numpy as np

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
MAX_BACKOFF = 30.0  # seconds; a camera unplugged for hours is polled at least this often
PICAMERA2_SIZE = (640, 480)  # SSD models take 300-320 px: more pixels only cost time


@dataclass(frozen=True)
class Source:
    """What ``--source`` names. ``kind``: device (an index or /dev/videoN),
    stream (a URL), picamera2 or file."""

    text: str
    kind: str

    @property
    def live(self) -> bool:
        return self.kind != "file"


@dataclass(frozen=True)
class Frame:
    index: int  # position in the source, counting dropped frames
    timestamp: float  # UNIX time of capture
    image: np.ndarray  # BGR uint8, as OpenCV and Picamera2's RGB888 deliver
    fps: float  # the source's nominal frame rate (for the video writer)
    capture_s: float  # seconds the source took to deliver it


def parse_source(text: str) -> Source:
    """Classifies ``--source``; a file that does not exist is an error now, not a retry."""
    if text == "picamera2":
        return Source(text, "picamera2")
    if text.isdigit() or re.fullmatch(r"/dev/video\d+", text):
        return Source(text, "device")
    if re.match(rf"({'|'.join(STREAM_SCHEMES)})://", text, re.IGNORECASE):
        return Source(text, "stream")
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"{text}: no such video file (sources: a camera index, /dev/videoN, "
                                "a video file, an rtsp:// or http:// URL, or picamera2)")
    return Source(text, "file")


class Reader(Protocol):
    fps: float

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...


class OpenCVReader:
    """cv2.VideoCapture: cameras through the platform's API, files and URLs through FFmpeg."""

    def __init__(self, source: Source):
        if source.kind == "device":
            target = int(source.text) if source.text.isdigit() else source.text
            self._cap = cv2.VideoCapture(target)
            self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the driver's queue is lag too
        else:
            self._cap = cv2.VideoCapture(source.text, cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            self._cap.release()
            raise OSError("OpenCV cannot open it")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else 30.0

    def read(self) -> np.ndarray | None:
        ok, image = self._cap.read()
        return image if ok else None

    def close(self) -> None:
        self._cap.release()


class Picamera2Reader:
    """A Raspberry Pi camera module through Picamera2 (libcamera)."""

    def __init__(self, source: Source):
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise RuntimeError("--source picamera2 needs Picamera2: sudo apt install python3-picamera2 "
                               "(and a venv made with --system-site-packages)") from exc
        camera = None
        try:
            camera = Picamera2()
            # RGB888 is B, G, R in memory: what OpenCV expects.
            camera.configure(camera.create_video_configuration(main={"format": "RGB888", "size": PICAMERA2_SIZE}))
            camera.start()
        except Exception as exc:  # libcamera raises several types for a missing or busy camera
            if camera is not None:
                camera.close()
            raise OSError(f"Picamera2 cannot start the camera ({exc})") from exc
        self._camera = camera
        self.fps = 30.0

    def read(self) -> np.ndarray | None:
        try:
            return self._camera.capture_array("main")
        except Exception:  # a camera that went away; the capture thread reopens it
            return None

    def close(self) -> None:
        self._camera.close()


def open_reader(source: Source) -> Reader:
    return Picamera2Reader(source) if source.kind == "picamera2" else OpenCVReader(source)


def check_video_file(source: Source) -> None:
    """Raises ``OSError`` unless the file ``source`` names gives at least one
    frame: FFmpeg "opens" many files that are not videos (a text file, a
    JPEG renamed .mp4) and then delivers nothing, which would end the loop at
    0 frames as if all were well."""
    try:
        reader = open_reader(source)
    except OSError as exc:
        raise OSError(f"{source.text}: cannot read this video ({exc})") from exc
    try:
        if reader.read() is None:
            raise OSError(f"{source.text}: not a video OpenCV can decode (no frame in it)")
    finally:
        reader.close()


class FrameSlot:
    """Hand-off from capture to detection holding one frame. ``put``
    replaces an untaken frame (counted by ``on_drop``) or, with
    ``wait=True``, blocks until it is taken."""

    def __init__(self, on_drop: Callable[[], None]):
        self._frame: Frame | None = None
        self._closed = False
        self._cond = threading.Condition()
        self._on_drop = on_drop

    def put(self, frame: Frame, wait: bool = False) -> None:
        with self._cond:
            if wait:
                self._cond.wait_for(lambda: self._frame is None or self._closed)
            if self._closed:
                return
            if self._frame is not None:
                self._on_drop()
            self._frame = frame
            self._cond.notify_all()

    def get(self) -> Frame | None:
        """The newest frame; None once closed and empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._closed)
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Capture(threading.Thread):
    """Reads ``source`` into ``slot`` until the file ends, ``stop``,
    or a live source has failed ``max_retries`` times in a row (then
    ``error`` says why). ``pace``: for files, ``realtime`` (the file's frame
    rate; frames the pipeline cannot take are dropped, as from a camera) or
    ``fast`` (every frame, as fast as the pipeline takes them)."""

    def __init__(self, source: Source, slot: FrameSlot, pace: str = "realtime",
                 max_retries: int | None = None, retry_delay: float = 0.5):
        super().__init__(name="capture", daemon=True)
        if pace not in ("realtime", "fast"):
            raise ValueError(f"file pace {pace!r}, expected realtime or fast")
        self.source, self.slot = source, slot
        self._stopping = threading.Event()
        self.lossless = pace == "fast" and not source.live
        self.max_retries, self.retry_delay = max_retries, retry_delay
        self.error: BaseException | None = None
        self._failures = 0  # failed attempts since the last frame

    def stop(self) -> None:
        """Stops reading. The slot closes now, so detection need not wait
        for a read that blocks (a stalled stream); safe in a signal handler."""
        self._stopping.set()
        self.slot.close()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # the pipeline reports it and stops
            self.error = exc
        finally:
            self.slot.close()

    def _run(self) -> None:
        index = 0
        while not self._stopping.is_set():
            try:
                reader = open_reader(self.source)
            except OSError as exc:
                if not self.source.live:
                    raise OSError(f"{self.source.text}: cannot read this video ({exc})") from exc
                if not self._retry(f"cannot open ({exc})"):
                    return
                continue
            start = index
            index = self._stream(reader, index)
            if not self.source.live and index == start and not self._stopping.is_set():
                raise OSError(f"{self.source.text}: not a video OpenCV can decode (no frame in it)")
            if not self.source.live or self._stopping.is_set() or not self._retry("lost (no frame)"):
                return

    def _retry(self, reason: str) -> bool:
        """Waits before the next attempt; False when the retries are used up or on stop."""
        self._failures += 1
        if self.max_retries is not None and self._failures > self.max_retries:
            self.error = RuntimeError(f"source {self.source.text}: {reason}; gave up after "
                                      f"{_retries(self.max_retries)} (--max-retries)")
            return False
        delay = min(self.retry_delay * 2 ** (self._failures - 1), MAX_BACKOFF)
        limit = f"/{self.max_retries}" if self.max_retries is not None else ""
        log.warning(f"source {self.source.text}: {reason}; retry {self._failures}{limit} in {delay:g} s")
        return not self._stopping.wait(delay)

    def _stream(self, reader: Reader, index: int) -> int:
        """Frames from an open reader until it fails, ends or ``stop``; returns the next index."""
        period = 1.0 / reader.fps
        started, paced = time.monotonic(), 0
        try:
            while not self._stopping.is_set():
                begin = time.monotonic()
                image = reader.read()
                if image is None:
                    return index
                if self._failures:
                    log.info(f"source {self.source.text}: back after {_retries(self._failures)}")
                    self._failures = 0
                if not self.source.live and not self.lossless:  # frame k is due at k periods from the start
                    wait = started + paced * period - time.monotonic()
                    paced += 1
                    if wait < -1.0:  # fell far behind (a stall): restart the schedule rather than rush
                        started, paced = time.monotonic(), 1
                    elif wait > 0:
                        self._stopping.wait(wait)
                self.slot.put(Frame(index, time.time(), image, reader.fps, time.monotonic() - begin),
                              wait=self.lossless)
                index += 1
            return index
        finally:
            reader.close()


def _retries(count: int) -> str:
    return f"{count} {'retry' if count == 1 else 'retries'}"

