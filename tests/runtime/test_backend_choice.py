"""``backend="auto"``: the fastest installed runtime for the file, measured
once per (machine, file contents, threads), cached, pinned by a device profile.
Timings come from a fake timer, so the choice is deterministic."""
import json
import logging
import shutil
from pathlib import Path

import pytest

from ssdkit.runtime import Detector
from ssdkit.runtime.backends import choice

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "models"


class FakeTimer:
    """Seconds per runtime from a table; records every call."""

    def __init__(self, seconds: dict):
        self.seconds, self.calls = seconds, []

    def __call__(self, backend, path, threads):
        self.calls.append((backend, Path(path).name, threads))
        return self.seconds[backend]


@pytest.fixture
def model(tmp_path, monkeypatch):
    monkeypatch.setenv("SSDKIT_BACKEND_CHOICES", str(tmp_path / "cache" / "choices.json"))
    path = tmp_path / "model.onnx"
    shutil.copy(MODELS / "ssdlite_mnv3_small_raw.onnx", path)
    return path


def test_the_fastest_runtime_wins_and_one_line_says_why(model, caplog):
    timer = FakeTimer({"onnx": 0.020, "openvino": 0.012})
    with caplog.at_level(logging.INFO, logger="ssdkit"):
        picked = choice.choose_backend(model, threads=2, timer=timer)
    assert picked.backend == "openvino" and not picked.cached
    assert picked.median_ms == {"onnx": 20.0, "openvino": 12.0}
    assert timer.calls == [("onnx", "model.onnx", 2), ("openvino", "model.onnx", 2)]
    lines = [r.getMessage() for r in caplog.records if "backend auto" in r.getMessage()]
    assert lines == ["backend auto: openvino for model.onnx (fastest on this machine: openvino 12.00 ms, "
                     "onnx 20.00 ms a call; measured now)"]


def test_the_choice_is_cached_until_the_file_changes(model):
    first = FakeTimer({"onnx": 0.010, "openvino": 0.030})
    assert choice.choose_backend(model, timer=first).backend == "onnx"
    again = FakeTimer({"onnx": 0.050, "openvino": 0.001})
    cached = choice.choose_backend(model, timer=again)
    assert cached.backend == "onnx" and cached.cached and again.calls == []  # no measurement
    # Other threads: another measurement.
    assert choice.choose_backend(model, threads=1, timer=again).backend == "openvino"
    # The same name with other contents: measured again, not the cached answer.
    with open(model, "ab") as handle:
        handle.write(b"\0")
    changed = choice.choose_backend(model, timer=again)
    assert changed.backend == "openvino" and not changed.cached and len(again.calls) == 4
    entries = json.loads(choice.cache_path().read_text())
    assert len(entries) == 3 and {e["backend"] for e in entries.values()} == {"onnx", "openvino"}


def test_a_device_profile_pins_the_runtime_without_measuring(model, tmp_path):
    profile = json.loads(_shipped("desktop_cpu"))
    profile["backend"] = "openvino"
    pinned = tmp_path / "pinned.json"
    pinned.write_text(json.dumps(profile))
    timer = FakeTimer({})  # any measurement would raise KeyError
    picked = choice.choose_backend(model, pinned="openvino", timer=timer)
    assert picked.backend == "openvino" and picked.reason == "pinned by the device profile" and not timer.calls
    with Detector(model, backend="auto", device=str(pinned)) as detector:
        assert detector.backend.name == "openvino"
        assert detector.backend_choice.reason == "pinned by device profile desktop_cpu"


def test_a_pin_never_swaps_the_file(model):
    """The Raspberry Pi profiles pin TFLite; an ONNX file still runs in an ONNX runtime."""
    timer = FakeTimer({"onnx": 0.010, "openvino": 0.030})
    assert choice.choose_backend(model, pinned="tflite", timer=timer).backend == "onnx" and timer.calls


def test_shipped_profiles_pin_coral_and_pi():
    from ssdkit.devices.profiles import load_profile

    assert {name: load_profile(name).backend for name in ("coral_usb", "rpi5", "rpi4", "desktop_cpu")} == \
        {"coral_usb": "edgetpu", "rpi5": "tflite", "rpi4": "tflite", "desktop_cpu": None}


def test_a_single_runtime_is_not_measured(tmp_path):
    timer = FakeTimer({})
    picked = choice.choose_backend(MODELS / "ssdlite_mnv3_small_int8.tflite", timer=timer)
    assert picked.backend == "tflite" and not timer.calls


def test_auto_with_the_real_timer_opens_a_working_detector(model):
    with Detector(model, backend="auto") as detector:
        assert detector.backend.name in ("onnx", "openvino")
        assert set(detector.backend_choice.median_ms) == {"onnx", "openvino"}


def _shipped(name: str) -> str:
    from importlib import resources

    return resources.files("ssdkit.devices").joinpath(f"profiles/{name}.json").read_text()
