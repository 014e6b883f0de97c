"""Builds every zoo network once and writes its parameter and multiply-add
counts to ``convert/data/zoo_costs.json``, which ``ssdkit models`` prints
(building six networks takes about 20 s; reading the file, none).

    python tools/zoo_costs.py            # rewrite the file (after changing a network)
    python tools/zoo_costs.py --check    # exit 1 if the file disagrees with the networks

``make zoo-costs`` runs the first; ``tests/convert/test_zoo.py`` rebuilds one
network and compares it with the file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

COSTS_FILE = Path(__file__).resolve().parents[1] / "convert" / "data" / "zoo_costs.json"


def measure(name: str) -> dict[str, int]:
    """Parameters and multiply-adds of one image of zoo model ``name`` as
    ``ssdkit models`` describes it: default input size and width, 90 COCO classes."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ssdkit.convert.models.flops import count_macs
    from ssdkit.convert.models.ssd import build_model
    from ssdkit.convert.zoo import ModelConfig

    keras_model = build_model(ModelConfig(name).definition()).keras_model
    return {"params": int(keras_model.count_params()), "macs": int(count_macs(keras_model))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the stored file instead of writing it")
    args = parser.parse_args(argv)
    from ssdkit.convert.zoo import ZOO

    costs = {name: measure(name) for name in ZOO}
    text = json.dumps(costs, indent=1) + "\n"
    if args.check:
        stored = json.loads(COSTS_FILE.read_text())
        wrong = [name for name in costs if stored.get(name) != costs[name]] + sorted(set(stored) - set(costs))
        if wrong:
            print(f"{COSTS_FILE}: out of date for {', '.join(wrong)}; run python tools/zoo_costs.py", file=sys.stderr)
            return 1
        print(f"{COSTS_FILE}: matches the {len(costs)} networks")
        return 0
    from ssdkit.fileio import write_text_atomic

    write_text_atomic(COSTS_FILE, text)
    print(COSTS_FILE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
