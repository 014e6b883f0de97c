"""`ssdkit camera` on real video files written by OpenCV, over real HTTP and real signals.

The soak test (thousands of frames, memory must stay flat) runs with
``make soak`` (SSDKIT_SOAK=1); everything else is quick.
"""
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from ssdkit.cli import main  # noqa: E402
from ssdkit.runtime.camera.capture import Frame, FrameSlot  # noqa: E402
from ssdkit.runtime.camera.mjpeg import BOUNDARY, MjpegServer  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from camera_process import Camera  # noqa: E402

SIZE = (64, 48)  # width, height
FPS = 20.0
STAGES = {"capture", "preprocess", "inference", "postprocess", "output", "latency"}


def write_clip(path: Path, frames: int, seed: int = 0) -> Path:
    """A rectangle moving over a noisy background, MJPG in AVI (every OpenCV with FFmpeg reads it)."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 80, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    assert writer.isOpened()
    for i in range(frames):
        image = background.copy()
        x = i % (SIZE[0] - 16)
        cv2.rectangle(image, (x, 10), (x + 16, 34), (0, 200, 255), -1)
        writer.write(image)
    writer.release()
    return path


def count_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"{path} does not open"
    frames = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        assert image.shape == (SIZE[1], SIZE[0], 3)
        frames += 1
    capture.release()
    return frames


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def closed_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def model(tiny_tflite):
    return tiny_tflite(quant="fp32", score_threshold=0.0)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.avi", 40)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """30 s at the file's pace: the loop is still running when a test stops it."""
    return write_clip(tmp_path_factory.mktemp("clip") / "long.avi", 600, seed=1)


def jsonl_lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def test_loop_on_a_video_file_end_to_end(model, clip, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["camera", str(model), "--source", str(clip), "--file-pace", "fast", "--threshold", "0",
                 "--video", str(out / "annotated.mp4"), "--jsonl", str(out / "detections.jsonl"),
                 "--stats-every", "0"])
    stderr = capsys.readouterr().err
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["annotated.mp4", "detections.jsonl"]  # no temporary left
    records = read_jsonl(out / "detections.jsonl")
    assert [r["frame"] for r in records] == list(range(40))  # fast pace: every frame, none dropped
    timestamps = [r["timestamp"] for r in records]
    assert timestamps == sorted(timestamps) and abs(timestamps[0] - time.time()) < 600
    for record in records:
        assert set(record) == {"frame", "timestamp", "detections", "timings_ms"}
        assert set(record["timings_ms"]) == STAGES
        assert record["detections"], "threshold 0 keeps every detection"
        for d in record["detections"]:
            assert set(d) == {"box", "label", "class_id", "score"} and d["label"] in ("a", "b")
            ymin, xmin, ymax, xmax = d["box"]
            assert 0 <= ymin <= ymax <= SIZE[1] and 0 <= xmin <= xmax <= SIZE[0]
    assert count_frames(out / "annotated.mp4") == 40
    assert re.search(r"done: 40 frames .* 0 dropped; p50/p90 ms: capture .*limited by (capture|detect|output)", stderr)


def test_max_frames_stops_early(model, clip, tmp_path, capsys):
    video = tmp_path / "annotated.avi"
    code = main(["camera", str(model), "--source", str(clip), "--file-pace", "fast", "--max-frames", "7",
                 "--video", str(video), "--jsonl", str(tmp_path / "d.jsonl"), "--stats-every", "0"])
    assert code == 0, capsys.readouterr().err
    assert [r["frame"] for r in read_jsonl(tmp_path / "d.jsonl")] == list(range(7))
    assert count_frames(video) == 7


def test_newest_frame_slot_drops_stale_frames():
    dropped = []
    slot = FrameSlot(lambda: dropped.append(1))
    image = np.zeros((2, 2, 3), np.uint8)
    for i in range(3):
        slot.put(Frame(i, 0.0, image, FPS, 0.0))
    assert slot.get().index == 2 and len(dropped) == 2
    slot.close()
    assert slot.get() is None


def test_output_thread_waits_for_the_model_to_run_not_for_long():
    """The output thread's Python starts while the model runs (the GIL is free then), not while the
    detect thread runs its own Python; and never waits longer than the bound."""
    from ssdkit.runtime.camera.pipeline import _Turns

    turns = _Turns()
    began = time.perf_counter()
    turns.wait(0.5)
    assert time.perf_counter() - began < 0.1  # detection idle: at once
    turns.detector(True)
    began = time.perf_counter()
    turns.wait(0.2)
    assert 0.19 <= time.perf_counter() - began < 1.0  # the detector never reached its model: the bound
    released = []
    waiter = threading.Thread(target=lambda: (turns.wait(5.0), released.append(time.perf_counter())))
    waiter.start()
    time.sleep(0.2)
    assert not released
    ran = time.perf_counter()
    turns.model_runs()
    waiter.join(2.0)
    assert released and released[0] - ran < 1.0


