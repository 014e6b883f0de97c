"""The loop's threads: capture -> detection -> output.

Detection and output run in their own threads next to the capture thread,
so while the detector works on frame n the outputs write frame n-1 and the
camera delivers frame n+1: throughput approaches 1 / (slowest stage), and
``LoopStats`` says which stage that is. The detector's interpreter and
OpenCV release the GIL while they work, so the stages do overlap; the
output thread's Python (tracking, zones, events) waits for the model to
run before it starts (``_Turns``), so it overlaps inference rather than
the detect thread's own Python.

Stopping (a signal, ``--max-frames``, the window's q key): capture stops
reading, detection finishes the frame it holds, output writes what is
queued and closes every output.
"""
from __future__ import annotations

import queue
import threading
import time

import cv2

from ..detector import Detector
from .capture import Capture
from .outputs import Outputs, Result
from .stats import LoopStats

_END = None  # sentinel after the last result
QUEUE_SIZE = 2  # results waiting for output: enough to overlap, small enough to add no lag
# Longest the output thread waits for the detector to start the model before it goes ahead anyway
# (a bound: a detector busy in its own Python for longer never stalls the outputs).
TURN_WAIT = 0.05


class _Turns:
    """Whose turn it is to run Python: the detect thread's while it takes a
    frame, converts and resizes it and reads the model's outputs; the output
    thread's while the model runs (the interpreter releases the GIL then) or
    detection waits for a frame.

    Why: a result reaches the output thread just as the detect thread starts
    its next frame. Started at once, the output's tracking, zones and events
    (about 1 ms of Python a frame on a desktop CPU, several on a Pi) take
    the GIL at the detect thread's first short call that releases it
    (cvtColor, resize) and keep it until they block or the 5 ms switch
    interval runs out: their work is added to the detector's time per frame
    instead of overlapping the model's. ``benchmarks/camera_gil.py``
    measures both orders.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._detector_python = False

    def detector(self, running_python: bool) -> None:
        with self._cond:
            self._detector_python = running_python
            if not running_python:
                self._cond.notify_all()

    def model_runs(self) -> None:
        self.detector(False)

    def wait(self, timeout: float = TURN_WAIT) -> None:
        """Until the detect thread is not running Python (at most ``timeout`` s)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._detector_python, timeout)


class Pipeline:
    """Runs ``capture`` frames through ``detector`` into ``outputs``.

    ``start`` launches the threads, ``wait`` polls, ``stop`` asks for a
    clean end (safe in a signal handler), ``join`` waits until the outputs
    are closed and raises the first error any stage hit.
    """

    def __init__(self, capture: Capture, detector: Detector, outputs: Outputs, stats: LoopStats,
                 max_frames: int | None = None):
        self.capture, self.detector, self.outputs, self.stats = capture, detector, outputs, stats
        self.max_frames = max_frames
        self._results: queue.Queue[Result | None] = queue.Queue(QUEUE_SIZE)
        self._turns = _Turns()
        self._errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._run_detect, name="detect", daemon=True),
                         threading.Thread(target=self._run_output, name="output", daemon=True)]

    def start(self) -> None:
        self.capture.start()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.capture.stop()

    def wait(self, timeout: float | None) -> bool:
        """True once every output is closed."""
        self._threads[-1].join(timeout)
        return not self._threads[-1].is_alive()

    def join(self) -> None:
        while not self.wait(0.5):
            pass
        for thread in self._threads:
            thread.join()
        self.capture.join(timeout=2.0)  # a live source may block in read(); the thread is a daemon
        errors = self._errors + ([self.capture.error] if self.capture.error else [])
        if errors:
            raise errors[0]

    def _fail(self, exc: BaseException) -> None:
        self._errors.append(exc)
        self.stop()

    def _run_detect(self) -> None:
        try:
            self._detect()
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._turns.detector(False)
            self.stop()
            self._results.put(_END)

    def _run_output(self) -> None:
        try:
            self._output()
        except BaseException as exc:
            self._fail(exc)
            while self._results.get() is not _END:  # let detection finish its frame
                pass
        finally:
            try:
                self.outputs.close()
            except BaseException as exc:
                self._fail(exc)

    def _detect(self) -> None:
        done = 0
        while self.max_frames is None or done < self.max_frames:
            frame = self.capture.slot.get()
            if frame is None:
                return
            self._turns.detector(True)
            begin = time.perf_counter()
            rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
            converted = time.perf_counter() - begin
            floor = self.outputs.scene.floor if self.outputs.scene is not None else None
            detections = self.detector.detect(rgb, floor, on_inference=self._turns.model_runs)
            self._turns.detector(True)
            timings = self.detector.timings
            low = ()
            if floor is not None:  # ByteTrack's second stage; only reported detections go further
                detections, low = self.detector.split_reported(detections)
            result = Result(frame, detections, {
                "capture": frame.capture_s, "preprocess": converted + timings.preprocess,
                "inference": timings.inference, "postprocess": timings.postprocess}, low=tuple(low))
            self._turns.detector(False)
            self._results.put(result)
            done += 1

    def _output(self) -> None:
        while (result := self._results.get()) is not _END:
            self._turns.wait()
            begin = time.perf_counter()
            tracked = {}
            if self.outputs.scene is not None:  # tracking, zones, events: in this thread, beside detection
                result = self.outputs.track(result)
                tracked = {"track": time.perf_counter() - begin}
                begin = time.perf_counter()
            self.outputs.show(result)
            seconds = {**result.seconds, **tracked, "output": time.perf_counter() - begin,
                       "latency": time.time() - result.frame.timestamp}
            self.outputs.log(result, seconds)
            self.stats.frame_done(seconds)
