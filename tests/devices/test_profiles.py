"""Device profiles: every shipped one loads, bad ones fail naming file and field."""
import json

import pytest

from ssdkit.cli import main
from ssdkit.devices.profiles import guess_device, list_profiles, load_profile

EXPECTED = {"desktop_cpu", "rpi4", "rpi5", "coral_usb", "coral_pcie", "coral_devboard"}


def test_every_shipped_profile_loads():
    assert set(list_profiles()) == EXPECTED
    for name in EXPECTED:
        profile = load_profile(name)
        assert profile.name == name and profile.threads >= 1
    assert load_profile("coral_usb").delegate_library("Linux") == "libedgetpu.so.1"
    assert load_profile("coral_usb").delegate_library("Darwin") == "libedgetpu.1.dylib"
    assert load_profile("rpi4").delegate_library("Linux") is None


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(threads=0), "field 'threads' is 0, expected at least 1"),
    (lambda d: d.update(artifact="int4"), "field 'artifact' is 'int4', expected one of int8_uint8"),
    (lambda d: d.pop("pip"), r"missing field\(s\) \['pip'\]"),
    (lambda d: d.update(colour="red"), r"unknown field\(s\) \['colour'\]"),
    (lambda d: d.update(threads="4"), "field 'threads' is str, expected int"),
])
def test_bad_profiles_name_the_file_and_field(tmp_path, change, message):
    data = json.loads(json.dumps(load_profile("rpi4").__dict__, default=list))
    change(data)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"mine.json: {message}"):
        load_profile(str(path))


def test_guess_device_from_fake_proc_and_sys(tmp_path):
    assert guess_device(tmp_path) == "desktop_cpu"
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_text("Raspberry Pi 4 Model B Rev 1.4\x00")
    assert guess_device(tmp_path) == "rpi4"
    usb = tmp_path / "usb" / "sys/bus/usb/devices/1-1"
    usb.mkdir(parents=True)
    (usb / "idVendor").write_text("1a6e\n")
    (usb / "idProduct").write_text("089a\n")
    assert guess_device(tmp_path / "usb") == "coral_usb"


def test_devices_command(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "coral_usb" in out and "libedgetpu" in out and "this machine looks like: desktop_cpu" in out
