"""``ssdkit devices``: the device profiles, and which one this machine looks like."""
from __future__ import annotations


def register(subparsers) -> None:
    devices = subparsers.add_parser("devices", help="list device profiles and guess this machine's")
    devices.set_defaults(handler=_devices)


def _devices(args) -> int:
    from .profiles import guess_device, list_profiles, load_profile

    rows = [("device", "artifact", "threads", "delegate", "description")]
    for name in list_profiles():
        p = load_profile(name)
        rows.append((name, p.artifact, str(p.threads), p.delegate_library() or "-", p.description))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    print(f"this machine looks like: {guess_device()}")
    return 0
