"""``ssdkit bench``: what each exported format in a folder costs and keeps.

Cost (file size, load time, latency, throughput, peak memory) is measured by
``measure.py`` in a fresh process per format and runtime, one after the
other, so no measurement inherits another's memory or warm caches. Every
installed runtime that can run a file is measured (an ``.onnx`` in ONNX
Runtime and in OpenVINO): the fastest runtime of each file is marked, and
the fastest (file, runtime) of the files that pass verification is the
recommendation, in the table, ``bench.json`` (``recommended``) and the chart. What a format keeps (mAP,
and the parity columns against the SavedModel) comes from ``ssdkit
verify``'s comparison, run on the same images with the same threshold.
Results: a terminal table, ``bench.json``, ``bench.md`` and ``bench.png``
(latency against mAP, one point per format), with the machine they were
measured on.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

from .verify import PARITY_HEADER, Row, find_artifacts, parity_cells, verify
from ssdkit.devices.profiles import guess_device, load_profile
from ssdkit.runtime.backends.choice import installed, runtimes_for
from ssdkit.fileio import atomic_path, write_text_atomic
from ssdkit.runtime import limits
from ssdkit.tables import markdown_table

from .evaluate import DEFAULT_THRESHOLD, load_dataset
from .measure import DEFAULT_RUNS, DEFAULT_WARMUP, LATENCY_IMAGES, machine_info

HEADER = ("format", "runtime", "precision", "size MB", "load s", "latency ms median / p90", "images/s", "peak MB",
          *PARITY_HEADER)
_COST = ("size_mb", "load_s", "latency_ms", "throughput_ips", "peak_rss_mb")
RECOMMENDED, FASTEST = "recommended", "fastest"

log = logging.getLogger(__name__)


def measure_in_subprocess(path: Path, data: str | None, runs: int, device: str, backend: str | None = None) -> dict:
    """``measure.py --one path`` in a new interpreter: its JSON, or ``{"error": ...}``."""
    command = [sys.executable, "-m", "ssdkit.evaluation.measure", "--one", str(path), "--runs", str(runs),
               "--device", device, *(["--data", str(data)] if data else []),
               *(["--backend", backend] if backend else [])]
    done = subprocess.run(command, capture_output=True, text=True)  # the environment ssdkit.log.configure set
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"measurement exited with code {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench(model_dir: str | Path, data: str | None = None, device: str | None = None, runs: int = DEFAULT_RUNS,
          images: int | None = None, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Measures and verifies every format in ``model_dir`` on the first
    ``images`` images (default: all) of ``data`` (default: synthetic validation).
    Every format runs with the threads of one device profile (default: the
    one this machine looks like), not each backend's own default."""
    limits.check(runs=runs, images=images, score_threshold=threshold)
    device = device or guess_device()
    profile = load_profile(device)
    artifacts = find_artifacts(model_dir, edgetpu=profile.delegate == "edgetpu")
    if importlib.util.find_spec("tensorflow") is None and any(a.kind == "savedmodel" for a in artifacts):
        warnings.warn("TensorFlow is not installed: the SavedModel is left out, and with it the parity columns",
                      stacklevel=2)
        artifacts = [a for a in artifacts if a.kind != "savedmodel"]
    dataset = load_dataset(data)
    measured: dict[str, list[dict]] = {}
    for artifact in artifacts:
        measured[artifact.name] = []
        for runtime in runtimes_to_measure(artifact.path):
            log.info(f"measuring {artifact.name} in {runtime}")
            measured[artifact.name].append({"runtime": runtime,
                                            **measure_in_subprocess(artifact.path, data, runs, device, runtime)})
    log.info("verifying every format against the SavedModel")
    rows = verify(artifacts, dataset, images, threshold)
    formats = []
    for row in rows:
        runtimes = measured[row.file]
        timed = [r for r in runtimes if "error" not in r]
        fastest = min(timed, key=lambda r: r["latency_ms"]["median"]) if timed else runtimes[0]
        # The file's own fields are its fastest runtime's (one entry per file, as before runtimes were measured).
        formats.append({**dataclasses.asdict(row), **{k: v for k, v in fastest.items()}, "runtimes": runtimes})
    return {
        "model_dir": str(model_dir),
        "settings": {"device": device, "threads": profile.threads, "runs": runs,
                     "warmup": DEFAULT_WARMUP, "latency_images": min(LATENCY_IMAGES, len(dataset.records)),
                     "threshold": threshold},
        "evaluation_set": {"source": str(dataset.source), "images": len(dataset.records[:images])},
        "machine": machine_info(),
        "formats": formats,
        "recommended": recommend(formats),
    }


def runtimes_to_measure(path: Path) -> list[str]:
    """Every installed runtime that can run the file (``backends.choice``)."""
    found = [name for name in runtimes_for(path) if installed(name)]
    return found or list(runtimes_for(path)[:1])  # measured anyway: the row then says what is missing


def recommend(formats: list[dict]) -> dict | None:
    """The fastest (file, runtime) by median latency among the files that did
    not fail verification: what to deploy on this machine."""
    best = None
    for entry in formats:
        if entry.get("check") == "FAIL" or entry.get("kind") == "savedmodel":
            continue
        for runtime in entry["runtimes"]:
            if "error" not in runtime and (best is None or runtime["latency_ms"]["median"] < best[2]):
                best = (entry["file"], runtime["runtime"], runtime["latency_ms"]["median"])
    if best is None:
        return None
    return {"file": best[0], "runtime": best[1], "latency_ms_median": best[2]}


