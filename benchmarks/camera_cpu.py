"""Where the camera loop's CPU goes, output by output: CPU milliseconds per
frame in each thread of the loop (capture, detect, output, the snapshot
writer, the MQTT sender, paho's network thread), the interpreter's own
worker threads, and the broker (a separate process), for detection alone
and with each event output on by itself and all together.

Wall-clock stage times (``LoopStats``) say which thread is slowest; on a
machine with fewer cores than busy threads they also grow with what the
*other* threads burn, which is what this measures instead: CPU time is
what an output costs however the scheduler shares the cores.

    python benchmarks/camera_cpu.py --model build/bench/ssd_mnv2_int8.tflite [--frames 400] [--rounds 2]

Each variant runs the synthetic-shapes script (``datasets/synth_video.py``)
at ``fast`` pace with a JSON Lines output; variants are interleaved and the
smallest per-frame figure of ``--rounds`` is kept (load from other jobs only
ever adds). The broker (amqtt) runs in its own process, niced, as a
deployed loop's broker runs elsewhere; its CPU is reported apart.

``--variants`` picks from detection, track, zones, mqtt, snapshots, all; a
suffix ``~`` (``all~``) runs the output thread's work the moment a result
arrives, as the loop did before ``pipeline._Turns``; ``@MS`` (``all@0.5``)
sets the GIL switch interval. ``detect()`` rows split the detector call's
wall time: on a CPU, waiting for one (Linux schedstat), and the rest
(waiting for the GIL).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from ssdkit.datasets import synth_video as script
from ssdkit.runtime.camera import pipeline
from ssdkit.runtime.camera.loop import LoopConfig, run_loop
from ssdkit.runtime.detector import Detector

from camera_events import broker_tool  # noqa: E402  (the benchmark folder is on sys.path when run as a script)

DEFAULT_SWITCH = sys.getswitchinterval()
_turns_wait = pipeline._Turns.wait


def _no_wait(self, timeout: float = 0.0) -> None:
    """The output thread starts at once (the loop before ``pipeline._Turns``)."""
VARIANTS = ("detection", "track", "zones", "mqtt", "snapshots", "all")
_cpu: dict[str, float] = {}
_lock = threading.Lock()
_bootstrap = threading.Thread._bootstrap_inner


def _counted(self) -> None:
    """A thread's body that adds the thread's CPU time to ``_cpu`` under its (numbered-suffix-free) name."""
    try:
        _bootstrap(self)
    finally:
        name = self.name.split("-")[0] if self.name.startswith(("paho", "Thread")) else self.name
        with _lock:
            _cpu[name] = _cpu.get(name, 0.0) + time.thread_time()


_detect = Detector.detect
_split = [0.0, 0.0, 0.0, 0]  # wall, on-CPU, waiting for a CPU (run queue), calls


def _schedstat() -> tuple[float, float]:
    """This thread's seconds on a CPU (``thread_time``: exact; schedstat's own figure lags by up
    to a scheduler tick) and waiting on a run queue (Linux schedstat, updated when it gets a CPU)."""
    with open("/proc/thread-self/schedstat") as f:
        _, waiting, _ = f.read().split()
    return time.thread_time(), int(waiting) / 1e9


def _timed_detect(self, image, floor=None, on_inference=None):
    """``Detector.detect`` with its wall time split: on a CPU, waiting for one (another
    thread or process had it), and the rest, which with one interpreter thread is the
    wait for the GIL after each call that released it."""
    run0, queue0 = _schedstat()
    wall0 = time.perf_counter()
    try:
        return _detect(self, image, floor, on_inference)
    finally:
        wall = time.perf_counter() - wall0
        run1, queue1 = _schedstat()
        _split[0] += wall
        _split[1] += run1 - run0
        _split[2] += queue1 - queue0
        _split[3] += 1


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (and its waited-for children) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:13]) / os.sysconf("SC_CLK_TCK")


def options(variant: str, folder: Path, port: int) -> dict:
    zones = str(folder / "zones.json")
    mqtt = dict(mqtt=f"127.0.0.1:{port}", mqtt_topic=f"ssdkit/cpu/{variant}")
    return {"detection": {}, "track": dict(track=True), "zones": dict(zones=zones),
            "mqtt": mqtt, "snapshots": dict(snapshots=str(folder / f"{variant}-snaps")),
            "all": dict(zones=zones, snapshots=str(folder / f"{variant}-snaps"), **mqtt)}[variant]


def measure(model: Path, video: Path, folder: Path, variant: str, port: int, broker_pid: int) -> dict:
    variant, _, switch = variant.partition("@")  # detection@0.5: a GIL switch interval of 0.5 ms
    sys.setswitchinterval(float(switch) / 1000 if switch else DEFAULT_SWITCH)
    variant, untimed, _ = variant.partition("~")  # all~: the output thread does not wait for its turn
    pipeline._Turns.wait = _no_wait if untimed else _turns_wait
    _cpu.clear()
    _split[:] = [0.0, 0.0, 0.0, 0]
    jsonl = folder / f"{variant}.jsonl"
    process0, broker0, main0, wall0 = time.process_time(), process_cpu(broker_pid), time.thread_time(), time.perf_counter()
    stats = run_loop(LoopConfig(model=str(model), source=str(video), file_pace="fast", stats_every=0,
                                jsonl=str(jsonl), **options(variant, folder, port)))
    wall = time.perf_counter() - wall0
    time.sleep(0.2)  # daemon threads (paho's) finish their run()
    frames = stats["frames"]
    with _lock:
        threads = dict(_cpu)
    threads["main"] = time.thread_time() - main0
    total = time.process_time() - process0
    threads["native (interpreter pool, ffmpeg)"] = total - sum(threads.values())
    ms = {name: 1000 * value / frames for name, value in threads.items()}
    ms["process total"] = 1000 * total / frames
    wall, running, waiting, calls = _split
    ms["detect(): wall"] = 1000 * wall / calls
    ms["detect(): on a CPU"] = 1000 * running / calls
    ms["detect(): waiting for a CPU"] = 1000 * waiting / calls
    ms["detect(): rest (GIL)"] = 1000 * (wall - running - waiting) / calls
    ms["broker process"] = 1000 * (process_cpu(broker_pid) - broker0) / frames
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    detections = sum(len(r["detections"]) for r in records) / max(1, len(records))
    return {"fps": frames / wall, "ms": ms, "detections": detections,
            "thread_ms": stats["thread_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--each", action="store_true", help="also print every run's figures")
    args = parser.parse_args()
    variants = args.variants.split(",")
    threading.Thread._bootstrap_inner = _counted
    Detector.detect = _timed_detect
    tool = broker_tool()
    with tempfile.TemporaryDirectory() as tmp, tool.Broker(nice=10) as broker:  # a deployed broker runs elsewhere
        folder = Path(tmp)
        (folder / "zones.json").write_text(json.dumps(script.SCRIPT_ZONES))
        video = script.write_video(folder / "script.avi", args.frames)
        best: dict[str, dict] = {}
        for _ in range(args.rounds):
            for variant in variants:
                result = measure(args.model, video, folder, variant, broker.port, broker.process.pid)
                if args.each:
                    print(f"{variant:10} {result['fps']:6.1f} FPS; CPU ms a frame: " +
                          ", ".join(f"{n.split()[0]} {v:.2f}" for n, v in result["ms"].items()), flush=True)
                kept = best.setdefault(variant, result)
                if result is not kept:
                    if result["fps"] > kept["fps"]:
                        kept["fps"], kept["thread_ms"] = result["fps"], result["thread_ms"]
                    for name, value in result["ms"].items():
                        kept["ms"][name] = min(kept["ms"].get(name, value), value)
        names = sorted({n for r in best.values() for n in r["ms"]},
                       key=lambda n: (n in ("process total", "broker process"), n))
        print(f"{args.model.name}, {args.frames} frames of {script.SIZE}x{script.SIZE}, fast pace, "
              f"best of {args.rounds}: CPU ms per frame by thread")
        print(f"{'':36}" + "".join(f"{v:>11}" for v in variants))
        print(f"{'FPS':36}" + "".join(f"{best[v]['fps']:11.1f}" for v in variants))
        print(f"{'detections a frame':36}" + "".join(f"{best[v]['detections']:11.1f}" for v in variants))
        for name in names:
            print(f"{name:36}" + "".join(f"{best[v]['ms'].get(name, 0.0):11.2f}" for v in variants))
        for thread in ("detect", "output"):
            print(f"{'wall p50 ms, ' + thread + ' thread':36}" +
                  "".join(f"{best[v]['thread_ms'].get(thread, 0.0):11.2f}" for v in variants))


if __name__ == "__main__":
    main()
