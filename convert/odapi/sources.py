"""What ``ssdkit import SOURCE`` was given, found on disk.

SOURCE is a TF1 or TF2 OD API model folder or its ``.tar.gz`` as the zoo
ships it, a lone ``frozen_inference_graph.pb`` (or ``tflite_graph.pb``), a
checkpoint prefix (``model.ckpt``, ``ckpt-0``) with its ``pipeline.config``
beside it or one folder up, or a zoo name (``zoo.py`` downloads it). An
archive is unpacked into a temporary folder (members outside it refused) and
removed when the import ends.
"""
from __future__ import annotations

import os
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Source:
    """The files of one OD API model (None: not there)."""

    origin: str
    folder: Path | None = None
    frozen_graph: Path | None = None
    tf1_checkpoint: Path | None = None  # prefix; its .meta beside it when there
    meta_graph: Path | None = None
    tf2_checkpoint: Path | None = None  # prefix
    saved_model: Path | None = None
    pipeline_config: Path | None = None
    label_map: Path | None = None
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def tf_version(self) -> int:
        if self.tf2_checkpoint is not None:
            return 2
        if self.frozen_graph or self.tf1_checkpoint:
            return 1
        if self.saved_model is not None:
            return 2 if (self.saved_model / "variables" / "variables.index").is_file() else 1
        return 1

    def describe(self) -> str:
        parts = [f"{label} {path.name}" for label, path in (
            ("frozen graph", self.frozen_graph), ("TF1 checkpoint", self.tf1_checkpoint),
            ("TF2 checkpoint", self.tf2_checkpoint), ("SavedModel", self.saved_model),
            ("config", self.pipeline_config)) if path is not None]
        return ", ".join(parts) or "nothing importable"

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


def open_source(spec: str | os.PathLike) -> Source:
    """Finds the model files for SOURCE; raises FileNotFoundError/ValueError
    with one line naming what was expected."""
    path = Path(spec)
    if path.is_dir():
        return _from_folder(path, str(spec))
    if path.is_file():
        name = path.name.lower()
        if name.endswith(ARCHIVE_SUFFIXES):
            return _from_archive(path)
        if name.endswith(".pb"):
            source = Source(str(spec), folder=path.parent, frozen_graph=path)
            _add_config(source, path.parent)
            return source
        if name.endswith(".index"):
            return _from_checkpoint(path.with_suffix(""), str(spec))
        if name.endswith(".config"):
            return _from_folder(path.parent, str(spec))
        raise ValueError(f"{path}: expected a model folder, a .tar.gz archive, a frozen graph (.pb), "
                         "a checkpoint prefix or a zoo name")
    if Path(str(spec) + ".index").is_file():
        return _from_checkpoint(path, str(spec))
    raise FileNotFoundError(f"{spec}: no such file or folder (expected a model folder, archive, .pb, "
                            "checkpoint prefix or zoo name)")


def _from_archive(path: Path) -> Source:
    tmp = tempfile.TemporaryDirectory(prefix="ssdkit-import-")
    target = Path(tmp.name)
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    _check_member(path, target, member)
                archive.extractall(target)
        else:
            with tarfile.open(path) as archive:
                members = archive.getmembers()
                for member in members:
                    _check_member(path, target, member.name)
                    if member.issym() or member.islnk():
                        raise ValueError(f"{path}: archive member {member.name} is a link: refused")
                archive.extractall(target, members=members, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        tmp.cleanup()
        raise ValueError(f"{path}: not a complete archive ({exc}); download it again") from None
    except ValueError:
        tmp.cleanup()
        raise
    try:
        source = _from_folder(target, str(path))
    except (ValueError, FileNotFoundError):
        tmp.cleanup()
        raise
    source._tmp = tmp
    return source


def _check_member(archive: Path, target: Path, name: str) -> None:
    resolved = (target / name).resolve()
    if not str(resolved).startswith(str(target.resolve()) + os.sep) and resolved != target.resolve():
        raise ValueError(f"{archive}: archive member {name} points outside the archive: refused")


def _find(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.rglob(pattern), key=lambda p: (len(p.parts), str(p)))
    return found[0] if found else None


def _from_folder(folder: Path, origin: str) -> Source:
    source = Source(origin, folder=folder)
    source.frozen_graph = _find(folder, "frozen_inference_graph.pb") or _find(folder, "tflite_graph.pb")
    index = _find(folder, "model.ckpt*.index")
    if index is not None:
        source.tf1_checkpoint = index.with_suffix("")
        meta = index.with_suffix(".meta")
        source.meta_graph = meta if meta.is_file() else None
    ckpt2 = next((p for p in sorted(folder.rglob("ckpt-*.index"))), None)
    if ckpt2 is not None:
        source.tf2_checkpoint = ckpt2.with_suffix("")
    saved = _find(folder, "saved_model.pb")
    source.saved_model = saved.parent if saved is not None else None
    _add_config(source, folder)
    if not any((source.frozen_graph, source.tf1_checkpoint, source.tf2_checkpoint, source.saved_model)):
        raise FileNotFoundError(f"{origin}: no frozen_inference_graph.pb, model.ckpt.*, checkpoint/ckpt-*.* or "
                                "saved_model/ in it: not a TF OD API model")
    return source


def _from_checkpoint(prefix: Path, origin: str) -> Source:
    from .tf1 import is_object_checkpoint

    source = Source(origin, folder=prefix.parent)
    if is_object_checkpoint(prefix):
        source.tf2_checkpoint = prefix
        folder = prefix.parent.parent if prefix.parent.name == "checkpoint" else prefix.parent
    else:
        source.tf1_checkpoint = prefix
        meta = Path(str(prefix) + ".meta")
        source.meta_graph = meta if meta.is_file() else None
        folder = prefix.parent
    _add_config(source, folder)
    if source.pipeline_config is None:
        raise FileNotFoundError(f"{origin}: a checkpoint needs its pipeline.config beside it (or one folder up)")
    return source


def _add_config(source: Source, folder: Path) -> None:
    for where in (folder, folder.parent):
        config = where / "pipeline.config"
        if config.is_file():
            source.pipeline_config = config
            break
    else:
        found = _find(folder, "pipeline.config") if folder.is_dir() else None
        source.pipeline_config = found
    labels = sorted(folder.rglob("*label_map*.pbtxt")) if folder.is_dir() else []
    source.label_map = labels[0] if labels else None
