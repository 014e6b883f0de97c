"""`ssdkit camera` as a deployment: tracking, zones, lines, snapshots and MQTT.

Real parts: the shipped demo detector (trained on the synthetic shapes), a
video of those shapes moving along known paths (``datasets/synth_video.py``)
written and read back by OpenCV, ByteTrack from ``trackers``, and a real MQTT
broker (amqtt, ``tools/mqtt_broker.py``) on 127.0.0.1 that a test kills and
starts again. The soak run with every output on is ``make soak``.
"""
import json
import os
import re
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("trackers")

from ssdkit.cli import main  # noqa: E402
from ssdkit.datasets import synth_video as script  # noqa: E402
from ssdkit.runtime.boxes import iou_matrix  # noqa: E402
from ssdkit.runtime.camera.zones import parse_zones  # noqa: E402
from ssdkit.runtime.detector import Detection  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from camera_process import Camera  # noqa: E402

FRAMES = 2 * script.CYCLE  # two round trips: every event kind, each line crossed twice per direction


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return script.write_video(tmp_path_factory.mktemp("script") / "script.avi", FRAMES)


@pytest.fixture(scope="module")
def zones_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("zones") / "zones.json"
    path.write_text(json.dumps(script.SCRIPT_ZONES))
    return path


@pytest.fixture
def broker(mqtt_broker_tool):
    with mqtt_broker_tool.Broker() as running:
        yield running


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def events_of(records: list[dict]) -> list[dict]:
    return [event for record in records for event in record["events"]]


def id_switches(records: list[dict]) -> tuple[int, list[set]]:
    """Track-id switches against the script: each scripted object should carry one id for the
    whole video and no id two objects. Returns (switches, ids seen per object)."""
    ids = [set() for _ in script.OBJECTS]
    for record in records:
        detections = [d for d in record["detections"] if d["track_id"] is not None]
        if not detections:
            continue
        overlap = iou_matrix(script.boxes(record["frame"]), np.array([d["box"] for d in detections]))
        for obj, row in enumerate(overlap):
            if row.max() >= 0.5:
                ids[obj].add(detections[int(row.argmax())]["track_id"])
    switches = sum(len(s) - 1 for s in ids if s)
    shared = sum(len(a & b) for i, a in enumerate(ids) for b in ids[i + 1:])
    return switches + shared, ids


def script_visits(zone: dict, frames: int) -> list[tuple[int, int | None, int]]:
    """(object, first frame inside, frame it left or None) for a rectangular zone, from the script
    alone: an object is inside while its box's bottom centre is."""
    xs, ys = [p[0] for p in zone["polygon"]], [p[1] for p in zone["polygon"]]
    visits, inside = [], {}
    for frame in range(frames):
        for obj, (ymin, xmin, ymax, xmax) in enumerate(script.boxes(frame)):
            x, y = (xmin + xmax) / 2, ymax
            now = min(xs) <= x <= max(xs) and min(ys) <= y <= max(ys)
            if now and obj not in inside:
                inside[obj] = frame
            elif not now and obj in inside:
                visits.append((obj, inside.pop(obj), frame))
    return visits + [(obj, start, None) for obj, start in inside.items()]


