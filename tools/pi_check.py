"""``make pi-check``: run ssdkit's device runtime on a Raspberry Pi OS userland, without the hardware.

Builds a Debian bookworm arm64 root (what 64-bit Raspberry Pi OS is made of)
from Debian's own packages: python3.11, the distribution's numpy (1.24) and
Pillow, and their dependencies, downloaded with a private apt configuration
and unpacked with ``dpkg -x`` (no root rights, nothing changed on the host).
tflite-runtime's aarch64 wheel and ssdkit (built from this checkout, without
its dependencies: no ai-edge-litert, no numpy 2) go into the root's
``/usr/local/lib/python3.11/dist-packages``, as ``pip install`` would put
them on a Pi. Then, under ``qemu-aarch64-static -L ROOT``:

* ``python3.11 -m ssdkit detect`` runs an int8 model (exported on the host)
  on a test image, and its detections are compared with the host's;
* pytest runs the runtime's and device profiles' tests (those that need
  TensorFlow or OpenCV skip themselves: the root has neither).

Everything is cached under ``~/.cache/ssdkit`` (``--cache``): the root in
``pi-root`` is rebuilt only when this script's package recipe changes or with
``--rebuild``; the model is exported again only when the exporter's source,
the model name or the weights change. Runs on a Debian-family host (apt-get,
dpkg) with the project's venv (``make pi-check`` uses it). Exit code 0 when
everything passed, 1 when a check failed, 2 when the check could not run.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEBIAN_SOURCES = (
    ("http://deb.debian.org/debian", "bookworm bookworm-updates"),
    ("http://deb.debian.org/debian-security", "bookworm-security"),
)
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
DEBIAN_PACKAGES = ("python3.11", "python3-numpy", "python3-pil")
WHEEL_TARGET = ("--platform", "manylinux_2_34_aarch64", "--only-binary=:all:", "--python-version", "3.11",
                "--implementation", "cp")
RUNTIME_WHEELS = ("tflite-runtime==2.14.0",)
TEST_WHEELS = ("pytest>=8", "pytest-timeout>=2.3")
# The recipe of the root: a cached root built from another recipe is rebuilt.
RECIPE = {"sources": DEBIAN_SOURCES, "packages": DEBIAN_PACKAGES, "wheels": RUNTIME_WHEELS + TEST_WHEELS,
          "target": WHEEL_TARGET}
LIBDIR = "usr/lib/aarch64-linux-gnu"
SITE = "usr/local/lib/python3.11/dist-packages"  # where pip puts packages on Raspberry Pi OS
TEST_SITE = "opt/pi-check/pytest"  # pytest stays off the runtime's path
TESTS = ("tests/runtime", "tests/devices")
DESELECTED = {
    "tests/runtime/test_no_tensorflow.py::test_import_runtime_does_not_import_tensorflow":
        "starts sys.executable as a child, which qemu-user cannot exec without binfmt_misc "
        "(the root has no TensorFlow to import anyway)",
}
# detect's score threshold: low, so that even a barely trained model gives
# detections to compare with the host's.
THRESHOLD = 0.1
# Scores are in steps of 1/256 (the uint8 class predictions): tflite-runtime 2.14
# on aarch64 and ai-edge-litert on x86_64 differ by up to 6 steps on a trained ssd_mnv2.
SCORE_TOLERANCE = 0.04
# The packages the exporter runs: a change in them exports the model again.
EXPORT_SOURCES = ("convert", "calibration", "datasets", "evaluation", "runtime", "ssdkit")
PROBE = """\
import json, os, platform, numpy, tflite_runtime
from ssdkit.runtime.backends.tflite import interpreter_module
print(json.dumps({"python": platform.python_version(), "machine": platform.machine(),
                  "libc": os.confstr("CS_GNU_LIBC_VERSION"), "numpy": numpy.__version__, "numpy_path": numpy.__file__,
                  "tflite_runtime": tflite_runtime.__version__, "interpreter": interpreter_module().__name__}))
"""


class CheckError(Exception):
    """A failed check (exit code 1)."""


class SetupError(Exception):
    """The check cannot run here (exit code 2); the message says what to do."""


def log(message: str) -> None:
    print(f"pi-check: {message}", file=sys.stderr, flush=True)


def run(cmd, what: str, **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd`` with its output captured; a failure is a SetupError with the output's tail."""
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise SetupError(f"{what} failed (exit code {result.returncode}):\n{tail}")
    return result


