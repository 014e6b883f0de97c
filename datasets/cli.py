"""``ssdkit data synth``: write the built-in synthetic dataset to a folder."""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="datasets: generate the built-in synthetic dataset")
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    synth = commands.add_parser("synth", help="write synthetic shapes as JPEGs + COCO annotations.json")
    synth.add_argument("--out", required=True, help="output folder (written atomically)")
    synth.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    synth.add_argument("--seed", type=int, default=0, help="seed; use different seeds for train and validation")
    synth.add_argument("--size", type=int, default=320, help="image side in pixels (default 320)")
    synth.set_defaults(handler=_synth)


def _synth(args) -> int:
    from .synth import generate

    if args.n < 1 or args.size < 32:
        raise ValueError(f"--n {args.n} and --size {args.size} must be at least 1 and 32")
    print(generate(Path(args.out), args.n, args.seed, args.size) / "annotations.json")
    return 0
