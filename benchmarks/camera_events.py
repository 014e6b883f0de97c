"""The camera loop with tracking, zones, MQTT and snapshots on, against
detection alone; and a broker outage in the middle of a run.

1. Throughput: the synthetic-shapes script (``datasets/synth_video.py``:
   three shapes on known paths, two zones, a counting line) at ``fast``
   pace, every frame, JSON Lines out; once with detection only, once with
   ``--zones`` (tracking), ``--mqtt`` to a real broker on 127.0.0.1 (amqtt)
   and ``--snapshots``; alternated, best of ``--rounds``. Target: >= 0.95.
   The broker is a separate process at a lower priority (nice 10): a
   deployed loop publishes to a broker on another machine (or at least not
   competing with the detector), so this measures the loop, not the
   broker. ``benchmarks/camera_cpu.py`` says where each output's CPU goes.
2. Outage: a run with every event output on; ``--outage`` seconds after
   the first frame the broker is killed (SIGKILL), ``--outage`` seconds
   later it starts again. Frame rate over the ``--outage`` seconds before,
   during and after, from the frames' timestamps, and the output thread's
   time per frame (where a publish that waited would show); the loop's own
   count of dropped messages and reconnections. Target: no dip beyond 5%.
   On a machine shared with other jobs the frame rate moves with their load;
   the output thread's times say whether the outage itself cost anything.

    python benchmarks/camera_events.py --model build/bench/ssd_mnv2_int8.tflite [--frames 600] [--outage 10]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ssdkit.datasets import synth_video as script
from ssdkit.runtime.camera.loop import LoopConfig, run_loop

REPO = Path(__file__).resolve().parents[1]


def broker_tool():
    spec = importlib.util.spec_from_file_location("mqtt_broker", REPO / "tools" / "mqtt_broker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(model: Path, video: Path, folder: Path, events: bool, port: int | None, name: str) -> dict:
    jsonl = folder / f"{name}.jsonl"
    options = dict(zones=str(folder / "zones.json"), snapshots=str(folder / f"{name}-snaps"),
                   mqtt=f"127.0.0.1:{port}", mqtt_topic=f"ssdkit/bench/{name}") if events else {}
    stats = run_loop(LoopConfig(model=str(model), source=str(video), file_pace="fast", stats_every=0,
                                jsonl=str(jsonl), **options))
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    stats["timestamps"] = np.array([r["timestamp"] for r in records])
    stats["output_ms"] = np.array([r["timings_ms"].get("track", 0) + r["timings_ms"]["output"] for r in records])
    return stats


def rate(stamps: np.ndarray, begin: float, end: float) -> float:
    inside = stamps[(stamps >= begin) & (stamps < end)]
    return (len(inside) - 1) / (inside[-1] - inside[0]) if len(inside) > 1 else 0.0


def output_ms(result: dict, begin: float, end: float) -> str:
    """The output thread's work per frame (tracking, zones, events, publishing): p50 / max ms.
    Publishing that waited for the broker would show here first, as seconds."""
    stamps, work = result["timestamps"], result["output_ms"]
    inside = work[(stamps >= begin) & (stamps < end)]
    return f"{np.median(inside):.2f} / {inside.max():.2f}" if inside.size else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=600, help="frames of the throughput runs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--outage", type=float, default=10.0, help="seconds without a broker")
    args = parser.parse_args()
    tool = broker_tool()
    with tempfile.TemporaryDirectory() as tmp, tool.Broker(nice=10) as broker:
        folder = Path(tmp)
        (folder / "zones.json").write_text(json.dumps(script.SCRIPT_ZONES))
        video = script.write_video(folder / "script.avi", args.frames)
        best = {"detection": 0.0, "events": 0.0}
        for round_ in range(args.rounds):
            for name in best:
                stats = run(args.model, video, folder, name == "events", broker.port, f"{name}{round_}")
                best[name] = max(best[name], stats["fps_recent"])
        print(f"{args.model.name}, {args.frames} frames of {script.SIZE}x{script.SIZE} at fast pace, "
              f"best of {args.rounds}")
        print(f"detection only                        {best['detection']:7.1f} FPS")
        print(f"+ tracking, zones, MQTT, snapshots    {best['events']:7.1f} FPS  "
              f"(limited by {stats['limited_by']}; per-thread p50 ms {stats['thread_ms']})")
        print(f"events / detection                    {best['events'] / best['detection']:7.3f}  (target >= 0.95)")

        # The outage: long enough for the three windows at this machine's rate.
        frames = int(best["events"] * (3 * args.outage + 6))
        long_video = script.write_video(folder / "long.avi", frames)
        result = {}
        loop = threading.Thread(target=lambda: result.update(run(args.model, long_video, folder, True,
                                                                 broker.port, "outage")))
        loop.start()
        while not (folder / "outage.jsonl").exists() or not (folder / "outage.jsonl").read_text():
            time.sleep(0.05)
        time.sleep(args.outage)
        killed = time.time()
        broker.kill()
        time.sleep(args.outage)
        back = time.time()
        broker.start()
        loop.join()
        stamps = result["timestamps"]
        before = rate(stamps, killed - args.outage, killed)
        during = rate(stamps, killed, back)
        after = rate(stamps, back, back + args.outage)
        mqtt = result["mqtt"]
        print(f"broker outage of {back - killed:.1f} s in a {frames}-frame run: FPS before {before:.1f}, "
              f"during {during:.1f} ({during / before:.3f}), after {after:.1f} ({after / before:.3f}); "
              f"target >= 0.95")
        print(f"output thread ms a frame, p50 / max: before {output_ms(result, killed - args.outage, killed)}, "
              f"during {output_ms(result, killed, back)}, after {output_ms(result, back, back + args.outage)}")
        print(f"mqtt: {mqtt['published']} published, {mqtt['dropped']} dropped, {mqtt['queued']} left queued, "
              f"{mqtt['reconnects']} reconnects")


if __name__ == "__main__":
    main()