class Apt:
    """apt-get on Debian bookworm arm64 (and the host's architecture, for qemu)
    with its own sources, state and cache: the host's apt setup is not changed."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.archives = folder / "cache" / "archives"
        self.arches: list[str] = []  # arm64 and the host's (for qemu-user-static), known after update()

    @property
    def host_arch(self) -> str:
        return self.arches[-1]

    def options(self) -> list[str]:
        f = self.folder
        settings = {
            "Dir::Etc::sourcelist": f / "sources.list", "Dir::Etc::sourceparts": f / "sources.list.d",
            "Dir::Etc::preferences": f / "preferences", "Dir::Etc::preferencesparts": f / "preferences.d",
            "Dir::State": f / "state", "Dir::State::status": f / "state" / "status", "Dir::Cache": f / "cache",
            "APT::Architecture": "arm64", "APT::Install-Recommends": "false",
            "Debug::NoLocking": "true", "APT::Sandbox::User": "root",
        }
        return [f"-o{key}={value}" for key, value in settings.items()] + \
            [f"-oAPT::Architectures::={arch}" for arch in self.arches]

    def update(self) -> None:
        if self.arches:
            return
        for tool in ("apt-get", "dpkg", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise SetupError(f"{tool} not found: pi-check needs a Debian-family host (Debian, Ubuntu, "
                                 "Raspberry Pi OS) to download Debian's packages")
        if not KEYRING.is_file():
            raise SetupError(f"{KEYRING} is missing: install Debian's archive keys with "
                             "apt-get install debian-archive-keyring")
        host_arch = run(["dpkg", "--print-architecture"], "dpkg --print-architecture").stdout.strip()
        self.arches = list(dict.fromkeys(["arm64", host_arch]))
        for sub in ("sources.list.d", "preferences.d", "state/lists/partial", "cache/archives/partial"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        (self.folder / "state" / "status").touch()
        (self.folder / "sources.list").write_text("".join(
            f"deb [arch={','.join(self.arches)} signed-by={KEYRING}] {uri} {suite} main\n"
            for uri, suites in DEBIAN_SOURCES for suite in suites.split()))
        log("apt-get update (Debian bookworm, arm64)")
        run(["apt-get", *self.options(), "-q", "update"], "apt-get update of Debian bookworm (is deb.debian.org "
            "reachable? apt's proxy settings in /etc/apt/apt.conf.d apply)")

    def download_with_dependencies(self, packages) -> list[Path]:
        """The .deb files of ``packages`` and everything they depend on, for an empty system."""
        self.update()
        shutil.rmtree(self.archives, ignore_errors=True)
        (self.archives / "partial").mkdir(parents=True)
        log(f"downloading {', '.join(packages)} and their dependencies (arm64)")
        run(["apt-get", *self.options(), "-q", "-y", "install", "--download-only", *packages],
            "apt-get install --download-only")
        return sorted(self.archives.glob("*.deb"))

    def download(self, package: str, folder: Path) -> Path:
        self.update()
        run(["apt-get", *self.options(), "-q", "download", package], f"apt-get download {package}", cwd=folder)
        (deb,) = folder.glob("*.deb")
        return deb


def qemu_binary(cache: Path, apt: Apt) -> Path:
    """qemu-aarch64-static from PATH, or taken out of Debian's qemu-user-static package into the cache."""
    found = shutil.which("qemu-aarch64-static")
    if found:
        return Path(found)
    cached = cache / "qemu-aarch64-static"
    if cached.is_file():
        return cached
    apt.update()
    log(f"qemu-aarch64-static is not installed: taking it from Debian's qemu-user-static ({apt.host_arch})")
    partial = cached.with_suffix(".partial")
    with tempfile.TemporaryDirectory() as tmp:
        deb = apt.download(f"qemu-user-static:{apt.host_arch}", Path(tmp))
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as unpack:
            with tarfile.open(fileobj=unpack.stdout, mode="r|") as tar:
                for member in tar:  # read to the end: dpkg-deb fails on a closed pipe
                    if member.name == "./usr/bin/qemu-aarch64-static":
                        partial.write_bytes(tar.extractfile(member).read())
    if unpack.returncode != 0 or not partial.is_file():
        raise SetupError(f"no usr/bin/qemu-aarch64-static could be read from {deb.name}")
    partial.chmod(0o755)
    partial.rename(cached)
    return cached