def test_on_inference_is_called_once_just_before_the_model_runs(model):
    """``Detector.detect``'s hook comes after preprocessing and before inference, once per run."""
    from ssdkit.runtime.detector import Detector

    with Detector(model) as detector:
        image = np.zeros((200, 240, 3), np.uint8)
        calls = []
        run = detector.backend.run
        detector.backend.run = lambda tensor: (calls.append("run"), run(tensor))[1]
        detector.detect(image, on_inference=lambda: calls.append("hook"))
        assert calls == ["hook", "run"]
        calls.clear()
        assert len(detector.detect_batch([image, image], on_inference=lambda: calls.append("hook"))) == 2
        assert calls == ["hook", "run"] * (2 if not detector.batches else 1)


def test_mjpeg_preview_over_http(model, long_clip, tmp_path):
    camera = Camera(str(model), "--source", str(long_clip), "--serve", "127.0.0.1:0", cwd=tmp_path)
    try:
        url = camera.line(r"serving (http://127\.0\.0\.1:\d+/)").group(1)
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        assert '<img src="/stream.mjpg"' in page
        with urllib.request.urlopen(url + "stream.mjpg", timeout=10) as stream:
            assert stream.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
            assert stream.readline() == f"--{BOUNDARY}\r\n".encode()
            headers = {}
            while (line := stream.readline()) != b"\r\n":
                key, value = line.decode().split(":", 1)
                headers[key.lower()] = value.strip()
            assert headers["content-type"] == "image/jpeg"
            jpeg = stream.read(int(headers["content-length"]))
            assert jpeg[:3] == b"\xff\xd8\xff" and jpeg[-2:] == b"\xff\xd9"
            assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (SIZE[1], SIZE[0], 3)
            assert stream.read(2) == b"\r\n" and stream.readline() == f"--{BOUNDARY}\r\n".encode()  # the next frame
        stats = json.loads(urllib.request.urlopen(url + "stats.json", timeout=10).read())
        assert stats["frames"] > 0 and STAGES <= set(stats["stages_ms"]) and stats["limited_by"]
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(url + "nothing", timeout=10)
    finally:
        code = camera.terminate()
    assert code == 0, camera.stderr


def test_sigterm_finishes_the_frame_and_closes_outputs(model, long_clip, tmp_path):
    video, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    camera = Camera(str(model), "--source", str(long_clip), "--video", str(video), "--jsonl", str(jsonl),
                    "--stats-every", "0.5", cwd=tmp_path)
    camera.wait_for(lambda: jsonl_lines(jsonl) >= 10, what="10 frames")
    assert not video.exists()  # still a temporary until closed
    assert camera.terminate() == 0, camera.stderr
    assert "SIGTERM: stopping after the current frame" in camera.stderr
    records = read_jsonl(jsonl)  # every line complete
    frames = [r["frame"] for r in records]
    assert frames == sorted(frames) and len(records) < 600
    assert count_frames(video) == len(records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "out.mp4"]
    assert re.search(rf"done: {len(records)} frames", camera.stderr)


def test_source_that_never_opens_is_retried_then_given_up(model, tmp_path, capsys):
    source = f"http://127.0.0.1:{closed_port()}/stream.mjpg"
    code = main(["camera", str(model), "--source", source, "--max-retries", "2", "--retry-delay", "0.05",
                 "--jsonl", str(tmp_path / "d.jsonl")])
    stderr = capsys.readouterr().err
    assert code == 2
    assert f"source {source}: cannot open (OpenCV cannot open it); retry 1/2 in 0.05 s" in stderr
    assert "retry 2/2 in 0.1 s" in stderr  # the delay doubles
    assert f"error: source {source}: cannot open (OpenCV cannot open it); gave up after 2 retries" in stderr
    assert (tmp_path / "d.jsonl").read_text() == ""  # closed cleanly, no frames


def test_stream_that_disappears_is_retried_until_it_is_back(model, clip, tmp_path):
    """The camera is a real MJPEG stream served from this process; it goes away and comes back."""
    capture = cv2.VideoCapture(str(clip))
    jpegs = []
    while (frame := capture.read())[0]:
        jpegs.append(cv2.imencode(".jpg", frame[1])[1].tobytes())

    def serve(port: int) -> tuple[MjpegServer, threading.Event]:
        server, stop = MjpegServer("127.0.0.1", port), threading.Event()

        def feed():
            i = 0
            while not stop.wait(1 / FPS):
                server.publish(jpegs[i % len(jpegs)])
                i += 1

        threading.Thread(target=feed, daemon=True).start()
        return server, stop

    server, feeding = serve(0)
    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    jsonl = tmp_path / "d.jsonl"
    camera = Camera(str(model), "--source", f"http://127.0.0.1:{port}/stream.mjpg", "--jsonl", str(jsonl),
                    "--retry-delay", "0.2", "--stats-every", "0", cwd=tmp_path)
    try:
        camera.wait_for(lambda: jsonl_lines(jsonl) >= 5, what="frames from the stream")
        feeding.set()
        server.close()
        camera.line(r"lost \(no frame\); retry 1 in 0\.2 s")
        camera.line(r"cannot open \(OpenCV cannot open it\); retry 2 in 0\.4 s")
        before = jsonl_lines(jsonl)
        server, feeding = serve(port)
        camera.line(r"back after \d+ retries")
        camera.wait_for(lambda: jsonl_lines(jsonl) >= before + 5, what="frames after the stream came back")
        feeding.set()  # connected but silent: the capture thread blocks in read()
        time.sleep(0.5)
    finally:
        began = time.monotonic()
        code = camera.terminate()
        feeding.set()
        server.close()
    assert code == 0, camera.stderr
    assert time.monotonic() - began < 10  # a stalled read does not hold up the stop
    frames = [r["frame"] for r in read_jsonl(jsonl)]
    assert frames == sorted(frames)  # indices keep counting across the reconnection


