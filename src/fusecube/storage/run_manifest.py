"""A run folder's manifest: every file the run wrote, with its size and SHA-256, written last.

``manifest.json`` is the last file a run writes into its staging folder before the folder is
swapped in, so a run folder holding one is complete, and the files it lists are that run's
own. Whatever lists a run's products (the API, the catalogue) reads this list and never
globs the folder. The copy of the input (``input/``) is an input, not a product: it is listed
with its size only.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from fusecube.storage.atomic import write_text_atomic
from fusecube.storage.manifest import file_sha256

#: The manifest's name inside a run folder.
RUN_MANIFEST = "manifest.json"
RUN_MANIFEST_VERSION = 1
#: Top-level entries listed by size only (inputs, not products).
INPUT_ENTRIES = ("input",)


def _files(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [Path(root) / name for name in sorted(files)]
    return found


def write_run_manifest(folder: str | os.PathLike, run_id: str) -> Path:
    """List every file of a finished run folder, with sizes and SHA-256; written last.

    Args:
        folder: The run folder (its staging folder, before the swap).
        run_id: The run that wrote it.

    Returns:
        The manifest's path.
    """
    folder = Path(folder)
    files, inputs = {}, {}
    for path in _files(folder):
        name = path.relative_to(folder).as_posix()
        if name == RUN_MANIFEST or path.name.startswith(".fusecube-probe-"):
            continue
        if name.split("/", 1)[0] in INPUT_ENTRIES:
            inputs[name] = {"bytes": path.stat().st_size}
        else:
            files[name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    manifest = {"format_version": RUN_MANIFEST_VERSION, "run_id": run_id,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files,
                "inputs": inputs}
    return write_text_atomic(folder / RUN_MANIFEST, json.dumps(manifest, indent=1))


def read_run_manifest(folder: str | os.PathLike) -> dict | None:
    """The manifest of a run folder, or None when it has none (unfinished or not a run)."""
    try:
        manifest = json.loads((Path(folder) / RUN_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "files" in manifest else None