def test_script_tracks_zones_lines_snapshots_and_mqtt(shapes_tflite, video, zones_file, broker, tmp_path, capsys):
    recorder = broker.subscribe("#")
    jsonl, snapshots = tmp_path / "out.jsonl", tmp_path / "snaps"
    code = main(["camera", str(shapes_tflite), "--source", str(video), "--file-pace", "fast", "--stats-every", "0",
                 "--zones", str(zones_file), "--jsonl", str(jsonl), "--snapshots", str(snapshots),
                 "--mqtt", f"127.0.0.1:{broker.port}", "--mqtt-topic", "ssdkit/test", "--mqtt-summary-rate", "0"])
    stderr = capsys.readouterr().err
    assert code == 0, stderr
    records = read_jsonl(jsonl)
    assert [r["frame"] for r in records] == list(range(FRAMES))
    assert "track" in records[0]["timings_ms"]

    # Tracking: every object found in (nearly) every frame, one id each, no switches.
    switches, ids = id_switches(records)
    assert switches == 0, f"track ids per scripted object: {ids}"
    assert all(len(s) == 1 for s in ids)
    found = sum(len([d for d in r["detections"] if d["track_id"] is not None]) for r in records)
    assert found >= 0.95 * len(script.OBJECTS) * FRAMES

    events = events_of(records)
    kinds = [e["type"] for e in events]
    assert kinds.count("appeared") == 3 and kinds.count("disappeared") == 0  # nothing leaves the picture

    # Lines: exactly the script's crossings, by direction.
    gate = script.SCRIPT_ZONES["lines"][0]
    expected = script.expected_crossings(gate["points"], FRAMES)
    assert expected == {"in": 2, "out": 2}
    crossings = [e for e in events if e["type"] == "line_cross"]
    assert {d: sum(e["direction"] == d for e in crossings) for d in ("in", "out")} == expected
    assert [e["direction"] for e in crossings] == ["in", "out", "in", "out"]  # the circle goes right, comes back
    assert {e["label"] for e in crossings} == {"circle"}

    # Zones: one enter (and a leave, unless still inside at the end) per scripted visit, within 3 frames
    # (the tracker confirms an id on its second frame), a dwell event per visit that lasts long enough.
    for zone in script.SCRIPT_ZONES["zones"]:
        visits = script_visits(zone, FRAMES)
        enters = [e for e in events if e["type"] == "zone_enter" and e["zone"] == zone["name"]]
        leaves = [e for e in events if e["type"] == "zone_leave" and e["zone"] == zone["name"]]
        dwells = [e for e in events if e["type"] == "zone_dwell" and e["zone"] == zone["name"]]
        assert len(enters) == len(visits), (zone["name"], visits, enters)
        for (obj, start, end), enter in zip(sorted(visits, key=lambda v: v[1]), enters):
            assert enter["label"] == script.OBJECTS[obj].label and abs(enter["frame"] - start) <= 3
        assert len(leaves) == sum(end is not None for _, _, end in visits)
        long_enough = [v for v in visits if ((v[2] or FRAMES) - v[1]) / script.FPS > zone["dwell"] + 0.2]
        assert len(dwells) == len(long_enough) and all(d["seconds"] >= zone["dwell"] for d in dwells)

    # Snapshots: one JPEG per frame with events, named in every event of that frame.
    frames_with_events = {e["frame"] for e in events}
    assert len(list(snapshots.glob("*.jpg"))) == len(frames_with_events)
    for event in events:
        image = cv2.imread(event["snapshot"])
        assert image is not None and image.shape == (script.SIZE, script.SIZE, 3)

    # MQTT: the same events, the final counts, Home Assistant discovery, offline at the end.
    deadline = time.monotonic() + 10
    while len(recorder.take("ssdkit/test/events/")) < len(events) and time.monotonic() < deadline:
        time.sleep(0.1)
    received = [json.loads(payload) for _, payload, _ in recorder.take("ssdkit/test/events/")]
    assert received == events
    assert all(topic == f"ssdkit/test/events/{json.loads(p)['type']}" for topic, p, _ in
               recorder.take("ssdkit/test/events/"))
    last = {topic: payload for topic, payload, _ in recorder.take("ssdkit/test/")}
    assert last["ssdkit/test/lines/gate/in"] == "2" and last["ssdkit/test/lines/gate/out"] == "2"
    assert last["ssdkit/test/zones/bay/occupied"] == "ON" and last["ssdkit/test/zones/bay/count"] == "1"
    assert last["ssdkit/test/status"] == "offline"
    recorder.close()
    # Retained: a client that subscribes after the run still finds the discovery configs and states.
    late = broker.subscribe("#")
    deadline = time.monotonic() + 10
    while len(late.take("homeassistant/")) < 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    configs = {topic: json.loads(payload) for topic, payload, _ in late.take("homeassistant/")}
    late.close()
    assert set(configs) == {f"homeassistant/{kind}/ssdkit_test/{name}/config" for kind, name in (
        ("binary_sensor", "pad_occupied"), ("sensor", "pad_count"), ("binary_sensor", "bay_occupied"),
        ("sensor", "bay_count"), ("sensor", "gate_in"), ("sensor", "gate_out"))}
    occupied = configs["homeassistant/binary_sensor/ssdkit_test/pad_occupied/config"]
    assert occupied["state_topic"] == "ssdkit/test/zones/pad/occupied" and occupied["device_class"] == "occupancy"
    assert occupied["availability_topic"] == "ssdkit/test/status"
    assert re.search(r"done: 240 frames .*mqtt connected, \d+ published, 0 queued, 0 dropped, 0 reconnects", stderr)