def pip(*args: str, what: str) -> None:
    run([sys.executable, "-m", "pip", "install", "--quiet", *args], what)


def build_root(root: Path, apt: Apt) -> dict:
    """Debian's packages unpacked into ``root``, with the aarch64 wheels; returns the stamp written last."""
    debs = apt.download_with_dependencies(DEBIAN_PACKAGES)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    log(f"unpacking {len(debs)} Debian packages into {root}")
    for deb in debs:
        run(["dpkg", "-x", deb, root], f"dpkg -x {deb.name}")
    shutil.rmtree(apt.archives)  # a rebuild downloads them again
    # update-alternatives (not run by dpkg -x) links the reference BLAS/LAPACK numpy loads.
    for lib, sub in (("libblas.so.3", "blas"), ("liblapack.so.3", "lapack")):
        link = root / LIBDIR / lib
        if not (root / LIBDIR / sub / lib).is_file():
            raise SetupError(f"{sub}/{lib} is missing from the root: Debian's package layout changed")
        link.symlink_to(f"{sub}/{lib}")
    log(f"adding the aarch64 wheels {', '.join(RUNTIME_WHEELS + TEST_WHEELS)}")
    pip("--target", root / SITE, *WHEEL_TARGET, "--no-deps", *RUNTIME_WHEELS, what="pip install tflite-runtime")
    pip("--target", root / TEST_SITE, *WHEEL_TARGET, *TEST_WHEELS, what="pip install pytest")
    stamp = {"recipe": RECIPE, "debs": [deb.name for deb in debs]}
    (root / ".pi-check.json").write_text(json.dumps(stamp, indent=1))
    return stamp


def cached_root(root: Path) -> dict | None:
    try:
        stamp = json.loads((root / ".pi-check.json").read_text())
    except (OSError, ValueError):
        return None
    return stamp if stamp.get("recipe") == json.loads(json.dumps(RECIPE)) else None


def install_ssdkit(root: Path) -> None:
    """A wheel of this checkout installed into the root without its dependencies. It is built
    from a copy without what .gitignore lists (.venv, build/...): setuptools writes build/ in
    the source folder."""
    ignored = [line.strip().rstrip("/") for line in (REPO / ".gitignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "src"
        shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", *ignored))
        run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", Path(tmp) / "wheel",
             source], "building the ssdkit wheel")
        (wheel,) = (Path(tmp) / "wheel").glob("ssdkit-*.whl")
        for old in (root / SITE).glob("ssdkit-*.dist-info"):
            shutil.rmtree(old)
        pip("--target", root / SITE, "--upgrade", "--no-deps", wheel, what="pip install ssdkit into the root")


def source_digest(folders, extra: bytes) -> str:
    digest = hashlib.sha256(extra)
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def exported_model(cache: Path, model: str, weights: str | None) -> tuple[Path, bool]:
    """The int8 TFLite export of ``model`` in the cache; (path, whether it was cached).
    ``weights`` as ``ssdkit export --weights`` takes it; None: the export's default."""
    weights_id = hashlib.sha256(Path(weights).read_bytes()).hexdigest() if weights and Path(weights).is_file() \
        else str(weights)
    key = source_digest(EXPORT_SOURCES, f"{model}\0{weights_id}".encode())
    folder = cache / "model"
    tflite = folder / f"{model}_int8.tflite"
    if tflite.is_file() and (folder / "key").is_file() and (folder / "key").read_text() == key:
        return tflite, True
    if importlib.util.find_spec("tensorflow") is None:
        raise SetupError(f"exporting the model needs TensorFlow, which {sys.executable} does not have: "
                         "run it in the project's venv (make pi-check)")
    log(f"exporting {model} to int8 TFLite on the host" + (f" (--weights {weights})" if weights else ""))
    shutil.rmtree(folder, ignore_errors=True)
    run([sys.executable, "-m", "ssdkit", "export", "--model", model, "--format", "tflite", "--quant", "int8",
         "--no-report", "--calib-samples", "8", "--out", folder, *(["--weights", weights] if weights else [])],
        f"ssdkit export --model {model}")
    (folder / "key").write_text(key)
    return tflite, False


