"""``ssdkit data synth``: write the built-in synthetic dataset to a folder."""
from __future__ import annotations

from pathlib import Path

from ssdkit.runtime.limits import arg, span


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="datasets: generate the built-in synthetic dataset")
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    synth = commands.add_parser("synth", help="write synthetic shapes as JPEGs + COCO annotations.json")
    synth.add_argument("--out", required=True, help="output folder (written atomically)")
    synth.add_argument("--n", type=arg("dataset_size"), default=2000,
                       help=f"number of images, {span('dataset_size')} (default 2000)")
    synth.add_argument("--seed", type=arg("seed"), default=0,
                       help=f"seed, {span('seed')}; use different seeds for train and validation (default 0)")
    synth.add_argument("--size", type=arg("image_side"), default=320,
                       help=f"image side in pixels, {span('image_side')} (default 320)")
    synth.set_defaults(handler=_synth)


def _synth(args) -> int:
    from .synth import generate

    print(generate(Path(args.out), args.n, args.seed, args.size) / "annotations.json")
    return 0