def jsonl_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines[:-1]]  # the last line may be half written


def test_broker_outage_is_survived(shapes_tflite, zones_file, broker, tmp_path):
    """The broker dies mid-run (SIGKILL) and comes back: the loop keeps its pace, says so, and
    events flow again; the statistics count what was dropped."""
    long_video = script.write_video(tmp_path / "long.avi", 900)  # 45 s at the file's pace
    jsonl = tmp_path / "out.jsonl"
    recorder = broker.subscribe("ssdkit/outage/events/#")
    camera = Camera(str(shapes_tflite), "--source", str(long_video), "--zones", str(zones_file), "--jsonl", str(jsonl),
                    "--mqtt", f"127.0.0.1:{broker.port}", "--mqtt-topic", "ssdkit/outage", "--stats-every", "1",
                    cwd=tmp_path, timeout=60)
    try:
        camera.wait_for(lambda: any("line_cross" in t for t, _, _ in recorder.take()), what="a line crossing")
        broker.kill()
        killed, killed_wall = time.monotonic(), time.time()
        before = jsonl_records(jsonl)
        frames_at_kill = len(before)
        # The loop's own pace before the outage (the machine's load sets it, not the file's 20 FPS).
        pace_before = sum(killed_wall - 3 <= r["timestamp"] <= killed_wall for r in before) / 3
        camera.wait_for(lambda: "mqtt: lost" in camera.stderr, timeout=30, what="the loss reported")
        time.sleep(max(0.0, 3.0 - (time.monotonic() - killed)))
        outage = time.monotonic() - killed
        frames_in_outage = len(jsonl_records(jsonl)) - frames_at_kill
        recorder.messages.clear()
        broker.start()
        camera.wait_for(lambda: "mqtt: reconnected" in camera.stderr, timeout=60, what="the reconnection")
        reconnected_at = len(jsonl_records(jsonl))
        camera.wait_for(lambda: any(json.loads(p)["frame"] > reconnected_at for _, p, _ in recorder.take()),
                        timeout=60, what="events after the broker came back")
    finally:
        code = camera.terminate()
        recorder.close()
    assert code == 0, camera.stderr
    records = jsonl_records(jsonl)
    # The loop did not wait for the broker: it went on through the outage at (at least half) its pace before...
    assert pace_before > 0 and frames_in_outage >= 0.5 * pace_before * outage, \
        (frames_in_outage, outage, pace_before, camera.stderr)
    # ...with no gap between frames anywhere near the outage's length.
    stamps = np.array([r["timestamp"] for r in records])
    assert np.diff(stamps).max() < 1.5, np.diff(stamps).max()
    final = re.search(r"done: .*mqtt connected, (\d+) published, (\d+) queued, (\d+) dropped, (\d+) reconnects",
                      camera.stderr)
    assert final and int(final.group(4)) >= 1 and int(final.group(1)) > 0, camera.stderr


