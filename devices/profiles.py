"""Device profiles: what each target prefers and needs, as small JSON files.

A profile names the artifact to prefer (``int8_uint8``: full-integer TFLite
with uint8 I/O; ``edgetpu``: the ``*_edgetpu.tflite`` compiled model;
``fp32``), interpreter threads, the delegate and its library per OS, input
size advice, the apt/pip packages the device needs, how to recognise the
device (``detect``), and optionally the runtime ``backend="auto"`` must use
for the files it can run (``backend``: the Coral profiles pin ``edgetpu``,
the Raspberry Pi ones ``tflite``). Standard library only: it runs on the devices.
"""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path

ARTIFACTS = ("int8_uint8", "edgetpu", "fp32", "fp16")


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    artifact: str
    threads: int
    delegate: str | None
    delegate_libraries: dict
    input_size_advice: str
    apt: tuple[str, ...]
    pip: tuple[str, ...]
    detect: dict
    # The runtime ``backend="auto"`` must use for files it can run (None: measure).
    backend: str | None = None

    def delegate_library(self, system: str | None = None) -> str | None:
        return self.delegate_libraries.get(system or platform.system()) if self.delegate else None


_OPTIONAL = ("backend",)
_PINNABLE = (None, "tflite", "litert", "tflite_runtime", "edgetpu", "onnx", "openvino")
_TYPES = {"name": str, "description": str, "artifact": str, "threads": int, "delegate": (str, type(None)),
          "delegate_libraries": dict, "input_size_advice": str, "apt": list, "pip": list, "detect": dict}


def parse_profile(data: dict, source: str) -> DeviceProfile:
    """Validates one profile; every message names ``source`` and the field."""
    names = {f.name for f in fields(DeviceProfile)}
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a profile is a JSON object")
    unknown, missing = sorted(set(data) - names), sorted(names - set(data) - set(_OPTIONAL))
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {unknown}; expected {sorted(names)}")
    if missing:
        raise ValueError(f"{source}: missing field(s) {missing}")
    for key, kind in _TYPES.items():
        if not isinstance(data[key], kind) or (kind is int and isinstance(data[key], bool)):
            raise ValueError(f"{source}: field '{key}' is {type(data[key]).__name__}, expected {getattr(kind, '__name__', 'str or null')}")
    if data["artifact"] not in ARTIFACTS:
        raise ValueError(f"{source}: field 'artifact' is {data['artifact']!r}, expected one of {', '.join(ARTIFACTS)}")
    if data["threads"] < 1:
        raise ValueError(f"{source}: field 'threads' is {data['threads']}, expected at least 1")
    pinned = data.get("backend")
    if pinned not in _PINNABLE:
        raise ValueError(f"{source}: field 'backend' is {pinned!r}, expected null or one of "
                         f"{', '.join(b for b in _PINNABLE if b)}")
    if data["delegate"] not in (None, "edgetpu"):
        raise ValueError(f"{source}: field 'delegate' is {data['delegate']!r}, expected null or 'edgetpu'")
    return DeviceProfile(**{**data, "apt": tuple(data["apt"]), "pip": tuple(data["pip"])})


def list_profiles() -> list[str]:
    folder = resources.files("ssdkit.devices").joinpath("profiles")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_profile(name_or_path: str) -> DeviceProfile:
    """A shipped profile by name, or a profile JSON file by path."""
    if name_or_path.endswith(".json"):
        path = Path(name_or_path)
        text, source = path.read_text(), str(path)
    else:
        if name_or_path not in list_profiles():
            raise ValueError(f"unknown device {name_or_path!r}; known: {', '.join(list_profiles())}")
        resource = resources.files("ssdkit.devices").joinpath(f"profiles/{name_or_path}.json")
        text, source = resource.read_text(), f"profiles/{name_or_path}.json"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not valid JSON ({exc})") from exc
    return parse_profile(data, source)


def guess_device(root: Path = Path("/")) -> str:
    """The shipped profile this machine looks like (``root`` lets tests fake /proc and /sys)."""
    model_file = root / "proc/device-tree/model"
    model = model_file.read_text(errors="ignore") if model_file.is_file() else ""
    usb = set()
    for device in (root / "sys/bus/usb/devices").glob("*"):
        try:
            usb.add(f"{(device / 'idVendor').read_text().strip()}:{(device / 'idProduct').read_text().strip()}")
        except OSError:
            continue
    for name in list_profiles():
        rules = load_profile(name).detect
        if any(m in model for m in rules.get("device_tree_model", [])) or usb & set(rules.get("usb_ids", [])) \
                or any((root / p.lstrip("/")).exists() for p in rules.get("paths", [])):
            return name
    return "desktop_cpu"
