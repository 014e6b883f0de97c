"""``make import-check``: every importable OD API architecture at full size.

Builds each source with the test fixtures (OD API naming, random weights and
batch norms; tests/convert/odapi_fixtures.py), times ``ssdkit import`` on it
and prints the parity figures. Sizes are the zoo's: 300x300 (TF1) and
320x320 (TF2), width 1.0.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "convert"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> int:
    from odapi_fixtures import Tf1Spec, build_tf1_source, build_tf2_source

    cases = [("ssd_mobilenet_v1 (TF1)", lambda d: build_tf1_source(d, Tf1Spec("ssd_mobilenet_v1", 1.0, 300, 90,
                                                                               fused_bn=False))),
             ("ssd_mobilenet_v2 (TF1)", lambda d: build_tf1_source(d, Tf1Spec("ssd_mobilenet_v2", 1.0, 300, 90))),
             ("ssdlite_mobilenet_v2 (TF1)", lambda d: build_tf1_source(d, Tf1Spec("ssdlite_mobilenet_v2", 1.0, 300, 90))),
             ("ssd_mobilenet_v2_keras (TF2)", lambda d: build_tf2_source(d, 320, 90))]
    ssdkit = str(Path(sys.executable).with_name("ssdkit"))
    failed = 0
    with tempfile.TemporaryDirectory(prefix="ssdkit-import-check-") as tmp:
        for name, build in cases:
            source = build(Path(tmp) / name.split()[0])
            started = time.monotonic()
            result = subprocess.run([ssdkit, "import", str(source), "--out", str(Path(tmp) / "out" / source.name)],
                                    capture_output=True, text=True)
            seconds = time.monotonic() - started
            print(f"== {name}: ssdkit import {seconds:.1f} s, exit {result.returncode}")
            print(result.stdout.strip() or result.stderr.strip().splitlines()[-1])
            failed += result.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