def test_publisher_queue_is_bounded_and_waits_for_a_late_broker(mqtt_broker_tool):
    """No broker yet: publishing returns at once, keeps the newest ``queue_size`` messages, counts the
    rest as dropped; the broker starts and the kept ones arrive, oldest first."""
    from ssdkit.runtime.camera.mqtt import MqttOptions, MqttPublisher

    port = mqtt_broker_tool.free_port()
    reports = []
    publisher = MqttPublisher(MqttOptions("127.0.0.1", port, topic="ssdkit/late", queue_size=50, ha_discovery=False),
                              report=reports.append)
    try:
        for i in range(5000):
            publisher.event({"type": "appeared", "track_id": i})
        stats = publisher.stats()
        assert (stats["connected"], stats["queued"], stats["dropped"]) == (False, 50, 4950)
        with mqtt_broker_tool.Broker(port=port) as broker:
            recorder = broker.subscribe("ssdkit/late/events/#")
            deadline = time.monotonic() + 60
            while len(recorder.take()) < 50 and time.monotonic() < deadline:
                time.sleep(0.1)
            ids = [json.loads(payload)["track_id"] for _, payload, _ in recorder.take()]
            recorder.close()
            assert ids == list(range(4950, 5000)), (sorted(set(range(4950, 5000)) - set(ids)), publisher.stats())
            assert publisher.stats()["connected"] and publisher.stats()["queued"] == 0
    finally:
        publisher.close(timeout=0.5)
    assert any(f"cannot reach 127.0.0.1:{port}" in r for r in reports)
    assert sum("cannot reach" in r for r in reports) == 1  # said once, not once per retry


def test_tls_and_password(shapes_tflite, video, mqtt_broker_tool, tmp_path, capsys):
    with mqtt_broker_tool.Broker(tls=True, users={"camera": "s3cret word"}) as broker:
        recorder = broker.subscribe("ssdkit/tls/#", username="camera", password="s3cret word")
        password = tmp_path / "password"
        password.write_text("s3cret word\n")
        args = ["camera", str(shapes_tflite), "--source", str(video), "--file-pace", "fast", "--max-frames", "20",
                "--track", "--stats-every", "0", "--mqtt", f"127.0.0.1:{broker.port}", "--mqtt-topic", "ssdkit/tls",
                "--mqtt-ca", str(broker.ca_file), "--mqtt-username", "camera"]
        assert main([*args, "--mqtt-password-file", str(password)]) == 0, capsys.readouterr().err
        appeared = [json.loads(p) for t, p, _ in recorder.take("ssdkit/tls/events/appeared")]
        assert sorted(e["label"] for e in appeared) == ["circle", "square", "triangle"]
        recorder.close()
        # A wrong password: refused, said once, and the loop still runs to its end.
        password.write_text("wrong\n")
        assert main([*args, "--mqtt-password-file", str(password)]) == 0
        stderr = capsys.readouterr().err
        assert stderr.count(f"mqtt: 127.0.0.1:{broker.port} refused the connection") == 1, stderr
        assert re.search(r"done: 20 frames .*mqtt DISCONNECTED, 0 published", stderr)


def test_snapshots_cap_removes_the_oldest_and_nothing_else(tmp_path):
    from ssdkit.runtime.camera.snapshots import Snapshots, parse_size

    assert parse_size("500MB") == 500 * 2**20 and parse_size("2g") == 2 * 2**30 and parse_size("800k") == 800 * 1024
    with pytest.raises(ValueError, match="--max-disk 'lots': expected a size such as 500MB"):
        parse_size("lots")
    (tmp_path / "notes.txt").write_text("mine")
    old = tmp_path / "20200101-000000.000-f000001.jpg"
    old.write_bytes(b"x" * 50_000)  # a previous run's snapshot: counted, and the first to go
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(30)]
    writer = Snapshots(tmp_path, max_bytes=200_000, clip_seconds=0.5)
    paths = []
    for i, image in enumerate(frames):
        writer.frame(i, 1_700_000_000 + i / 10, 10.0, image, None)
        if i % 5 == 4:
            paths.append(writer.snapshot())
            assert writer.snapshot() == paths[-1]  # a second event in the same frame shares the files
    writer.close()
    stats = writer.stats()
    assert stats["written"] == 12 and stats["dropped"] == 0 and stats["removed"] >= 1
    assert not old.exists() and (tmp_path / "notes.txt").read_text() == "mine"
    owned = [p for p in tmp_path.iterdir() if p.name != "notes.txt"]
    assert sum(p.stat().st_size for p in owned) <= 200_000
    assert not [p for p in owned if p.name.startswith(".")]  # no temporary left
    newest = paths[-1]
    assert Path(newest["snapshot"]).exists() and Path(newest["clip"]).exists()
    clip = cv2.VideoCapture(newest["clip"])
    count = 0
    while clip.read()[0]:
        count += 1
    assert count == 5  # 0.5 s at 10 FPS, ending with the event's frame