def _pick(result: dict, entry: dict, runtime: dict) -> str:
    chosen = result.get("recommended") or {}
    if (chosen.get("file"), chosen.get("runtime")) == (entry["file"], runtime["runtime"]):
        return RECOMMENDED
    if len(entry["runtimes"]) > 1 and runtime["runtime"] == entry.get("runtime") and "error" not in runtime:
        return FASTEST
    return ""


def table(result: dict) -> tuple[tuple[str, ...], list[list[str]]]:
    """The header and the rows of the results table, for the terminal and bench.md."""
    rows = []
    for entry in result["formats"]:
        row = Row(**{field.name: entry[field.name] for field in dataclasses.fields(Row)})
        for runtime in entry.get("runtimes") or [entry]:
            if "error" in runtime:
                cost = ["-"] * 5
            else:
                latency = runtime["latency_ms"]
                cost = [f"{runtime['size_mb']:.2f}", f"{runtime['load_s']:.2f}",
                        f"{latency['median']:.1f} / {latency['p90']:.1f}", f"{runtime['throughput_ips']:.1f}",
                        f"{runtime['peak_rss_mb']:.0f}"]
            pick = _pick(result, entry, runtime) if "runtimes" in entry else ""
            name = runtime.get("runtime", "-") + (f" ({pick})" if pick else "")
            rows.append([entry["file"], name, entry["precision"], *cost, *parity_cells(row)])
    return HEADER, rows


def recommendation_line(result: dict) -> str:
    """One line naming the recommended file and runtime, for the terminal and bench.md."""
    chosen = result.get("recommended")
    if not chosen:
        return "recommended: none (no file could be measured and verified)"
    return (f"recommended on this machine: {chosen['file']} in {chosen['runtime']} "
            f"({chosen['latency_ms_median']:.1f} ms median per image, the fastest file and runtime that passed)")


def problems(result: dict) -> list[str]:
    """One line per format that could not be measured or failed verification."""
    lines = [f"{entry['file']}: {entry.get('error') or entry['problem']}" for entry in result["formats"]
             if entry.get("error") or entry["problem"]]
    return lines + [f"{entry['file']} in {runtime['runtime']}: {runtime['error']}" for entry in result["formats"]
                    for runtime in entry.get("runtimes", []) if "error" in runtime and "error" not in entry]


def write_results(result: dict, out_dir: str | Path) -> list[Path]:
    """bench.json, bench.md and (with matplotlib) bench.png in ``out_dir``."""
    out_dir = Path(out_dir)
    written = [out_dir / "bench.json", out_dir / "bench.md"]
    write_text_atomic(written[0], json.dumps(result, indent=1) + "\n")
    write_text_atomic(written[1], _markdown(result))
    if importlib.util.find_spec("matplotlib") is None:
        warnings.warn("matplotlib is not installed: no bench.png (pip install matplotlib)", stacklevel=2)
        return written
    written.append(out_dir / "bench.png")
    _chart(result, written[2])
    return written


def _machine_line(machine: dict) -> str:
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    return f"{machine['cpu']}, {machine['cores']} cores, {machine['system']}, Python {machine['python']}; {packages}"


def _markdown(result: dict) -> str:
    settings, data = result["settings"], result["evaluation_set"]
    header, rows = table(result)
    lines = [
        f"# Benchmark of {result['model_dir']}", "",
        f"Machine: {_machine_line(result['machine'])}.", "",
        f"Latency: `Detector.detect` (preprocess, inference, NMS) on the first {settings['latency_images']} images "
        f"in turn, median and 90th percentile of {settings['runs']} runs after {settings['warmup']} warm-up runs, "
        f"device profile {settings['device']} ({settings['threads']} threads); "
        "each format in its own process (load s includes importing its libraries; peak MB is that process's "
        "peak resident memory).", "",
        f"mAP and parity: {data['images']} images of {data['source']}, detections scoring at least "
        f"{settings['threshold']}; differences are against the SavedModel's raw outputs (scores activated).", "",
        markdown_table(header, rows), "",
        recommendation_line(result), "",
    ]
    lines += [f"- {line}" for line in problems(result)]
    return "\n".join(lines) + "\n"


def _chart(result: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # not pyplot: no GUI backend, no global state

    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    chosen = result.get("recommended") or {}
    points = [(runtime["latency_ms"]["median"], entry["metrics"]["mAP"], f"{entry['file']} ({runtime['runtime']})",
               (chosen.get("file"), chosen.get("runtime")) == (entry["file"], runtime["runtime"]))
              for entry in result["formats"] if entry["metrics"]
              for runtime in entry.get("runtimes") or [entry] if "latency_ms" in runtime]
    for latency, value, name, recommended in points:
        axes.scatter(latency, value, marker="*" if recommended else "o", s=120 if recommended else 30)
        axes.annotate(name + (" - recommended" if recommended else ""), (latency, value), textcoords="offset points",
                      xytext=(5, 4), fontsize=8)
    if not points:
        axes.text(0.5, 0.5, "no format has both a latency and an mAP", ha="center", transform=axes.transAxes)
    # Both axes from 0, so close results look close.
    axes.set_xlim(left=0)
    axes.set_ylim(0, 1.15 * max((point[1] for point in points), default=0) or 1)
    axes.set_xlabel("latency, median (ms)")
    axes.set_ylabel("COCO mAP@[.5:.95]")
    axes.set_title(f"{result['model_dir']} on {result['machine']['cpu']}", fontsize=10)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
