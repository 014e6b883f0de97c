"""What an export folder already holds, so an export never leaves another
model's files beside its own and never overwrites a file ssdkit did not write.

Files of the model being exported stay: ``make all`` writes the SavedModel,
TFLite and ONNX into one folder, int8 beside fp32, in three runs. Files of
another model would be wrong beside the new ones (``ssdkit verify`` would
compare a 90-class ONNX with a 3-class SavedModel): the export refuses to
start, naming them, unless ``force``; with ``force`` it removes them (each
renamed away first, then deleted, and named on stderr) once the new
SavedModel is in place.

"Another model" is judged twice. Before anything is built or written, by
the spec each artifact carries (model, classes, input size, anchors, coder,
preprocessing; not the NMS settings, which each file may set itself). Then,
when the new SavedModel has been written beside the old one, by the weights:
every export writes ``saved_model/`` first, so the old SavedModel's variables
stand for the model the other files were made from (identical weights give
byte-identical variables, so the same model exported again compares equal).

Only files ssdkit writes are considered: ``saved_model/`` with an ssdkit
spec, ``.tflite`` / ``.onnx`` files with one embedded, and the reports made
from them. A file at a name this export may write that ssdkit did not write
(a ``saved_model/`` without a spec, ``report.md`` in a folder that is not an
export) blocks the export the same way; anything else in the folder is the
user's and is never touched.
"""
from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ssdkit.fileio import atomic_path
from ssdkit.runtime import model_files
from ssdkit.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

# Written from the model files: the quantization reports (and their Model
# Explorer node data), the Edge TPU report and compiler log, `ssdkit bench`'s
# results (MODEL_DIR is its default --out).
REPORT_PATTERNS = ("report.json", "report.md", "onnx_report.json", "onnx_report.md", "*.node_data.json",
                   "*_edgetpu_report.md", "*_edgetpu.log", "bench.json", "bench.md", "bench.png")
MODEL_SUFFIXES = (".tflite", ".onnx")
FOREIGN = "not written by ssdkit"
_LISTED = 4  # files named in the refusal before "and N more"


@dataclass(frozen=True)
class Blocker:
    """A file in the way of the export, and why."""

    path: Path
    reason: str

    @property
    def name(self) -> str:
        return self.path.name + ("/" if self.path.is_dir() else "")