def test_tracker_ids_appear_and_disappear_on_the_clock():
    from ssdkit.runtime.camera.tracking import Tracker, TrackerOptions

    tracker = Tracker(TrackerOptions(lost_seconds=0.5), frame_rate=10)

    def at(x):
        return Detection((50.0, x, 90.0, x + 40), 0.9, 0, "circle")

    updates = [tracker.update([at(10 + 5 * i), at(300 - 5 * i)], clock=i / 10) for i in range(10)]
    assert updates[0].ids == (None, None) and updates[0].appeared == ()  # confirmed on the second frame
    first = updates[1].ids
    assert None not in first and len(set(first)) == 2 and sorted(updates[1].appeared) == sorted(first)
    assert all(u.ids == first for u in updates[1:])
    # Gone: kept for 0.5 s of clock (not frames), then reported once.
    gone = [tracker.update([], clock=0.9 + t) for t in (0.1, 0.3, 0.45, 0.7, 0.9)]  # last seen at 0.9
    assert [u.disappeared for u in gone[:3]] == [(), (), ()]
    assert sorted(gone[3].disappeared + gone[4].disappeared) == sorted(first)


def test_low_score_detections_keep_a_track_through_a_dip():
    """ByteTrack's second stage: an object seen at a reported score, then for
    1 s only below it, then above it again keeps its one id when the low-score
    detections are fed (and never starts a track from them); without them it
    disappears after --track-lost and comes back as a new track."""
    from ssdkit.runtime.camera.tracking import Tracker, TrackerOptions

    def at(i, score):
        return Detection((50.0, 10 + 4 * i, 90.0, 50 + 4 * i), score, 0, "circle")

    def run(feed_low: bool):
        tracker = Tracker(TrackerOptions(lost_seconds=0.5), frame_rate=10)
        updates = []
        for i in range(30):
            if 5 <= i < 15:  # the dip: only a low-score detection
                low = [at(i, 0.2)]
                updates.append(tracker.update([], i / 10, low if feed_low else []))
            else:
                updates.append(tracker.update([at(i, 0.8)], i / 10))
        return updates

    fed = run(True)
    ids = {u.ids[0] for u in fed if u.ids and u.ids[0] is not None}
    assert len(ids) == 1 and [u.low_ids for u in fed[5:15]] == [(min(ids),)] * 10
    assert sum(len(u.appeared) for u in fed) == 1 and all(not u.disappeared for u in fed)
    starved = run(False)
    assert sum(len(u.appeared) for u in starved) == 2 and sum(len(u.disappeared) for u in starved) == 1
    # A low-score detection alone never starts a track.
    tracker = Tracker(TrackerOptions(), frame_rate=10)
    assert all(tracker.update([], i / 10, [at(i, 0.3)]).low_ids == (None,) for i in range(5))


