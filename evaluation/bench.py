"""``ssdkit bench``: what each exported format in a folder costs and keeps.

Cost (file size, load time, latency, throughput, peak memory) is measured by
``measure.py`` in a fresh process per format, one after the other, so no
format inherits another's memory or warm caches. What a format keeps (mAP,
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
from ssdkit.fileio import atomic_path, write_text_atomic
from ssdkit.runtime import limits
from ssdkit.tables import markdown_table

from .evaluate import DEFAULT_THRESHOLD, load_dataset
from .measure import DEFAULT_RUNS, DEFAULT_WARMUP, LATENCY_IMAGES, machine_info

HEADER = ("format", "precision", "size MB", "load s", "latency ms median / p90", "images/s", "peak MB", *PARITY_HEADER)

log = logging.getLogger(__name__)


def measure_in_subprocess(path: Path, data: str | None, runs: int, device: str) -> dict:
    """``measure.py --one path`` in a new interpreter: its JSON, or ``{"error": ...}``."""
    command = [sys.executable, "-m", "ssdkit.evaluation.measure", "--one", str(path), "--runs", str(runs),
               "--device", device, *(["--data", str(data)] if data else [])]
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
    measured = {}
    for artifact in artifacts:
        log.info(f"measuring {artifact.name}")
        measured[artifact.name] = measure_in_subprocess(artifact.path, data, runs, device)
    log.info("verifying every format against the SavedModel")
    rows = verify(artifacts, dataset, images, threshold)
    return {
        "model_dir": str(model_dir),
        "settings": {"device": device, "threads": profile.threads, "runs": runs,
                     "warmup": DEFAULT_WARMUP, "latency_images": min(LATENCY_IMAGES, len(dataset.records)),
                     "threshold": threshold},
        "evaluation_set": {"source": str(dataset.source), "images": len(dataset.records[:images])},
        "machine": machine_info(),
        "formats": [{**dataclasses.asdict(row), **measured[row.file]} for row in rows],
    }


def table(result: dict) -> tuple[tuple[str, ...], list[list[str]]]:
    """The header and the rows of the results table, for the terminal and bench.md."""
    rows = []
    for entry in result["formats"]:
        if "error" in entry:
            cost = ["-"] * 5
        else:
            latency = entry["latency_ms"]
            cost = [f"{entry['size_mb']:.2f}", f"{entry['load_s']:.2f}", f"{latency['median']:.1f} / {latency['p90']:.1f}",
                    f"{entry['throughput_ips']:.1f}", f"{entry['peak_rss_mb']:.0f}"]
        row = Row(**{field.name: entry[field.name] for field in dataclasses.fields(Row)})
        rows.append([entry["file"], entry["precision"], *cost, *parity_cells(row)])
    return HEADER, rows


def problems(result: dict) -> list[str]:
    """One line per format that could not be measured or failed verification."""
    return [f"{entry['file']}: {entry.get('error') or entry['problem']}" for entry in result["formats"]
            if entry.get("error") or entry["problem"]]


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
    ]
    lines += [f"- {line}" for line in problems(result)]
    return "\n".join(lines) + "\n"


def _chart(result: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # not pyplot: no GUI backend, no global state

    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    points = [(entry["latency_ms"]["median"], entry["metrics"]["mAP"], entry["file"])
              for entry in result["formats"] if "latency_ms" in entry and entry["metrics"]]
    for latency, value, name in points:
        axes.scatter(latency, value)
        axes.annotate(name, (latency, value), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if not points:
        axes.text(0.5, 0.5, "no format has both a latency and an mAP", ha="center", transform=axes.transAxes)
    # Both axes from 0, so close results look close.
    axes.set_xlim(left=0)
    axes.set_ylim(0, 1.15 * max((value for _, value, _ in points), default=0) or 1)
    axes.set_xlabel("latency, median (ms)")
    axes.set_ylabel("COCO mAP@[.5:.95]")
    axes.set_title(f"{result['model_dir']} on {result['machine']['cpu']}", fontsize=10)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