class ExportFolder:
    """The export folder ``folder`` before ``spec``'s model is written into it.

    ``check`` (at once) and ``put_saved_model`` (when the exporter is ready to
    write) raise ``FileExistsError`` naming what is in the way, unless
    ``force``; with ``force`` the blockers are removed after the new
    SavedModel is in place."""

    def __init__(self, folder: str | os.PathLike, spec: ModelSpec, force: bool = False):
        self.folder, self.spec, self.force = Path(folder), spec, force
        self.blockers: list[Blocker] = []
        self._ours: list[Path] = []  # ssdkit model files of this spec
        self._reports: list[Path] = []
        self._old_saved_model: Path | None = None  # ours, of this spec: its weights decide the rest
        if self.folder.is_dir():
            self._scan()

    def _scan(self) -> None:
        for path in sorted(self.folder.iterdir()):
            if path.name.startswith("."):
                continue  # temporary files of an interrupted write
            if path.name == model_files.SAVEDMODEL_FOLDER or (path.is_file() and path.suffix.lower() in MODEL_SUFFIXES):
                self._judge_model(path)
            elif path.is_file() and any(fnmatch.fnmatch(path.name, p) for p in REPORT_PATTERNS):
                self._reports.append(path)
        others = any(b.reason != FOREIGN for b in self.blockers)
        if self._reports and (others or not (self._ours or self._old_saved_model)):
            # Reports beside another model's files, or in a folder with no export to come from.
            reason = "a report of another model" if others else FOREIGN
            self.blockers += [Blocker(path, reason) for path in self._reports]
            self._reports = []

    def _judge_model(self, path: Path) -> None:
        spec = _embedded_spec(path)
        if spec is None:
            if path.name == model_files.SAVEDMODEL_FOLDER or path.name.startswith(f"{self.spec.name}_"):
                self.blockers.append(Blocker(path, FOREIGN))  # this export may write that name
            return
        difference = spec_difference(spec, self.spec)
        if difference:
            self.blockers.append(Blocker(path, difference))
        elif path.name == model_files.SAVEDMODEL_FOLDER:
            self._old_saved_model = path
        else:
            self._ours.append(path)

    def check(self) -> None:
        """Raises ``FileExistsError`` if files of another model are in the
        folder (by spec), unless ``force``. Cheap: run it before building."""
        if self.blockers and not self.force:
            raise FileExistsError(self._refusal())

    def put_saved_model(self, write: Callable[[Path], Path]) -> Path:
        """Writes the SavedModel with ``write(target)`` beside the folder's
        current one, compares their weights, and puts it in place (or raises,
        leaving the folder as it was). Returns ``folder/saved_model``."""
        target = self.folder / model_files.SAVEDMODEL_FOLDER
        with atomic_path(target, directory=True) as staged:
            write(staged)
            old = self._old_saved_model
            if old is not None and weights_digest(old) != weights_digest(staged):
                self.blockers += [Blocker(path, "exported from other weights") for path in [old, *self._ours]]
                self.blockers += [Blocker(path, "a report of another model") for path in self._reports]
                self._ours, self._reports, self._old_saved_model = [], [], None
            self.check()
            replaced = [b for b in self.blockers if b.path == target]
        for blocker in replaced:
            _report(f"replaced {blocker.path} ({blocker.reason})")
        self._remove_blockers()
        return target

    def _remove_blockers(self) -> None:
        target = self.folder / model_files.SAVEDMODEL_FOLDER
        for blocker in self.blockers:
            if blocker.path == target or not blocker.path.exists():
                continue
            _remove(blocker.path)
            _report(f"removed {blocker.path} ({blocker.reason})")
        self.blockers = []

    def _refusal(self) -> str:
        listed = ", ".join(f"{b.name} ({b.reason})" for b in self.blockers[:_LISTED])
        more = f" and {len(self.blockers) - _LISTED} more" if len(self.blockers) > _LISTED else ""
        return (f"{self.folder}: holds files this export would leave beside another model's or overwrite: "
                f"{listed}{more}; remove them, choose another --out, or pass --force to replace them")


def spec_difference(old: ModelSpec, new: ModelSpec) -> str | None:
    """How ``old`` differs from ``new`` as a model, in a few words, or None.
    The NMS settings and output roles are per file, not per model: ignored."""
    if old.name != new.name:
        return f"model {old.name}, not {new.name}"
    if len(old.labels) != len(new.labels):
        return f"{len(old.labels)} classes, not {len(new.labels)}"
    if old.labels != new.labels:
        return "other class names"
    if old.input_size != new.input_size:
        return f"input {old.input_size[0]}x{old.input_size[1]}, not {new.input_size[0]}x{new.input_size[1]}"
    for field in ("preprocessing", "anchors", "feature_map_shapes", "box_coder"):
        if getattr(old, field) != getattr(new, field):
            return f"other {field.replace('_', ' ')}"
    if old.postprocessing.score_activation != new.postprocessing.score_activation:
        return "other score activation"
    return None


def weights_digest(saved_model: Path) -> str:
    """SHA-256 of a SavedModel's variables (the same weights give the same bytes)."""
    digest = hashlib.sha256()
    for path in sorted((Path(saved_model) / "variables").glob("*")):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _embedded_spec(path: Path) -> ModelSpec | None:
    """The ssdkit spec embedded in an artifact (not a sidecar: a third-party
    model with its own spec file is the user's), or None."""
    try:
        text = model_files.embedded_spec_text(path)
        return ModelSpec.from_json(text) if text is not None else None
    except Exception:  # unreadable, or not a model at all: not ours to judge
        return None


def _remove(path: Path) -> None:
    """Renames ``path`` away, then deletes it: the name is gone in one step."""
    trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.removed-", dir=path.parent))
    os.replace(path, trash / path.name)
    shutil.rmtree(trash, ignore_errors=True)


def _report(message: str) -> None:
    log.warning(message)

