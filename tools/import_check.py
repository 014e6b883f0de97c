"""``make import-check``: every importable OD API architecture at full size.

Builds each source with the test fixtures (OD API naming, random weights;
tests/convert/odapi_fixtures.py) at the zoo's sizes and width 1.0, runs
``ssdkit import`` on it as a user would (a fresh process, wall time
included), once per kind of source the OD API ships (TF1: the frozen graph
and the checkpoint with its ``.meta`` graph; TF2: the SavedModel, and the
checkpoint alone, which has nothing to run), and prints one table: parity
(max |difference| of box encodings and class logits, absolute and relative
to the source's largest value, detection agreement) and the import's time,
wall and CPU (user + system, whatever the load: an import spends almost no
time waiting for disk, so on an idle machine its wall time is at most about
this), with the 1-minute load average as it started. Not part of ``make
test``: it takes 15-30 minutes on a 2-core machine.

    python tools/import_check.py [--only NAME ...] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "convert"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cases():
    """(name, builder, [(source kind, path inside the built folder)])."""
    from odapi_fixtures import Tf1Spec, build_tf1_source, build_tf2_fpnlite_source, build_tf2_source

    tf1 = [("TF1 frozen", "."), ("TF1 ckpt", "model.ckpt")]
    tf2 = [("TF2 SavedModel", "."), ("TF2 ckpt", "checkpoint/ckpt-0")]

    def one(spec):
        return lambda folder: build_tf1_source(folder, spec)

    return [
        ("ssd_mobilenet_v1 300", one(Tf1Spec("ssd_mobilenet_v1", 1.0, 300, 90, fused_bn=False)), tf1),
        ("ssd_mobilenet_v2 300", one(Tf1Spec("ssd_mobilenet_v2", 1.0, 300, 90)), tf1),
        ("ssdlite_mobilenet_v2 300", one(Tf1Spec("ssdlite_mobilenet_v2", 1.0, 300, 90)), tf1),
        ("ssdlite_mobilenet_v3_small 320", one(Tf1Spec("ssdlite_mobilenet_v3_small", 1.0, 320, 90)), tf1),
        ("ssdlite_mobilenet_v3_large 320", one(Tf1Spec("ssdlite_mobilenet_v3_large", 1.0, 320, 90)), tf1),
        ("ssd_mobilenet_v1_fpn 640", one(Tf1Spec("ssd_mobilenet_v1_fpn", 1.0, 640, 90)), tf1),
        ("ssd_mobilenet_v2_quantized 300 (QAT)", one(Tf1Spec("ssd_mobilenet_v2", 1.0, 300, 90, quantized=True)),
         tf1[:1]),
        ("ssd_mobilenet_v2_keras 320", lambda folder: build_tf2_source(folder, 320, 90), tf2),
        ("ssd_mobilenet_v2_fpn_keras 320 (FPN-lite)", lambda folder: build_tf2_fpnlite_source(folder, 320, 90), tf2),
        ("ssd_mobilenet_v2_fpn_keras 640 (FPN-lite)", lambda folder: build_tf2_fpnlite_source(folder, 640, 90), tf2[:1]),
    ]


def _children_cpu() -> float:
    """User + system CPU seconds of finished child processes: the import's work, whatever the load."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def row(name, kind, parity: dict, seconds: float, code: int, cpu: float, load: float) -> str:
    def g(value):
        return "-" if value is None else f"{value:.2g}"

    if code != 0:
        return f"| {name} | {kind} | FAILED (exit {code}) | | | | | {seconds:.0f} s | {cpu:.0f} s | {load:.1f} |"
    if not parity.get("runnable"):
        return (f"| {name} | {kind} | not checked ({parity.get('note')}) | | | | | {seconds:.0f} s | {cpu:.0f} s "
                f"| {load:.1f} |")
    rows = parity["rows"]
    box_abs, logit_abs = max(r["box_max"] for r in rows), max(r["logit_max"] for r in rows)
    box_rel, logit_rel = max(r["box_relative"] for r in rows), max(r["logit_relative"] for r in rows)
    agreement = f"{parity['agreement']:.0%}" + (" top-10 identical" if all(r["top_identical"] for r in rows) else "")
    note = ""
    if parity.get("fake_quant"):
        note = f" (vs the FakeQuant graph; FakeQuant bypassed: relative {g(parity.get('float_twin_relative'))})"
    return (f"| {name} | {kind} | {g(box_abs)} / {g(box_rel)} | {g(logit_abs)} / {g(logit_rel)} | {agreement}{note} "
            f"| {'pass' if parity['passed'] else 'FAIL'} | {seconds:.0f} s | {cpu:.0f} s | {load:.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run the cases whose name contains one of these")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args()
    ssdkit = str(Path(sys.executable).with_name("ssdkit"))
    lines = ["| architecture | source | box enc max abs / rel | logits max abs / rel | detections | check "
             "| import wall time | import CPU time | load average |", "|---|---|---|---|---|---|---|---|---|"]
    failed = 0
    with tempfile.TemporaryDirectory(prefix="ssdkit-import-check-") as tmp:
        for name, build, kinds in cases():
            if args.only and not any(word in name for word in args.only):
                continue
            folder = Path(tmp) / name.split()[0]
            started = time.monotonic()
            build(folder)
            print(f"== {name}: source built in {time.monotonic() - started:.0f} s", flush=True)
            for kind, inside in kinds:
                if kind == "TF2 ckpt":
                    shutil.rmtree(folder / "saved_model")
                out = Path(tmp) / "out" / f"{folder.name}-{kind.replace(' ', '_')}"
                load = os.getloadavg()[0]  # 1-minute load average as the import starts
                started, used = time.monotonic(), _children_cpu()
                result = subprocess.run([ssdkit, "import", str(folder / inside), "--out", str(out), "--no-progress"],
                                        capture_output=True, text=True)
                seconds, cpu = time.monotonic() - started, _children_cpu() - used
                parity = json.loads((out / "parity.json").read_text()) if result.returncode == 0 else {}
                line = row(name, kind, parity, seconds, result.returncode, cpu, load)
                print(line if result.returncode == 0 else line + "\n" + result.stderr.strip()[-2000:], flush=True)
                lines.append(line)
                failed += result.returncode != 0
            shutil.rmtree(folder)
    load = os.getloadavg()
    lines.append(f"\n{os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end "
                 f"(1 / 5 / 15 min); `python tools/import_check.py`.")
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
