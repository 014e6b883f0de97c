"""Atomic file and folder writes: an artifact is either complete or absent."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yields a temporary path beside ``target`` and renames it onto
    ``target`` only if the block succeeds; on any error it is removed.

    The temporary path is in the target's folder so the final rename never
    crosses file systems. With ``directory=True`` the yielded path is an
    empty folder and an existing target folder is replaced.
    """
    target = Path(target)
    parent = target.parent
    created = _make_parents(parent)
    prefix = f".{target.name}.tmp-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=parent)
        os.close(fd)
        tmp = Path(name)
    # mkdtemp/mkstemp create private (0700/0600) paths; give the artifact the
    # permissions a plain mkdir/open would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)
    try:
        yield tmp
        if directory and target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        _remove_empty(parent, created)
        raise


def check_writable_folder(folder: str | os.PathLike) -> None:
    """Raises a one-line OSError unless ``folder`` exists as a writable folder
    or can be created, without creating anything (to fail before long work)."""
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{folder}: cannot create the output folder, {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{folder}: output folder is not writable ({existing} is read-only)")


def check_not_inputs(outputs: dict[str, str | os.PathLike | None], inputs: Iterable[str | os.PathLike]) -> None:
    """Raises a one-line ``FileExistsError`` if an output (option name ->
    path, ``None``: not given) is one of ``inputs``: an output never replaces
    what the command reads (``--video clip.mp4`` for ``--source clip.mp4``)."""
    existing = [Path(p) for p in inputs if Path(p).exists()]
    for option, output in outputs.items():
        if output is None or not Path(output).exists():
            continue
        for source in existing:
            if os.path.samefile(output, source):
                raise FileExistsError(f"{option} {output} is the input {source}: it would be overwritten; "
                                      "write the output elsewhere")


def _make_parents(folder: Path) -> Path | None:
    """Creates ``folder`` and missing ancestors; returns the topmost one created."""
    check_writable_folder(folder)
    top = None
    for ancestor in reversed([folder, *folder.parents]):
        if not ancestor.exists():
            top = top or ancestor
    folder.mkdir(parents=True, exist_ok=True)
    return top


def _remove_empty(folder: Path, top: Path | None) -> None:
    """Undoes ``_make_parents`` for folders that are still empty."""
    if top is None:
        return
    for path in [folder, *folder.parents]:
        try:
            path.rmdir()
        except OSError:
            return
        if path == top:
            return


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
