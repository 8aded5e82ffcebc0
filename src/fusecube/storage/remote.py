"""Run outputs at any fsspec URL (object stores, memory): computed locally, copied manifest last.

A run whose ``out`` is a URL such as ``s3://bucket/demak`` or ``memory://runs/demak`` runs as
usual in a local working folder (one per URL, so ``--resume`` finds it again), then
:meth:`RemoteOutput.publish` copies the finished run folder there. Object stores cannot rename
a folder, so the local output rule's swap (:func:`~fusecube.storage.atomic.replace_path`) is
replaced by its documented fallback:

1. every file is uploaded under a staging prefix beside the target (``.<name>.run-<id>/``),
   the manifest last: an interrupted upload leaves the previous output untouched;
2. the previous output's ``manifest.json`` is deleted (from here on readers see no finished
   run), the staged files are copied over the target, files of the previous run that the new
   one does not have are deleted, and the manifest is copied last;
3. the staging prefix is deleted.

A target holding a ``manifest.json`` therefore holds one complete run, whose file list, sizes
and SHA-256 sums the manifest gives. ``file://`` URLs are plain folders (the local rule with
its atomic rename applies). Zarr stores are folders of files and are copied as such; open one
with ``xr.open_zarr(fsspec.get_mapper(url + "/result.zarr"))``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from fusecube.errors import OutputWriteError

log = logging.getLogger(__name__)

#: ``scheme://`` at the start of a string (two letters at least: ``C:/`` is a Windows path).
URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]+)://")
#: The manifest's name (see :mod:`fusecube.storage.run_manifest`), copied last.
MANIFEST = "manifest.json"
#: The marker of a finished run folder (refusing to overwrite anything else).
RUN_MARKER = "run.json"


def as_output(value):
    """An output as a run keeps it: a ``Path`` for a local folder, the URL string otherwise.

    ``file:///data/out`` becomes ``Path("/data/out")``; ``memory://x`` and ``s3://b/x`` stay
    strings (``Path`` would fold their ``//``).
    """
    if isinstance(value, str):
        match = URL.match(value)
        if match is None:
            return Path(value)
        if match["scheme"].lower() == "file":
            return Path(unquote(urlparse(value).path))
    return value


def default_workdir(url: str) -> Path:
    """The local working folder of runs into ``url`` (``$FUSECUBE_REMOTE_WORK`` or the cache)."""
    base = os.environ.get("FUSECUBE_REMOTE_WORK") or (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fusecube" / "remote")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", url.split("://", 1)[1]).strip("_")[-60:] or "out"
    return Path(base) / f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def remote_output(out) -> RemoteOutput | None:
    """The :class:`RemoteOutput` for an fsspec URL, or ``None`` for a local folder.

    Raises:
        OutputWriteError: fsspec does not know the URL's protocol, or its driver is missing,
            or the target holds files of something that is not a fusecube run.
    """
    out = as_output(out)
    if not isinstance(out, str):
        return None
    target = RemoteOutput(out.rstrip("/"), default_workdir(out.rstrip("/")))
    target.check()
    return target


@dataclass(frozen=True)
class RemoteOutput:
    """A run's output at an fsspec URL, and the local folder the run is computed in.

    Args:
        url: Where the finished run goes (``s3://bucket/prefix``, ``memory://runs/x``...).
        workdir: The local output folder the run writes (and swaps in) first.
    """

    url: str
    workdir: Path

    def _fs(self):
        try:
            import fsspec
        except ImportError as exc:  # pragma: no cover - fsspec comes with dask
            raise OutputWriteError(f"Cannot write {self.url}: fsspec is not installed "
                                   "(pip install fsspec and the filesystem's package).") from exc
        try:
            return fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as exc:
            raise OutputWriteError(
                f"Cannot write {self.url}: {exc}. Install the filesystem's package (s3fs for "
                "s3://, gcsfs for gs://, adlfs for az://) or give a local folder.") from exc

    def check(self) -> None:
        """The output rule at the URL: nothing there, or a finished fusecube run folder.

        Raises:
            OutputWriteError: The URL is a file, or a folder with files but no ``run.json``.
        """
        fs, root = self._fs()
        if fs.isfile(root):
            raise OutputWriteError(f"{self.url} is a file; refusing to replace it with a run "
                                   "folder. Choose another output URL.")
        if fs.isdir(root) and fs.ls(root, detail=False) and not fs.isfile(f"{root}/{RUN_MARKER}"):
            raise OutputWriteError(f"{self.url} holds files fusecube did not write (no "
                                   f"{RUN_MARKER}); refusing to replace them. Choose another "
                                   "output URL or empty it.")

    def publish(self, result):
        """Copy the finished run folder to the URL (staging prefix, manifest last).

        Args:
            result: The :class:`~fusecube.runner.result.RunResult` of the run in ``workdir``.

        Returns:
            ``result`` (its paths are those of the local copy in ``workdir``).
        """
        self.check()
        fs, root = self._fs()
        local = Path(result.out)
        files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
        if MANIFEST not in files:
            raise OutputWriteError(f"{local} has no {MANIFEST}: the run did not finish, nothing "
                                   f"copied to {self.url}. Resume the run first.")
        files.remove(MANIFEST)
        parent, name = root.rsplit("/", 1) if "/" in root else ("", root)
        staging = f"{parent}/.{name}.run-{result.run_id}" if parent else f".{name}.run-{result.run_id}"
        folders = sorted({rel.rpartition("/")[0] for rel in files} - {""})
        for folder in ["", *folders]:  # a no-op on object stores; local ones need folders
            fs.makedirs(f"{staging}/{folder}".rstrip("/"), exist_ok=True)
        for rel in [*files, MANIFEST]:  # 1. upload beside the target, manifest last
            fs.put_file(str(local / rel), f"{staging}/{rel}")
        old = set()
        if fs.isdir(root):
            old = {p[len(root) + 1:] for p in fs.find(root)}
        if MANIFEST in old:  # 2. from here on the target shows no finished run
            fs.rm_file(f"{root}/{MANIFEST}")
        for folder in ["", *folders]:
            fs.makedirs(f"{root}/{folder}".rstrip("/"), exist_ok=True)
        for rel in files:
            fs.copy(f"{staging}/{rel}", f"{root}/{rel}")
        for rel in sorted(old - set(files) - {MANIFEST}):
            fs.rm_file(f"{root}/{rel}")
        fs.copy(f"{staging}/{MANIFEST}", f"{root}/{MANIFEST}")
        fs.rm(staging, recursive=True)  # 3.
        log.info("run %s copied to %s (%d files)", result.run_id, self.url, len(files) + 1)
        return result
