"""Atomic writes: stage beside the target, flush to disk, rename into place.

Every file or folder fusecube writes goes through :func:`atomic_path`: the writer gets a
temporary name in the target's folder (``.<stem>.tmp-<token><suffix>``: hidden, the
target's extension kept for writers that choose a format by it), the result is fsynced,
then renamed onto the target, so a reader sees the old version or the new one, never half
of one, and a failure leaves the old one untouched.

This module is also the one place that decides what may be written (the output rule):
every command that writes an output calls :func:`prepare_output` before any work. A file
replaces a file; a folder replaces an empty folder or one fusecube made of the same kind (a
zarr store, a patch set, quality diagnostics, a run or batch folder: it holds that kind's
marker, :data:`KIND_MARKERS`); the place must be writable. Anything else is refused with an
:class:`~fusecube.errors.OutputWriteError` naming the path and the fix.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from fusecube.errors import OutputWriteError

#: What an output is: a file, or a folder of one kind.
OutputKind = Literal["file", "store", "patches", "quality", "run", "batch", "scene", "paddy"]
#: Per kind of folder output, the files whose presence marks a folder as one fusecube wrote:
#: a zarr v3 store, an ML patch set, quality diagnostics, a finished run, a batch, a synthetic
#: scene (``fusecube synth``: its cube, truth or blocks) and paddy products (``fusecube paddy``).
KIND_MARKERS: dict[str, tuple[str, ...]] = {
    "store": ("zarr.json",), "patches": ("metadata.json",), "quality": ("quality.json",),
    "run": ("run.json",), "batch": ("batch.json",),
    "scene": ("cube.zarr/zarr.json", "truth.zarr/zarr.json", "blocks.gpkg"),
    "paddy": ("paddy_summary.json",)}
#: Markers of the folders an atomic write may replace by default (a store, a patch set,
#: diagnostics); a run folder is replaced only by a run (``replace_path(..., markers=...)``).
OWNED_MARKERS = ("zarr.json", "metadata.json", "quality.json")
#: Names of what an interrupted atomic write leaves behind (``.<stem>.tmp-<token>...``).
LEFTOVER = re.compile(r"^\..+\.(tmp|old)-[0-9a-f]{8}")


def staging_path(target: Path, tag: str = "tmp") -> Path:
    """A fresh hidden name beside ``target``: ``.<stem>.<tag>-<token><suffix>``."""
    token = uuid.uuid4().hex[:8]
    return target.with_name(f".{target.stem}.{tag}-{token}{target.suffix}")


def fsync_path(path: Path) -> None:
    """Flush one file or folder entry to disk."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """Flush a file, or every file and folder below (and including) a folder."""
    if not path.is_dir():
        fsync_path(path)
        return
    for root, _dirs, files in os.walk(path):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(Path(root))


def _owned(folder: Path, markers: Sequence[str]) -> bool:
    return not any(folder.iterdir()) or any((folder / m).is_file() for m in markers)


def check_replaceable(target: Path, *, folder: bool,
                      markers: Sequence[str] = OWNED_MARKERS) -> None:
    """Refuse to replace what fusecube must not overwrite.

    Args:
        target: The path about to be written.
        folder: Whether the new content is a folder (else a file).
        markers: Files of which a non-empty folder must hold one to be replaced.

    Raises:
        OutputWriteError: ``target`` is a folder and the new content a file, or ``target`` is a
            file and the new content a folder, or ``target`` is a non-empty folder without any
            of ``markers`` (fusecube did not make it).
    """
    if not target.exists() and not target.is_symlink():
        return
    if target.is_dir() and not folder:
        raise OutputWriteError(f"{target} is a folder; refusing to replace it with a file. "
                               "Choose another output path.")
    if folder and not target.is_dir():
        raise OutputWriteError(f"{target} is a file; refusing to replace it with a folder. "
                               "Choose another output path or remove the file.")
    if folder and not _owned(target, markers):
        raise OutputWriteError(f"{target} is a folder fusecube did not write (it holds none of "
                               f"{', '.join(markers)}); refusing to replace it. Choose "
                               "another output path or empty the folder.")


def _writable(folder: Path, target: Path) -> None:
    """Create and remove a probe file in ``folder``: the only test that holds for every user."""
    probe = folder / f".fusecube-probe-{uuid.uuid4().hex[:8]}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise OutputWriteError(f"Cannot write {target}: {folder} is not writable "
                               f"({exc.strerror or exc}). Choose another output path or make "
                               "the folder writable.") from exc
    probe.unlink(missing_ok=True)


def prepare_output(target: str | os.PathLike, *, kind: OutputKind) -> Path:
    """The output rule: check, before any work, that ``target`` may be written as ``kind``.

    Every command that writes an output calls this first, so a refusal costs nothing and
    changes nothing. Creates nothing: writers create the target (through :func:`atomic_path`
    or a run's staging folder) once their work is done.

    Args:
        target: The file or folder to write.
        kind: ``"file"``, or the kind of folder (:data:`KIND_MARKERS`): ``store``, ``patches``,
            ``quality``, ``run``, ``batch``, ``scene``, ``paddy``.

    Returns:
        ``target`` as an absolute path.

    Raises:
        OutputWriteError: ``target`` is a file where a folder is to be written (or a folder
            where a file is), a non-empty folder fusecube did not write (no marker of
            ``kind``), lies under a file, or its folder is not writable.
    """
    target = Path(target).expanduser().absolute()
    markers = KIND_MARKERS.get(kind, OWNED_MARKERS)
    check_replaceable(target, folder=kind != "file", markers=markers)
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputWriteError(f"Cannot write {target}: {parent} is a file, not a folder. "
                               "Choose another output path.")
    _writable(parent, target)
    if target.is_dir():  # some outputs (a batch) are written inside the folder itself
        _writable(target, target)
    return target


def remove_leftovers(folder: Path) -> list[str]:
    """Remove what interrupted atomic writes left in ``folder`` and its sub-folders.

    Staged copies (``.<stem>.tmp-<token>``) and set-aside previous versions
    (``.<stem>.old-<token>``) are removed; zarr stores are not searched (their chunks are
    written in place). Returns the names removed.
    """
    removed = []
    for root, dirs, files in os.walk(folder):
        for name in [*files, *dirs]:
            if LEFTOVER.match(name):
                _remove(Path(root) / name)
                removed.append(name)
        dirs[:] = [d for d in dirs if not LEFTOVER.match(d) and not d.endswith(".zarr")
                   and not d.startswith(".result.zarr")]
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def replace_path(src: Path, dst: Path, *, markers: Sequence[str] = OWNED_MARKERS) -> None:
    """Move ``src`` onto ``dst`` (a file or folder), replacing what :func:`check_replaceable` allows.

    A file replaces a file in one atomic rename. A folder cannot be renamed over a non-empty
    one, so a previous folder is first renamed aside, the new one renamed in, and the old one
    removed. The parent folder is fsynced so the rename survives a crash. A replaced
    non-empty folder must hold one of ``markers`` (a run's staging folder replaces a run
    folder: ``markers=KIND_MARKERS["run"]``).
    """
    src, dst = Path(src), Path(dst)
    folder = src.is_dir()
    check_replaceable(dst, folder=folder, markers=markers)
    if folder and dst.exists():
        old = staging_path(dst, "old")
        os.replace(dst, old)
        try:
            os.replace(src, dst)
        except OSError:
            os.replace(old, dst)  # put the previous one back
            raise
        _remove(old)
    else:
        os.replace(src, dst)
    fsync_path(dst.parent)


@contextmanager
def atomic_path(target: str | os.PathLike, *, folder: bool = False) -> Iterator[Path]:
    """Write ``target`` under a temporary name beside it; swap it in when the block succeeds.

    The temporary path does not exist when it is handed out: the writer creates it (a file,
    or with ``folder=True`` a folder or zarr store). On success it is fsynced and renamed onto
    ``target``; on any error it is removed and ``target`` is left as it was.

    Args:
        target: The file or folder to write; its parent folder is created.
        folder: The content is a folder (checked against ``target`` before any work).

    Yields:
        The temporary path to write.

    Raises:
        OutputWriteError: ``target`` may not be replaced (:func:`check_replaceable`).
    """
    target = Path(target)
    check_replaceable(target, folder=folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = staging_path(target)
    try:
        yield staged
        fsync_tree(staged)
        replace_path(staged, target)
    finally:
        if staged.exists() or staged.is_symlink():
            _remove(staged)


def write_text_atomic(target: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write a text file atomically (see :func:`atomic_path`).

    Returns:
        The path written.
    """
    target = Path(target)
    with atomic_path(target) as staged:
        staged.write_text(text, encoding=encoding)
    return target
