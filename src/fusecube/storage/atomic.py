"""Atomic writes: stage beside the target, flush to disk, rename into place.

Every file or folder fusecube writes goes through :func:`atomic_path`: the writer gets a
temporary name in the target's folder (``.<stem>.tmp-<token><suffix>``: hidden, the
target's extension kept for writers that choose a format by it), the result is fsynced,
then renamed onto the target, so a reader sees the old version or the new one, never half
of one, and a failure leaves the old one untouched.

This module is also the one place that decides what may be replaced
(:func:`check_replaceable`): a file replaces a file, a folder replaces a folder that
fusecube made (a zarr store, a patch set, quality diagnostics: it holds one of
:data:`OWNED_MARKERS`) or an empty one. Anything else is refused before any work.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fusecube.errors import OutputWriteError

#: Files whose presence marks a folder as written by fusecube: a zarr v3 store, an ML patch
#: set, a quality-diagnostics folder.
OWNED_MARKERS = ("zarr.json", "metadata.json", "quality.json")


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


def _owned(folder: Path) -> bool:
    return not any(folder.iterdir()) or any((folder / m).is_file() for m in OWNED_MARKERS)


def check_replaceable(target: Path, *, folder: bool) -> None:
    """Refuse to replace what fusecube must not overwrite.

    Args:
        target: The path about to be written.
        folder: Whether the new content is a folder (else a file).

    Raises:
        OutputWriteError: ``target`` is a folder and the new content a file, or ``target`` is a
            file and the new content a folder, or ``target`` is a non-empty folder without any
            of :data:`OWNED_MARKERS` (fusecube did not make it).
    """
    if not target.exists() and not target.is_symlink():
        return
    if target.is_dir() and not folder:
        raise OutputWriteError(f"{target} is a folder; refusing to replace it with a file. "
                               "Choose another output path.")
    if folder and not target.is_dir():
        raise OutputWriteError(f"{target} is a file; refusing to replace it with a folder. "
                               "Choose another output path or remove the file.")
    if folder and not _owned(target):
        raise OutputWriteError(f"{target} is a folder fusecube did not write (it holds none of "
                               f"{', '.join(OWNED_MARKERS)}); refusing to replace it. Choose "
                               "another output path or empty the folder.")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def replace_path(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst`` (a file or folder), replacing what :func:`check_replaceable` allows.

    A file replaces a file in one atomic rename. A folder cannot be renamed over a non-empty
    one, so a previous folder is first renamed aside, the new one renamed in, and the old one
    removed. The parent folder is fsynced so the rename survives a crash.
    """
    src, dst = Path(src), Path(dst)
    folder = src.is_dir()
    check_replaceable(dst, folder=folder)
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
