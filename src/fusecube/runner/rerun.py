"""A new run into a folder holding a finished run replaces it only when asked (``--overwrite``).

The earlier run is then listed as ``superseded`` in the ledger (:meth:`Ledger.supersede`, once
the new run has published its results), never as done with the new run's files.
"""

from __future__ import annotations

import os
from pathlib import Path

from fusecube.errors import OutputWriteError
from fusecube.storage.run_manifest import read_run_manifest


def refuse_rerun(out: str | os.PathLike, ledger: str | None = None, *, resume: bool = False,
                 overwrite: bool = False) -> None:
    """Refuse to start a run into ``out`` when a finished run is there, unless ``overwrite``.

    Args:
        out: The run's output folder.
        ledger: The run's ledger (SQLite path or URL; default ``$FUSECUBE_LEDGER``).
        resume: The run continues an unfinished run into ``out`` if there is one (allowed: that
            run was started before).
        overwrite: Replace the finished run.

    Raises:
        OutputWriteError: ``out`` holds a finished run and ``overwrite`` is not set.
    """
    out = Path(out).expanduser().resolve()
    manifest = read_run_manifest(out)
    if overwrite or manifest is None:
        return
    if resume:
        from fusecube.runner.ledger import Ledger

        book = Ledger(ledger)
        try:
            if book.unfinished_runs(str(out)):
                return
        finally:
            book.dispose()
    raise OutputWriteError(
        f"{out} holds the finished run {manifest.get('run_id', '?')} (written "
        f"{manifest.get('written', '?')}); pass --overwrite to replace it (that run is then "
        "listed as superseded), or choose another output folder with --out.")
