"""``ssdkit devices``: the device profiles, and which one this machine looks like."""
from __future__ import annotations


def register(subparsers) -> None:
    devices = subparsers.add_parser("devices", help="list device profiles and guess this machine's")
    devices.set_defaults(handler=_devices)


def _devices(args) -> int:
    from ssdkit.tables import text_table

    from .profiles import guess_device, list_profiles, load_profile

    rows = []
    for name in list_profiles():
        p = load_profile(name)
        rows.append((name, p.artifact, str(p.threads), p.delegate_library() or "-", p.description))
    print(text_table(("device", "artifact", "threads", "delegate", "description"), rows))
    print(f"this machine looks like: {guess_device()}")
    return 0
