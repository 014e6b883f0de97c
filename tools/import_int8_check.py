"""``make import-int8-check``: does an imported model keep its detections in int8?

For each importable OD API architecture at full size (width 1.0), builds the
OD API-named source with the test fixtures (tests/convert/odapi_fixtures.py),
imports it with ``ssdkit import`` (the parity check, as ``make import-check``),
exports the import as a user would, ``ssdkit export --weights DIR --format
tflite`` (int8, the default: calibrated on the default data, 100 synthetic
images) and ``--quant fp32``, and measures the int8 file's detections against
the fp32 file's with ``evaluation.agreement.detection_agreement`` (the int8
report's measure: scores >= 0.5, IoU >= 0.5, same class; recall, precision,
mean IoU of the matched pairs) on the first 100 synthetic validation images
and on scikit-image's three photos.

What the weights are decides what the figure means, so each row says:

- ``trained``: the shipped ``ssd_mnv2`` demo weights (trained on the synthetic
  shapes; convert/weights/README.md), written into the OD API's names
  (``odapi_fixtures.odapi_weights``: ssdkit's ``ssd_mnv2`` and the OD API's
  ``ssd_mobilenet_v2`` compute the same function, checked on the photos), for
  TF1 ``ssd_mobilenet_v2`` 300 and TF2 ``ssd_mobilenet_v2_keras`` 320 (the same
  weights at 320: the network is fully convolutional; anchors follow the size).
  These detect the shapes in the validation images and little in photos.
- ``random + bias``: random weights (TF1: random batch-norm statistics; TF2:
  statistics from the photos) with every class bias shifted so that about 20
  (anchor, class) pairs per photo score over 0.5, as a trained detector's few
  confident boxes (``odapi_fixtures.with_realistic_scores``). Without the shift
  about half of all pairs score over 0.5 and agreement at 0.5 is meaningless.
  No training shaped these activations, so int8 on them is a harsher test than
  on a trained model (compare the two ``ssd_mobilenet_v2`` rows).

ssdkit's other trained weights (``/work/runs/mnv3s``, ssdlite_mnv3_small) are
Keras MobileNetV3-Small, the classification network's channel counts; the OD
API's ssd_mobilenet_v3_small is slim's detection variant (last stage halved),
so they do not map onto it.

    python tools/import_int8_check.py [--only NAME ...] [--out FILE.md]

Not part of ``make test``: about 5 minutes per architecture on a 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "convert"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VAL_IMAGES = 100
PER_PHOTO = 20  # (anchor, class) pairs over 0.5 per photo for the random-weight rows
TRAINED = "trained (shipped ssd_mnv2 demo weights, synthetic shapes)"
RANDOM = f"random + bias (~{PER_PHOTO} pairs/photo over 0.5)"


def cases():
    """(name, weights, source kind, builder(folder) -> source path)."""
    from odapi_fixtures import Tf1Spec, build_tf1_source, build_tf2_fpnlite_source, build_tf2_source, \
        odapi_weights, with_realistic_scores

    from ssdkit.convert.zoo import shipped_weights

    shapes = ("circle", "square", "triangle", "cross")

    def trained_tf1(folder):
        weights = odapi_weights(shipped_weights("ssd_mnv2"), "ssd_mnv2_odapi")
        return build_tf1_source(folder, Tf1Spec("ssd_mobilenet_v2", 1.0, 300, len(shapes), labels=shapes,
                                                weights=weights))

    def random_tf1(spec):
        return lambda folder: build_tf1_source(folder, with_realistic_scores(spec, PER_PHOTO))

    return [
        ("ssd_mobilenet_v2 300", TRAINED, "TF1 frozen", trained_tf1),
        ("ssd_mobilenet_v2_keras 320", TRAINED, "TF2 SavedModel",
         lambda folder: build_tf2_source(folder, 320, trained=shipped_weights("ssd_mnv2"))),
        ("ssd_mobilenet_v2 300", RANDOM, "TF1 frozen", random_tf1(Tf1Spec("ssd_mobilenet_v2", 1.0, 300, 90))),
        ("ssdlite_mobilenet_v2 300", RANDOM, "TF1 frozen", random_tf1(Tf1Spec("ssdlite_mobilenet_v2", 1.0, 300, 90))),
        ("ssd_mobilenet_v1 300", RANDOM, "TF1 frozen",
         random_tf1(Tf1Spec("ssd_mobilenet_v1", 1.0, 300, 90, fused_bn=False))),
        ("ssdlite_mobilenet_v3_small 320", RANDOM, "TF1 frozen",
         random_tf1(Tf1Spec("ssdlite_mobilenet_v3_small", 1.0, 320, 90))),
        ("ssdlite_mobilenet_v3_large 320", RANDOM, "TF1 frozen",
         random_tf1(Tf1Spec("ssdlite_mobilenet_v3_large", 1.0, 320, 90))),
        ("ssd_mobilenet_v2_fpn_keras 320 (FPN-lite)", RANDOM, "TF2 SavedModel",
         lambda folder: build_tf2_fpnlite_source(folder, 320, 90, per_photo=PER_PHOTO)),
        ("ssd_mobilenet_v1_fpn 640", RANDOM, "TF1 frozen", random_tf1(Tf1Spec("ssd_mobilenet_v1_fpn", 1.0, 640, 90))),
    ]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(args: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}:\n{result.stderr.strip()[-2000:]}")
    return result


def images():
    """(first VAL_IMAGES synthetic validation images, the three photos)."""
    from ssdkit.convert.odapi.parity import load_photos
    from ssdkit.evaluation.evaluate import load_dataset

    dataset = load_dataset()
    val = [dataset.load_image(record) for record in dataset.records[:VAL_IMAGES]]
    return val, [photo for _, photo in load_photos(None)]


def agreement(fp32: Path, int8: Path, pictures) -> dict:
    from ssdkit.evaluation.agreement import detection_agreement
    from ssdkit.evaluation.evaluate import open_detector, predict

    found = []
    for path in (fp32, int8):
        with open_detector(path) as detector:
            found.append([predict(detector, picture) for picture in pictures])
    return detection_agreement(*found).as_dict()


def measure(name, weights, kind, build, work: Path, ssdkit: str, pictures) -> dict:
    folder = work / "source"
    started = time.monotonic()
    build(folder)
    built = time.monotonic() - started
    print(f"== {name} ({weights}): source built in {built:.0f} s", flush=True)
    imported, started, used = work / "import", time.monotonic(), _children_cpu()
    _run([ssdkit, "import", str(folder), "--out", str(imported), "--no-progress"])
    import_wall, import_cpu = time.monotonic() - started, _children_cpu() - used
    parity = json.loads((imported / "parity.json").read_text())
    files = {}
    started = time.monotonic()
    for quant in ("int8", "fp32"):
        out = work / f"export_{quant}"
        _run([ssdkit, "export", "--weights", str(imported), "--format", "tflite", "--out", str(out),
              *(["--no-report"] if quant == "int8" else ["--quant", "fp32"])])
        found = sorted(p for p in out.glob("*.tflite") if ("int8" in p.name) == (quant == "int8"))
        if len(found) != 1:
            raise RuntimeError(f"{out}: expected one {quant} .tflite, found {[p.name for p in out.glob('*.tflite')]}")
        files[quant] = found[0]
    export_wall = time.monotonic() - started
    val, photos = pictures
    return {"name": name, "weights": weights, "kind": kind, "parity": parity, "import_wall": import_wall,
            "import_cpu": import_cpu, "export_wall": export_wall, "files": {k: v.name for k, v in files.items()},
            "val": agreement(files["fp32"], files["int8"], val),
            "photos": agreement(files["fp32"], files["int8"], photos)}


HEADER = ["| architecture | weights | source | parity (max rel. box / logits) | synthetic val (100): fp32 dets, "
          "recall / precision / mean IoU | photos (3): fp32 dets, recall / precision / mean IoU |",
          "|---|---|---|---|---|---|"]


def row(result: dict) -> str:
    parity = result["parity"]
    if parity.get("runnable"):
        rows = parity["rows"]
        box, logits = max(r["box_relative"] for r in rows), max(r["logit_relative"] for r in rows)
        check = f"{box:.2g} / {logits:.2g} {'pass' if parity['passed'] else 'FAIL'}"
    else:
        check = "not checked"

    def cell(a):
        return f"{a['reference']}: {a['recall']:.0%} / {a['precision']:.0%} / {a['mean_iou']:.2f}"

    return (f"| {result['name']} | {result['weights']} | {result['kind']} | {check} | {cell(result['val'])} "
            f"| {cell(result['photos'])} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run the cases whose name or weights contain one of these")
    parser.add_argument("--out", help="also write the table to this markdown file (and the figures to FILE.json)")
    args = parser.parse_args()
    ssdkit = str(Path(sys.executable).with_name("ssdkit"))
    pictures = images()
    lines, results, failed = list(HEADER), [], 0
    started = time.monotonic()
    for name, weights, kind, build in cases():
        if args.only and not any(word in name or word in weights for word in args.only):
            continue
        with tempfile.TemporaryDirectory(prefix="ssdkit-import-int8-") as tmp:
            try:
                result = measure(name, weights, kind, build, Path(tmp), ssdkit, pictures)
            except (RuntimeError, ValueError, KeyError) as exc:
                failed += 1
                line = f"| {name} | {weights} | {kind} | FAILED: {str(exc).splitlines()[0][:200]} | | |"
                print(line, "\n", exc, flush=True)
                lines.append(line)
                continue
        results.append(result)
        lines.append(row(result))
        print(lines[-1], f"(import {result['import_wall']:.0f} s wall, {result['import_cpu']:.0f} s CPU; "
                         f"exports {result['export_wall']:.0f} s)", flush=True)
        if args.out:  # as each row finishes, so a long run that is stopped keeps what it measured
            Path(args.out).write_text("\n".join(lines) + "\n")
            Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    load = os.getloadavg()
    lines.append(f"\n{os.cpu_count()} cores, {time.monotonic() - started:.0f} s, load average {load[0]:.1f} / "
                 f"{load[1]:.1f} / {load[2]:.1f} at the end; `python tools/import_int8_check.py`.")
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
