"""A JPEG per event (and optionally a short clip of the seconds before it),
written off the loop's threads, in a folder kept under a size cap.

The events of one frame share one file, named by the frame's time and
index (``20261130-081502.250-f000123.jpg``, ``...mp4``), and its path goes
into each event record (``snapshot``, ``clip``). Files are written under a
temporary name and renamed, so a name that appears is complete. When the
files this writer made exceed ``max_bytes``, the oldest are removed first;
nothing else in the folder is touched.

The clip comes from a ring buffer of the last ``clip_seconds`` of frames
(references to the captured frames, not copies, so it costs memory but no
time per frame). Writing happens in a thread of its own behind a short
queue: when the disk is slower than the events, the oldest pending
snapshot is dropped and counted rather than slowing the loop.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ssdkit.fileio import check_writable_folder

NAME = re.compile(r"^\d{8}-\d{6}\.\d{3}-f\d+(-\d+)?\.(jpg|mp4)$")  # the files this writer owns
JPEG_QUALITY = 85
PENDING = 8  # snapshots waiting for the disk


def parse_size(text: str) -> int:
    """``500MB``, ``2G``, ``750k``, ``1000000`` -> bytes (powers of 1024 for the suffixes)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*", text)
    if not found:
        raise ValueError(f"--max-disk {text!r}: expected a size such as 500MB, 2GB or 800k")
    value = float(found.group(1)) * 1024 ** " kmgt".index(found.group(2).lower() or " ")
    if value < 1:
        raise ValueError(f"--max-disk {text!r}: expected more than 0 bytes")
    return int(value)


class Snapshots:
    """Per-event files in ``folder``.

    Args:
      folder: where the files go (created if needed; checked writable now).
      max_bytes: the cap on the files this writer owns in the folder, old runs' included.
      clip_seconds: length of the clip before each event (0: JPEG only).
      draw: ``draw(image, item) -> annotated copy``, run in the writer thread;
        ``item`` is what ``frame`` was given.
    """

    def __init__(self, folder: str | os.PathLike, max_bytes: int, clip_seconds: float = 0.0,
                 draw: Callable[[np.ndarray, object], np.ndarray] | None = None):
        self.folder = Path(folder)
        check_writable_folder(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.clip_seconds = max_bytes, clip_seconds
        self._draw = draw or (lambda image, item: image)
        owned = sorted(p for p in self.folder.iterdir() if NAME.match(p.name) and p.is_file())
        self._files: deque[tuple[Path, int]] = deque((p, p.stat().st_size) for p in owned)
        self._bytes = sum(size for _, size in self._files)
        self._ring: deque = deque(maxlen=1)
        self._jobs: deque = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._last_frame: int | None = None
        self._last_paths: dict[str, str] = {}
        self.counts = {"written": 0, "dropped": 0, "failed": 0, "removed": 0}
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="snapshots", daemon=True)
        self._thread.start()
        self._trim()

    def frame(self, index: int, timestamp: float, fps: float, image: np.ndarray, item: object) -> None:
        """Every frame, in order (keeps the clip's ring buffer)."""
        if self.clip_seconds > 0:
            length = max(1, math.ceil(self.clip_seconds * fps))
            if self._ring.maxlen != length:
                self._ring = deque(self._ring, maxlen=length)
            self._ring.append((image, item))
        self._current = (index, timestamp, fps, image, item)

    def snapshot(self) -> dict[str, str]:
        """Paths for an event in the current frame: {"snapshot": ..., "clip": ...}; one
        set of files per frame however many events it has."""
        index, timestamp, fps, image, item = self._current
        if self._last_frame == index:
            return dict(self._last_paths)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(timestamp)) + f".{int(timestamp * 1000) % 1000:03d}"
        stem = f"{stamp}-f{index:06d}"
        suffix = 0
        while (self.folder / f"{stem}.jpg").exists() or (self.folder / f"{stem}.mp4").exists():
            suffix += 1  # never overwrite (a clock set back, a second run in the same folder)
            stem = f"{stamp}-f{index:06d}-{suffix}"
        paths = {"snapshot": str(self.folder / f"{stem}.jpg")}
        clip = list(self._ring) if self.clip_seconds > 0 else None
        if clip:
            paths["clip"] = str(self.folder / f"{stem}.mp4")
        with self._cond:
            if len(self._jobs) >= PENDING:
                self._jobs.popleft()
                self.counts["dropped"] += 1
            self._jobs.append((paths, image, item, clip, fps))
            self._cond.notify()
        self._last_frame, self._last_paths = index, paths
        return dict(paths)

    def stats(self) -> dict:
        with self._cond:
            return {**self.counts, "pending": len(self._jobs), "bytes": self._bytes, "error": self.error}

    def close(self) -> None:
        """Writes what is pending, then stops."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closing:
                    self._cond.wait()
                if not self._jobs:
                    return
                paths, image, item, clip, fps = self._jobs.popleft()
            try:
                self._write_jpeg(Path(paths["snapshot"]), self._draw(image, item))
                if clip:
                    self._write_clip(Path(paths["clip"]), [self._draw(i, it) for i, it in clip], fps)
            except OSError as exc:  # a full or vanished disk must not end the loop; the stats say so
                with self._cond:
                    self.counts["failed"] += 1
                    self.error = str(exc)
            self._trim()

    def _write_jpeg(self, path: Path, image: np.ndarray) -> None:
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OSError(f"{path}: OpenCV cannot encode the snapshot")
        tmp = self._temporary(path)
        tmp.write_bytes(jpeg.tobytes())
        self._finish(tmp, path)

    def _write_clip(self, path: Path, images: list[np.ndarray], fps: float) -> None:
        tmp = self._temporary(path)
        size = (images[-1].shape[1], images[-1].shape[0])
        writer = cv2.VideoWriter(str(tmp), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not writer.isOpened():
            tmp.unlink(missing_ok=True)
            raise OSError(f"{path}: OpenCV cannot write an mp4v clip (is this OpenCV built with FFmpeg?)")
        for image in images:
            writer.write(image if (image.shape[1], image.shape[0]) == size else cv2.resize(image, size))
        writer.release()
        self._finish(tmp, path)

    def _temporary(self, path: Path) -> Path:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=self.folder)
        os.close(fd)
        return Path(name)

    def _finish(self, tmp: Path, path: Path) -> None:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
        size = path.stat().st_size
        with self._cond:
            self._files.append((path, size))
            self._bytes += size
            self.counts["written"] += 1

    def _trim(self) -> None:
        """Removes the oldest owned files until the folder is under the cap (the newest always stays)."""
        while True:
            with self._cond:
                if self._bytes <= self.max_bytes or len(self._files) <= 1:
                    return
                path, size = self._files.popleft()
                self._bytes -= size
                self.counts["removed"] += 1
            path.unlink(missing_ok=True)
