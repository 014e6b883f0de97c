"""``ssdkit camera`` in a subprocess for the camera tests (test_camera.py, test_camera_events.py)."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


class Camera:
    """``ssdkit camera`` in a subprocess, its stderr collected line by line.
    ``timeout``: seconds each wait (and the exit after SIGTERM) may take."""

    def __init__(self, *args: str, cwd: Path, timeout: float = 30.0):
        self.timeout = timeout
        self.process = subprocess.Popen([sys.executable, "-m", "ssdkit.cli", "camera", *args], cwd=cwd,
                                        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stderr), daemon=True)
        self._reader.start()

    def wait_for(self, condition, timeout: float | None = None, what: str = "") -> None:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not condition():
            assert self.process.poll() is None, f"exited early ({what}):\n{self.stderr}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.stderr}"
            time.sleep(0.05)

    def line(self, pattern: str) -> re.Match:
        self.wait_for(lambda: any(re.search(pattern, line) for line in self.lines), what=pattern)
        return next(m for line in self.lines if (m := re.search(pattern, line)))

    def terminate(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=self.timeout)
        self._reader.join(timeout=self.timeout)  # the last lines, however loaded the machine
        return code

    @property
    def stderr(self) -> str:
        return "".join(self.lines)
