"""Cost per frame of tracking (ByteTrack from ``trackers``, through
``runtime/camera/tracking.py``) and of the zone and line bookkeeping on top
of it (``Scene.update`` with two zones and a line), at 5 and 20 objects.

Objects move on straight lines at constant speed (seeded), so every frame
matches every track: the tracker's steady-state work. 600 frames; the first
50 are warm-up; median and 90th percentile of the thread's CPU time (what
the work costs; wall-clock time also counts the waits of a machine shared
with other jobs, shown beside it). Target: tracking under 1 ms a frame at
20 objects.

    python benchmarks/tracking_cost.py [--frames 600]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from ssdkit.runtime.camera.capture import Frame
from ssdkit.runtime.camera.scene import Scene
from ssdkit.runtime.camera.tracking import Tracker, TrackerOptions
from ssdkit.runtime.camera.zones import parse_zones
from ssdkit.runtime.detector import Detection

SIZE = 640
ZONES = parse_zones({"zones": [{"name": "left", "polygon": [[0, 0], [320, 0], [320, 640], [0, 640]], "dwell": 2},
                               {"name": "middle", "polygon": [[160, 160], [480, 160], [480, 480], [160, 480]]}],
                     "lines": [{"name": "gate", "points": [[0, 320], [640, 320]]}]})


def scripted(objects: int, frames: int, seed: int = 0) -> list[list[Detection]]:
    rng = np.random.default_rng(seed)
    start = rng.uniform(60, SIZE - 100, (objects, 2))
    velocity = rng.uniform(-2, 2, (objects, 2))
    side = rng.uniform(30, 50, objects)
    out = []
    for f in range(frames):
        xy = np.clip(start + f * velocity, 0, SIZE - 60)
        out.append([Detection((float(y), float(x), float(y + s), float(x + s)), 0.9, 0, "object")
                    for (x, y), s in zip(xy, side)])
    return out


def measure(objects: int, frames: int, zones: bool) -> tuple[float, float, float]:
    """(CPU ms median, CPU ms p90, wall ms median) per frame."""
    detections = scripted(objects, frames)
    tracker = Tracker(TrackerOptions(), frame_rate=30.0)
    scene = Scene(tracker, ZONES if zones else None, video_clock=True)
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    cpu, wall = [], []
    for f, dets in enumerate(detections):
        frame = Frame(f, 1_700_000_000 + f / 30, image, 30.0, 0.0)
        begin, begin_wall = time.thread_time(), time.perf_counter()
        if zones:
            scene.update(frame, dets)
        else:
            tracker.update(dets, f / 30)
        cpu.append(time.thread_time() - begin)
        wall.append(time.perf_counter() - begin_wall)
    ms, wall_ms = np.array(cpu[50:]) * 1000, np.array(wall[50:]) * 1000
    return float(np.median(ms)), float(np.percentile(ms, 90)), float(np.median(wall_ms))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=600)
    args = parser.parse_args()
    from importlib.metadata import version

    print(f"trackers {version('trackers')}, supervision {version('supervision')}; CPU ms per frame, "
          f"median / p90 (wall-clock median) over {args.frames - 50} frames")
    for objects in (5, 20):
        track = measure(objects, args.frames, zones=False)
        scene = measure(objects, args.frames, zones=True)
        print(f"{objects:2d} objects: tracking {track[0]:.3f} / {track[1]:.3f} ({track[2]:.3f})   "
              f"tracking + 2 zones + 1 line {scene[0]:.3f} / {scene[1]:.3f} ({scene[2]:.3f})")
    print(f"tracking at 20 objects: {track[0]:.3f} ms CPU a frame (target < 1 ms); with zones and a line "
          f"{scene[0]:.3f} ms")


if __name__ == "__main__":
    main()