def test_camera_classes_and_track_low(shapes_tflite, video, tmp_path, capsys):
    """--exclude-classes and --class-threshold reach the camera's detector; with
    --track the detector is asked down to --track-low, and only detections at
    their display threshold are output."""
    jsonl = tmp_path / "d.jsonl"
    code = main(["camera", str(shapes_tflite), "--source", str(video), "--file-pace", "fast", "--stats-every", "0",
                 "--max-frames", "30", "--track", "--track-low", "0.05", "--exclude-classes", "circle",
                 "--class-threshold", "square=0.6", "--jsonl", str(jsonl)])
    err = capsys.readouterr().err
    assert code == 0, err
    detections = [d for r in read_jsonl(jsonl) for d in r["detections"]]
    assert detections and "circle" not in {d["label"] for d in detections}
    assert all(d["score"] >= (0.6 if d["label"] == "square" else 0.5) for d in detections)
    assert {d["label"] for d in detections} == {"square", "triangle"}
    code = main(["camera", str(shapes_tflite), "--source", str(video), "--classes", "dog", "--jsonl",
                 str(tmp_path / "e.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and "unknown class 'dog' in classes (--classes)" in err and len(err.strip().splitlines()) == 1


def test_tracked_frames_are_drawn_by_the_one_drawing_module(video, zones_file):
    """Boxes with track ids, zones and lines all go through runtime/draw.py:
    the same pixels as draw.annotate given the scene's shapes and captions."""
    from ssdkit.runtime import draw
    from ssdkit.runtime.camera.capture import Frame
    from ssdkit.runtime.camera.outputs import Outputs, Result
    from ssdkit.runtime.camera.scene import Scene
    from ssdkit.runtime.camera.tracking import Tracker
    from ssdkit.runtime.camera.zones import load_zones

    capture = cv2.VideoCapture(str(video))
    images = [capture.read()[1] for _ in range(3)]
    capture.release()
    outputs = Outputs(scene=Scene(Tracker(), load_zones(str(zones_file)), video_clock=True))
    detections = [Detection((50.0, 60.0, 110.0, 130.0), 0.9, 1, "square")]
    for index, image in enumerate(images):
        frame = Frame(index=index, timestamp=index / 10, image=image, fps=10.0, capture_s=0.0)
        result = outputs.track(Result(frame, detections, {}))
    assert result.track_ids == (0,)  # trackers counts ids from 0
    shapes = outputs.scene.shapes(result.states)
    zone_names = [z["name"] for z in script.SCRIPT_ZONES["zones"]]
    line_names = [l["name"] for l in script.SCRIPT_ZONES["lines"]]
    assert [s.caption.split(":")[0] for s in shapes[:len(zone_names)]] == zone_names
    assert [s.caption.split(" in ")[0] for s in shapes[len(zone_names):]] == line_names
    assert all(isinstance(s, draw.Polyline) for s in shapes) and not shapes[-1].closed
    drawn = outputs.draw(images[-1], result)
    expected = draw.annotate(images[-1], detections, shapes, captions=["#0 square 0.90"], channels="bgr")
    assert np.array_equal(drawn, expected) and not np.array_equal(drawn, images[-1])
    assert not np.array_equal(drawn, draw.annotate(images[-1], detections, channels="bgr"))  # zones and id drawn


@pytest.mark.parametrize("data, message", [
    ([], "(top level): expected an object with \"zones\" and/or \"lines\", got a list"),
    ({}, "(top level): no zones and no lines"),
    ({"zone": []}, "zone: unknown field (expected coordinates, zones, lines)"),
    ({"zones": [{"name": "a", "polygon": [[0, 0], [1, 1]]}]}, "zones[0].polygon: expected at least 3 [x, y] points, got 2"),
    ({"zones": [{"name": "a b", "polygon": [[0, 0], [9, 0], [9, 9]]}]}, "zones[0].name: expected letters, digits"),
    ({"zones": [{"name": "a", "polygon": [[0, 0], [9, 0], [9, "x"]]}]}, "zones[0].polygon[2]: expected two numbers, got [9, \"x\"]"),
    ({"zones": [{"name": "a", "polygon": [[0, 0], [9, 0], [9, 9]], "dwell": -1}]}, "zones[0].dwell: expected seconds above 0, got -1"),
    ({"zones": [{"name": "a", "polygon": [[0, 0], [9, 0], [9, 9]], "anchor": "feet"}]}, "zones[0].anchor: expected one of bottom_center"),
    ({"lines": [{"name": "a", "points": [[0, 0], [9, 0], [9, 9]]}]}, "lines[0].points: expected exactly 2 [x, y] points, got 3"),
    ({"lines": [{"name": "a", "points": [[5, 5], [5, 5]]}]}, "lines[0].points: the two points are the same, [5.0, 5.0]"),
    ({"lines": [{"name": "a", "points": [[0, 0], [9, 0]], "classes": "person"}]}, "lines[0].classes: expected a non-empty list of labels, got \"person\""),
    ({"zones": [{"name": "a", "polygon": [[0, 0], [9, 0], [9, 9]]}], "lines": [{"name": "a", "points": [[0, 0], [9, 0]]}]},
     "lines[0].name: 'a' is already the name of zones[0]"),
    ({"coordinates": "normalized", "lines": [{"name": "a", "points": [[0, 0], [1.5, 0]]}]},
     "lines[0].points[1]: expected coordinates between 0 and 1 (coordinates: normalized), got [1.5, 0]"),
])
def test_zone_file_errors_name_the_field(data, message):
    with pytest.raises(ValueError) as error:
        parse_zones(data, "zones.json")
    assert str(error.value).startswith(f"zones.json: {message}") and "\n" not in str(error.value)


def test_one_opencv_in_the_environment():
    """trackers is installed without its opencv-python requirement (Makefile,
    README): two OpenCV distributions would share one cv2/ folder."""
    from importlib.metadata import PackageNotFoundError, version

    installed = []
    for name in ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
                 "opencv-contrib-python-headless"):
        try:
            installed.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    assert len(installed) == 1, installed


@pytest.mark.parametrize("module, args, extra", [
    ("trackers", ["--track"], "track"),
    ("paho.mqtt.client", ["--mqtt", "127.0.0.1:1"], "mqtt"),
])
def test_missing_library_names_the_extra(shapes_tflite, video, tmp_path, monkeypatch, capsys, module, args, extra):
    monkeypatch.setitem(sys.modules, module, None)  # what the import meets without the package
    code = main(["camera", str(shapes_tflite), "--source", str(video), "--jsonl", str(tmp_path / "d.jsonl"), *args])
    err = capsys.readouterr().err
    assert code == 2 and f"pip install 'ssdkit[{extra}]'" in err
    if module == "trackers":
        assert err.strip().endswith("&& pip install --no-deps 'trackers>=2.6,<3'")


def test_bad_zone_file_is_a_one_line_error_before_anything_runs(video, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("zones.json").write_text('{"zones": [{"name": "pad", "polygon": [[0, 0]]}]}')
    code = main(["camera", "no-model-needed.tflite", "--source", str(video), "--zones", "zones.json",
                 "--jsonl", "out.jsonl"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == ("ssdkit camera: error: zones.json: zones[0].polygon: "
                                         "expected at least 3 [x, y] points, got 1")
    Path("zones.json").write_text('{"zones": [')
    assert main(["camera", "m.tflite", "--source", str(video), "--zones", "zones.json"]) == 2
    assert "zones.json: not valid JSON (Expecting value at line 1 column 12)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zones.json"]  # nothing written


def rss_mb(pid: int) -> float | None:
    try:
        found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None
    return int(found.group(1)) / 1024 if found else None


@pytest.mark.skipif(not os.environ.get("SSDKIT_SOAK"), reason="soak test: run with make soak")
def test_soak_with_every_event_output_memory_stays_flat(shapes_tflite, zones_file, broker, tmp_path):
    """4000 frames with tracking, zones, MQTT, snapshots with clips under a small disk cap, the
    video, JSON Lines and a preview client: resident memory stays flat."""
    frames = 4000
    clip = script.write_video(tmp_path / "soak.avi", frames, seed=2)
    jsonl = tmp_path / "soak.jsonl"
    recorder = broker.subscribe("ssdkit/soak/#")
    camera = Camera(str(shapes_tflite), "--source", str(clip), "--file-pace", "fast", "--zones", str(zones_file),
                    "--video", str(tmp_path / "soak.mp4"), "--jsonl", str(jsonl), "--serve", "127.0.0.1:0",
                    "--snapshots", str(tmp_path / "snaps"), "--snapshot-clip", "1", "--max-disk", "3MB",
                    "--mqtt", f"127.0.0.1:{broker.port}", "--mqtt-topic", "ssdkit/soak", "--mqtt-summary-rate", "5",
                    "--stats-every", "5", cwd=tmp_path, timeout=60)
    camera.wait_for(lambda: re.search(r"serving (http://127\.0\.0\.1:\d+/)", camera.stderr), what="the server")
    url = re.search(r"serving (http://127\.0\.0\.1:\d+/)", camera.stderr).group(1)
    received = []

    def watch():
        try:
            with urllib.request.urlopen(url + "stream.mjpg", timeout=30) as stream:
                while chunk := stream.read(65536):
                    received.append(len(chunk))
        except OSError:
            pass

    threading.Thread(target=watch, daemon=True).start()
    camera.wait_for(lambda: len(jsonl_records(jsonl)) >= 500, timeout=300, what="warm-up frames")
    baseline = peak = rss_mb(camera.process.pid)
    while (rss := rss_mb(camera.process.pid)) is not None and camera.process.poll() is None:
        peak = max(peak, rss)
        time.sleep(0.2)
    assert camera.terminate() == 0, camera.stderr
    recorder.close()
    assert len(read_jsonl(jsonl)) == frames and sum(received) > 0
    events = recorder.take("ssdkit/soak/events/")
    snaps = sum(p.stat().st_size for p in (tmp_path / "snaps").iterdir())
    print(f"RSS after 500 frames {baseline:.1f} MB, peak over {frames} frames {peak:.1f} MB; "
          f"{len(events)} events over MQTT; snapshots {snaps / 2**20:.1f} MB on disk")
    assert len(events) > 100 and snaps <= 3 * 2**20
    assert peak - baseline < 10, f"RSS grew from {baseline:.1f} MB to {peak:.1f} MB"


def test_mqtt_numbers_are_checked_by_the_shared_limits():
    """MqttOptions and LoopConfig (and so the command line) reject a bad QoS, queue size or
    summary rate with the same words: ``runtime/limits.py`` is the one table of ranges."""
    from ssdkit.runtime import limits
    from ssdkit.runtime.camera.loop import LoopConfig
    from ssdkit.runtime.camera.mqtt import MqttOptions

    for field, key, config_field, value in (("qos", "qos", "mqtt_qos", 3), ("queue_size", "message_queue", "mqtt_queue", 0),
                                            ("summary_rate", "summary_rate", "mqtt_summary_rate", -1.0)):
        expected = limits.LIMITS[key].error(value)
        with pytest.raises(ValueError) as direct:
            MqttOptions("127.0.0.1", 1883, **{field: value})
        with pytest.raises(ValueError) as config:
            LoopConfig(model="m.tflite", source="0", **{config_field: value})
        assert str(direct.value) == str(config.value) == expected


def test_summaries_and_counts_cost_nothing_between_changes(mqtt_broker_tool, monkeypatch):
    """Per frame, the MQTT output builds a summary's record only when one is due (--mqtt-summary-rate)
    and publishes zone/line counts only when they change; with a JSON Lines file the frame's record is
    built once for both. Counted on a real publisher's queue (no broker: everything stays queued)."""
    from ssdkit.runtime.camera import outputs as outputs_module
    from ssdkit.runtime.camera.capture import Frame
    from ssdkit.runtime.camera.mqtt import MqttOptions, MqttPublisher

    built = []
    real_record = outputs_module.record
    monkeypatch.setattr(outputs_module, "record", lambda *a: built.append(1) or real_record(*a))
    publisher = MqttPublisher(MqttOptions("127.0.0.1", mqtt_broker_tool.free_port(), topic="ssdkit/due",
                                          summary_rate=1.0, queue_size=10_000, ha_discovery=False))
    outputs = outputs_module.Outputs(mqtt=publisher)
    image = np.zeros((8, 8, 3), np.uint8)
    detection = Detection((1.0, 1.0, 5.0, 5.0), 0.9, 0, "circle")
    try:
        for i in range(300):  # far faster than one a second: one summary
            occupied = int(i >= 150)  # the counts change once
            states = {"zones": {"pad": occupied}, "lines": {"gate": {"in": occupied, "out": 0}}}
            result = outputs_module.Result(Frame(i, time.time(), image, 20.0, 0.0), [detection], {}, (1,), (), states)
            outputs.log(result, {"output": 0.001})
        assert len(built) == 1
        queued = [topic for topic, *_ in publisher._queue]
        assert queued.count("ssdkit/due/detections") == 1
        # 4 retained count topics at the first frame, then the 3 that changed (the "out" count did not)
        assert len(queued) - 1 == 4 + 3, queued
    finally:
        publisher.close(timeout=0.1)
