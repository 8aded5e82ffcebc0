"""Checking a patch set against its metadata: files, shapes, dtypes, counts, NaN and hashes."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusecube.errors import PatchFileError
from fusecube.ml.patches.patch_set import PatchSet, as_patch_set
from fusecube.storage.manifest import file_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a patch set."""

    kind: str
    """``missing``, ``unreadable``, ``shape``, ``dtype``, ``count``, ``nan``, ``hash``, ``table``."""
    file: str
    """The shard (or ``metadata.json``) concerned."""
    message: str
    """What is wrong and what to do."""


@dataclass
class VerifyReport:
    """Result of :func:`verify_patch_files`."""

    root: Path
    """The patch set folder."""
    shards_checked: int = 0
    """Number of shards listed in the metadata."""
    problems: list[Problem] = field(default_factory=list)
    """Everything found, in shard order."""

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    def kinds(self) -> set[str]:
        """The kinds of problems found."""
        return {p.kind for p in self.problems}

    def summary(self) -> str:
        """A human-readable report, one line per problem."""
        if self.ok:
            return f"{self.root}: {self.shards_checked} shards OK"
        lines = [f"{self.root}: {len(self.problems)} problem(s) in {self.shards_checked} shards"]
        lines += [f"  [{p.kind}] {p.file}: {p.message}" for p in self.problems]
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        """Raise :class:`PatchFileError` with the summary when something is wrong."""
        if not self.ok:
            raise PatchFileError(self.summary() + "\nExport the patches again.")


def verify_patch_files(metadata: PatchSet | str | os.PathLike, *, check_hash: bool = True,
                       check_nan: bool = True, chunk_size: int = 64) -> VerifyReport:
    """Check a patch set against its metadata: files, shapes, dtypes, counts, NaN, hashes.

    Args:
        metadata: Patch set folder, its ``metadata.json``, or an open :class:`PatchSet`.
        check_hash: Recompute each shard's sha256 (reads every byte).
        check_nan: Scan each shard for NaN (streams through a memory map).
        chunk_size: Patches per NaN-scan step.

    Returns:
        The report; :meth:`VerifyReport.raise_if_failed` turns problems into an error.
    """
    patch_set = as_patch_set(metadata)
    meta = patch_set.meta
    report = VerifyReport(patch_set.root, len(meta["shards"]))
    add = report.problems.append
    patch_shape = list(meta["patch_shape"])
    total = sum(int(s["count"]) for s in meta["shards"])
    if total != int(meta["count"]):
        add(Problem("count", "metadata.json",
                    f"shard counts add up to {total} but count is {meta['count']}"))
    rows = {k: len(v) for k, v in meta["patches"].items()}
    if any(n != int(meta["count"]) for n in rows.values()):
        add(Problem("table", "metadata.json",
                    f"patch table lengths {rows} != count {meta['count']}"))
    for entry in meta["shards"]:
        name, path = entry["file"], patch_set.root / entry["file"]
        if not path.exists():
            add(Problem("missing", name, "file not found"))
            continue
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            add(Problem("unreadable", name, f"not a readable .npy file ({exc})"))
            continue
        if str(arr.dtype) != entry["dtype"] or str(arr.dtype) != meta["dtype"]:
            add(Problem("dtype", name, f"dtype {arr.dtype}, metadata says {entry['dtype']}"))
        if list(arr.shape[1:]) != patch_shape or list(arr.shape) != list(entry["shape"]):
            add(Problem("shape", name, f"shape {tuple(arr.shape)}, metadata says "
                                       f"{tuple(entry['shape'])} (patches {tuple(patch_shape)})"))
        if arr.shape and arr.shape[0] != int(entry["count"]):
            add(Problem("count", name, f"{arr.shape[0]} patches, metadata says {entry['count']}"))
        if check_nan and arr.dtype.kind == "f":
            n_nan = sum(int(np.isnan(arr[i:i + chunk_size]).sum())
                        for i in range(0, arr.shape[0], chunk_size))
            if n_nan:
                add(Problem("nan", name, f"{n_nan} NaN values"))
        del arr
        if check_hash:
            digest = file_sha256(path)
            if digest != entry["sha256"]:
                add(Problem("hash", name, f"sha256 {digest[:12]}..., metadata says "
                                          f"{entry['sha256'][:12]}... (file changed or corrupt)"))
    for p in report.problems:
        log.warning("patch set %s: [%s] %s: %s", patch_set.root, p.kind, p.file, p.message)
    return report
