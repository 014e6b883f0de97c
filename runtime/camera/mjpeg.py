"""A live preview over HTTP for headless devices: ``/`` is a small page,
``/stream.mjpg`` a multipart/x-mixed-replace JPEG stream (what browsers,
VLC and OpenCV play), ``/stats.json`` the loop's running statistics.

Standard library only. Each client gets the newest frame when it is ready
for one, so a slow client skips frames rather than queueing them.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

BOUNDARY = "ssdkitframe"
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ssdkit camera</title>
<style>body{font-family:sans-serif;margin:1em}img{max-width:100%}pre{color:#444}</style></head>
<body><img src="/stream.mjpg" alt="camera"><pre id="stats"></pre>
<script>
setInterval(async () => {
  try { document.getElementById("stats").textContent = JSON.stringify(await (await fetch("/stats.json")).json(), null, 1); }
  catch (e) {}
}, 2000);
</script></body></html>
"""


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``PORT`` (host 127.0.0.1: only this machine, unless asked)."""
    host, _, port = text.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--serve {text!r}: expected HOST:PORT or PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


class MjpegServer:
    """Serves published JPEG frames until ``close``; ``stats`` gives ``/stats.json``."""

    def __init__(self, host: str, port: int, stats: Callable[[], dict] = dict):
        self._stats = stats
        self._jpeg = b""
        self._sequence = 0
        self._clients = 0
        self._closed = False
        self._cond = threading.Condition()
        try:
            self._server = ThreadingHTTPServer((host, port), _handler(self))
        except OSError as exc:
            raise OSError(f"--serve {host}:{port}: cannot listen there ({exc.strerror or exc})") from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="mjpeg", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def clients(self) -> int:
        """Open streams: without any, callers can skip encoding JPEGs."""
        return self._clients

    def publish(self, jpeg: bytes) -> None:
        with self._cond:
            self._jpeg, self._sequence = jpeg, self._sequence + 1
            self._cond.notify_all()

    def next_frame(self, seen: int, timeout: float = 1.0) -> tuple[bytes | None, int]:
        """A frame newer than sequence number ``seen`` (None on timeout or close) and its number."""
        with self._cond:
            self._cond.wait_for(lambda: self._sequence > seen or self._closed, timeout)
            if self._closed or self._sequence <= seen:
                return None, seen
            return self._jpeg, self._sequence

    def stats(self) -> dict:
        return self._stats()

    @property
    def closed(self) -> bool:
        return self._closed

    def client(self, delta: int) -> None:
        with self._cond:
            self._clients += delta

    def close(self) -> None:
        """Stops listening and ends every open stream."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _handler(hub: MjpegServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/":
                self._send(PAGE.encode(), "text/html; charset=utf-8")
            elif path == "/stats.json":
                self._send(json.dumps(hub.stats()).encode(), "application/json")
            elif path == "/stream.mjpg":
                self._stream()
            else:
                self.send_error(404, "not found: try /, /stream.mjpg or /stats.json")

        def _send(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            hub.client(+1)
            try:
                seen = 0
                while not hub.closed:
                    jpeg, seen = hub.next_frame(seen)
                    if jpeg is None:
                        continue
                    self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                                     .encode() + jpeg + b"\r\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away
            finally:
                hub.client(-1)

        def log_message(self, format: str, *args) -> None:
            pass  # one line per request would flood a long run's log

    return Handler