def validation_image(cache: Path) -> Path:
    """A synthetic-shapes image of the validation split (seed 1), which the demo weights were not trained on."""
    folder = cache / "validation-image"
    if not (folder / "images" / "000000.jpg").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        run([sys.executable, "-m", "ssdkit", "data", "synth", "--out", folder, "--n", "1", "--seed", "1"],
            "ssdkit data synth (the test image)")
    return folder / "images" / "000000.jpg"


class Emulator:
    """Programs of the root run under qemu-user, with the root as their library prefix."""

    def __init__(self, qemu: Path, root: Path, cache: Path):
        self.qemu, self.root, self.cache = qemu, root, cache
        self.env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
                    "PYTHONPYCACHEPREFIX": str(cache / "pycache")}  # no .pyc in the repo or the root

    def python(self, *args, extra_path: str | None = None) -> subprocess.CompletedProcess:
        env = dict(self.env, **({"PYTHONPATH": str(self.root / extra_path)} if extra_path else {}))
        # cwd: the cache, so that `-m` does not put the repo's top-level ssdkit/ on sys.path.
        return subprocess.run([str(self.qemu), "-L", str(self.root), str(self.root / "usr/bin/python3.11"),
                               *map(str, args)], capture_output=True, text=True, env=env, cwd=self.cache)


def _iou(a, b) -> float:
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ih * iw
    return ih * iw / union if union > 0 else float(a == b)


def unmatched(found: list[dict], others: list[dict]) -> list[dict]:
    """The detections in ``found`` with no counterpart in ``others`` (same label, IoU >= 0.9, a score
    within SCORE_TOLERANCE: two TFLite builds round int8 a little differently), less those that such
    rounding can move across the score threshold, or off the end of a list no shorter than ``found``."""
    edge = min((d["score"] for d in others), default=THRESHOLD) if len(others) >= len(found) else THRESHOLD
    left, missing = list(others), []
    for d in sorted(found, key=lambda d: -d["score"]):
        match = next((o for o in left if o["label"] == d["label"] and abs(o["score"] - d["score"]) <= SCORE_TOLERANCE
                      and _iou(o["box"], d["box"]) >= 0.9), None)
        if match is not None:
            left.remove(match)
        elif d["score"] > max(THRESHOLD, edge) + SCORE_TOLERANCE:
            missing.append(d)
    return missing


def run_detect(emulator: Emulator, model: Path, image: Path) -> tuple[dict, dict]:
    """The detect record in the root and on the host (the host's interpreter is ai-edge-litert)."""
    result = emulator.python("-m", "ssdkit", "detect", model, image, "--json", "--threshold", THRESHOLD)
    if result.returncode != 0:
        raise CheckError(f"ssdkit detect failed in the root (exit code {result.returncode}):\n{result.stderr.strip()}")
    emulated = json.loads(result.stdout)
    host = json.loads(run([sys.executable, "-m", "ssdkit", "detect", model, image, "--json", "--threshold", THRESHOLD],
                          "ssdkit detect on the host").stdout)
    return emulated, host


def run_tests(emulator: Emulator) -> tuple[str, Counter, Path]:
    """pytest in the root: (its closing line, skip reasons counted, the log)."""
    args = ["-m", "pytest", "-p", "no:cacheprovider", "--rootdir", REPO, *(REPO / t for t in TESTS)]
    for node in DESELECTED:
        args += ["--deselect", node]
    result = emulator.python(*args, extra_path=TEST_SITE)
    logfile = emulator.cache / "pytest.log"
    logfile.write_text(result.stdout + result.stderr)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0:
        failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))] or lines[-15:]
        raise CheckError("the tests failed in the root:\n" + "\n".join(failed) + f"\n(full log: {logfile})")
    skipped = Counter()
    for line in lines:
        match = re.match(r"SKIPPED \[(\d+)\] [^:]+:\d+: (.*)", line)
        if match:
            skipped[match.group(2)] += int(match.group(1))
    return lines[-1].strip("= "), skipped, logfile


def seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 90 else f"{int(value // 60)} min {value % 60:02.0f} s"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pi_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ssd_mnv2", help="zoo model to export and run (default ssd_mnv2)")
    parser.add_argument("--weights", help="as `ssdkit export --weights` takes it: a checkpoint, or none for an "
                                           "untrained model (default: the export's default, the shipped weights)")
    default_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ssdkit"
    parser.add_argument("--cache", type=Path, default=default_cache, help=f"cache folder (default {default_cache})")
    parser.add_argument("--rebuild", action="store_true", help="download and build the root again")
    args = parser.parse_args(argv)
    start = time.monotonic()
    timings = {}
    root, cache = args.cache / "pi-root", args.cache / "pi-check"
    try:
        if importlib.util.find_spec("ssdkit") is None:
            raise SetupError(f"{sys.executable} has no ssdkit: run pi-check in the project's venv (make pi-check)")
        cache.mkdir(parents=True, exist_ok=True)
        stamp = None if args.rebuild else cached_root(root)
        reused = stamp is not None
        apt = Apt(cache / "apt")
        stamp = stamp or build_root(root, apt)
        qemu = qemu_binary(cache, apt)
        timings["root"] = time.monotonic() - start

        mark = time.monotonic()
        log("installing ssdkit from this checkout into the root")
        install_ssdkit(root)
        model, model_cached = exported_model(cache, args.model, args.weights)
        image = validation_image(cache)
        timings["ssdkit + model"] = time.monotonic() - mark

        emulator = Emulator(qemu, root, cache)
        mark = time.monotonic()
        probe = emulator.python("-c", PROBE)
        if probe.returncode != 0:
            raise CheckError(f"python3.11 does not start in the root under {qemu}:\n{probe.stderr.strip()}")
        versions = json.loads(probe.stdout)
        log(f"running ssdkit detect under qemu ({model.name})")
        emulated, host = run_detect(emulator, model, image)
        timings["detect"] = time.monotonic() - mark

        mark = time.monotonic()
        log(f"running {' and '.join(TESTS)} under qemu")
        closing, skipped, logfile = run_tests(emulator)
        timings["tests"] = time.monotonic() - mark
    except SetupError as exc:
        log(f"error: {exc}")
        return 2
    except CheckError as exc:
        log(f"FAILED: {exc}")
        return 1

    qemu_version = run([qemu, "--version"], "qemu --version").stdout.split("\n")[0]
    found = emulated["detections"]
    differences = [("only emulated", d) for d in unmatched(found, host["detections"])] + \
        [("only on the host", d) for d in unmatched(host["detections"], found)]
    print(f"Raspberry Pi OS check: Debian bookworm arm64 under {qemu_version}")
    print(f"  root       {root} ({'reused' if reused else 'built'}: {len(stamp['debs'])} Debian packages "
          f"+ {', '.join(RUNTIME_WHEELS)})")
    print(f"  emulated   {versions['machine']}, {versions['libc']}, Python {versions['python']}, "
          f"numpy {versions['numpy']} ({versions['numpy_path'].replace(str(root), '')}), "
          f"tflite-runtime {versions['tflite_runtime']} (interpreter: {versions['interpreter']})")
    weights = f"--weights {args.weights}" if args.weights else "default weights"
    print(f"  detect     {model.name} ({weights}{', cached' if model_cached else ''}) on {image.name}: "
          f"{len(found)} detections, "
          f"inference {emulated['timings_ms']['inference']:.0f} ms emulated "
          f"({host['timings_ms']['inference']:.0f} ms on the host)")
    for d in found[:5]:
        print(f"             {d['label']} {d['score']:.2f} box {d['box']}")
    if len(found) > 5:
        print(f"             ... and {len(found) - 5} more")
    print(f"  vs host    {len(found)} vs {len(host['detections'])} detections on the host ({platform.machine()}, "
          f"ai-edge-litert): " + (f"{len(differences)} without a counterpart" if differences else
                                  f"the same within int8 rounding (IoU >= 0.9, score within {SCORE_TOLERANCE})"))
    for side, d in differences:
        print(f"             {side}: {d['label']} {d['score']:.2f} box {d['box']}")
    print(f"  tests      {closing} (log: {logfile})")
    for reason, count in skipped.most_common():
        print(f"             skipped {count}: {reason}")
    for node, reason in DESELECTED.items():
        print(f"             deselected {node.split('::')[-1]}: {reason}")
    print(f"  time       {seconds(time.monotonic() - start)} ("
          + ", ".join(f"{name} {seconds(value)}" for name, value in timings.items()) + ")")
    if differences:
        log("FAILED: the emulated detections differ from the host's")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