@pytest.mark.parametrize("args, message", [
    (["--source", "missing.mp4"], "missing.mp4: no such video file"),
    (["--source", "{clip}", "--video", "out.gif"], "--video out.gif: unsupported container .gif"),
    (["--source", "{clip}", "--serve", "localhost:http"], "--serve 'localhost:http': expected HOST:PORT"),
])
def test_bad_arguments_are_one_line_errors(model, clip, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    code = main(["camera", str(model), *[a.format(clip=clip) for a in args]])
    assert code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"", b"this is a text file, not a video\n" * 50, b"\xff\xd8\xff\xe0" + bytes(500)])
def test_a_source_that_is_not_a_video_is_exit_2_with_one_line(model, tmp_path, capsys, content):
    """Not "0 frames" and exit 0: FFmpeg opens such files and delivers nothing."""
    fake = tmp_path / "clip.mp4"
    fake.write_bytes(content)
    jsonl = tmp_path / "out.jsonl"
    assert main(["camera", str(model), "--source", str(fake), "--jsonl", str(jsonl), "--file-pace", "fast"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ssdkit camera: error: {fake}: ") and "video" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no output started


@pytest.mark.parametrize("option", ["--video", "--jsonl"])
def test_an_output_that_is_the_source_is_refused(model, clip, tmp_path, capsys, option):
    source = tmp_path / "clip.avi"
    source.write_bytes(clip.read_bytes())
    assert main(["camera", str(model), "--source", str(source), option, str(source)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"ssdkit camera: error: {option} {source} is the input {source}: it would be overwritten; write the output elsewhere")
    assert source.read_bytes() == clip.read_bytes() and sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]


def test_window_without_gui_support_says_what_to_do(model, clip, capsys):
    if not re.search(r"^\s*GUI:\s*NONE", cv2.getBuildInformation(), re.MULTILINE):
        pytest.skip("this OpenCV has GUI support")
    assert main(["camera", str(model), "--source", str(clip), "--window"]) == 2
    assert "--window: this OpenCV has no GUI support" in capsys.readouterr().err


def test_missing_opencv_names_the_extra(model, clip, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cv2", None)  # what `import cv2` meets without the package
    assert main(["camera", str(model), "--source", str(clip)]) == 2
    assert "pip install 'ssdkit[camera]'" in capsys.readouterr().err


def rss_mb(pid: int) -> float | None:
    """Resident memory of a running process (None once it has exited)."""
    try:
        found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None
    return int(found.group(1)) / 1024 if found else None


@pytest.mark.skipif(not os.environ.get("SSDKIT_SOAK"), reason="soak test: run with make soak")
def test_soak_memory_stays_flat(model, tmp_path):
    frames = 4000
    clip = write_clip(tmp_path / "soak.avi", frames, seed=2)
    jsonl = tmp_path / "soak.jsonl"
    camera = Camera(str(model), "--source", str(clip), "--file-pace", "fast", "--video", str(tmp_path / "soak.mp4"),
                    "--jsonl", str(jsonl), "--serve", "127.0.0.1:0", "--stats-every", "5", cwd=tmp_path)
    url = camera.line(r"serving (http://127\.0\.0\.1:\d+/)").group(1)
    received = []

    def watch():  # a preview client for the whole run, so JPEG encoding and serving are soaked too
        try:
            with urllib.request.urlopen(url + "stream.mjpg", timeout=30) as stream:
                while chunk := stream.read(65536):
                    received.append(len(chunk))
        except OSError:
            pass

    threading.Thread(target=watch, daemon=True).start()
    camera.wait_for(lambda: jsonl_lines(jsonl) >= 500, timeout=300, what="warm-up frames")
    baseline = peak = rss_mb(camera.process.pid)
    while (rss := rss_mb(camera.process.pid)) is not None and camera.process.poll() is None:
        peak = max(peak, rss)
        time.sleep(0.2)
    assert camera.process.wait(timeout=60) == 0, camera.stderr
    assert jsonl_lines(jsonl) == frames and count_frames(tmp_path / "soak.mp4") == frames
    assert sum(received) > 0
    print(f"RSS after 500 frames {baseline:.1f} MB, peak over {frames} frames {peak:.1f} MB")
    assert peak - baseline < 10, f"RSS grew from {baseline:.1f} MB to {peak:.1f} MB"
