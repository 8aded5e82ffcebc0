"""Store manifests: a SHA-256 per file of a zarr store, recorded beside it and checked later.

The manifest lives beside the store (``cube.zarr.manifest.json``; zarr warns about foreign
files inside a store). :func:`verify_checksums` names the changed, missing and extra files;
:func:`dataset_manifest` gives the content hash of a set of stores that training runs record
with each checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from fusecube.errors import InputFileError, IntegrityError

#: Suffix of the file beside a store holding its checksums and statistics.
MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_VERSION = 1


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(store: str | os.PathLike) -> Path:
    """Where the manifest of ``store`` lives: ``<store>.manifest.json`` beside it."""
    store = Path(store)
    return store.with_name(store.name + MANIFEST_SUFFIX)


def store_checksums(store: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of every file of a zarr store (relative POSIX path → hex)."""
    store = Path(store)
    return {p.relative_to(store).as_posix(): file_sha256(p)
            for p in sorted(store.rglob("*")) if p.is_file()}


def checksums_digest(checksums: Mapping[str, str]) -> str:
    """One SHA-256 over a store's per-file checksums (order-independent)."""
    text = "\n".join(f"{k} {v}" for k, v in sorted(checksums.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def read_manifest(store: str | os.PathLike) -> dict:
    """The manifest of a converted store (raises when it has none)."""
    path = manifest_path(store)
    if not path.exists():
        raise IntegrityError(f"{store} has no manifest {path.name} beside it; it was not written by "
                             "`fusecube convert` (or the manifest was lost). "
                             f"Convert it: fusecube convert {store} --out NEW.zarr")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise IntegrityError(f"{path} is not valid JSON ({exc}); convert the input again.") from exc


def verify_checksums(store: str | os.PathLike) -> dict:
    """Check every file of a store against the SHA-256 its manifest records.

    Returns:
        The manifest (when every file matches).

    Raises:
        IntegrityError: Naming the missing, extra or changed files.
    """
    manifest = read_manifest(store)
    found = store_checksums(store)
    recorded = manifest["files"]
    changed = sorted(k for k in recorded.keys() & found.keys() if recorded[k] != found[k])
    missing = sorted(recorded.keys() - found.keys())
    extra = sorted(found.keys() - recorded.keys())
    if changed or missing or extra:
        parts = [f"{label} {names[:5]}" + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                 for label, names in (("changed", changed), ("missing", missing), ("extra", extra))
                 if names]
        raise IntegrityError(f"Cube {store} does not match its manifest: " + "; ".join(parts)
                             + ". The store is corrupt or was modified: convert the source again.")
    return manifest


def store_digest(store: str | os.PathLike) -> dict:
    """Content hash of one zarr store: its files' SHA-256 combined."""
    checksums = store_checksums(store)
    if not checksums:
        raise InputFileError(f"{store} holds no files; it is not a cube.")
    return {"path": str(Path(store).resolve()), "digest": checksums_digest(checksums),
            "files": len(checksums),
            "bytes": int(sum((Path(store) / k).stat().st_size for k in checksums))}


def dataset_manifest(stores: Sequence[str | os.PathLike]) -> dict:
    """Content hash of a set of cubes (order-independent): what a model was trained on."""
    cubes = [store_digest(s) for s in stores]
    combined = hashlib.sha256("\n".join(sorted(c["digest"] for c in cubes)).encode()).hexdigest()
    return {"digest": combined, "cubes": cubes}
