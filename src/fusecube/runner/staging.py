"""A run's staging folder: a run writes beside its output folder and swaps in on success.

A run into ``OUT`` writes everything (the input copy, the partial store, ``result.zarr``,
the products, ``quality/``, ``report.html``, ``run.json``) into ``.OUT.run-<run id>`` beside
it. Only when the blocks are done, the result gates have passed and every product is written
does the manifest go in (last) and the staging folder replace ``OUT`` in one rename. A run
killed or failed at any point leaves ``OUT`` as it was.

A run that fails removes its staging folder (:func:`discard_failed`), except a run that can
be continued: one stopped or interrupted (``fusecube resume``) and one whose results failed
the result gates (inspect ``result.zarr`` there, or publish it with
``--resume --allow-empty-results``). A process killed outright cleans nothing: the next run or
resume into ``OUT`` removes the staging folders of every other run into it
(:func:`open_staging`), and a resumed run first removes what interrupted atomic writes left in
its own.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from fusecube.errors import ResultGateFailed, RunInterrupted
from fusecube.runner.control import fault_point
from fusecube.runner.result import RunResult
from fusecube.storage.atomic import (
    KIND_MARKERS,
    LEFTOVER,
    remove_leftovers,
    replace_path,
    write_text_atomic,
)
from fusecube.storage.run_manifest import read_run_manifest, write_run_manifest

log = logging.getLogger(__name__)


def staging_dir(out: Path, run_id: str) -> Path:
    """Where run ``run_id`` writes before its results replace ``out``: a hidden sibling."""
    return out.with_name(f".{out.name}.run-{run_id}")


def open_staging(out: Path, run_id: str) -> Path:
    """Create (or reopen, on resume, cleaned of interrupted writes) the run's staging folder.

    Staging folders other runs into ``out`` left (killed processes, runs superseded by this
    one) are removed first: the runner has already refused to start while another run into
    ``out`` is alive, so none of them is in use.
    """
    work = staging_dir(out, run_id)
    stale = [p for p in out.parent.glob(f".{out.name}.run-*") if p != work and p.is_dir()]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
        log.info("removed the staging folder %s of an earlier run that did not finish", folder)
    if work.exists():
        removed = remove_leftovers(work)
        if removed:
            log.info("resume: removed %d temporary files of interrupted writes: %s",
                     len(removed), ", ".join(removed[:5]))
    work.mkdir(parents=True, exist_ok=True)
    return work


def resumable(error: BaseException) -> bool:
    """Whether a run that ended with ``error`` keeps its staging folder to be continued.

    A stopped or interrupted run resumes where it was; results that failed the result gates
    stay to be inspected or published with ``--resume --allow-empty-results``.
    """
    return isinstance(error, (RunInterrupted, ResultGateFailed))


def discard_failed(out: Path, run_id: str, error: BaseException) -> bool:
    """Remove the staging folder of run ``run_id`` that failed with ``error``; ``out`` untouched.

    Returns:
        Whether a folder was removed (not for a :func:`resumable` error).
    """
    work = staging_dir(out, run_id)
    if resumable(error) or not work.exists():
        return False
    shutil.rmtree(work, ignore_errors=True)
    log.info("run %s failed: its staging folder %s was removed, %s is unchanged", run_id,
             work, out)
    return True


def drop_if_empty(out: Path, run_id: str) -> None:
    """Remove the run's staging folder when it holds nothing (the run failed before writing)."""
    work = staging_dir(out, run_id)
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()


def published(out: Path, run_id: str) -> bool:
    """Whether ``out`` holds the published results of run ``run_id``."""
    manifest = read_run_manifest(out)
    return manifest is not None and manifest.get("run_id") == run_id


def write_summary(result: RunResult, out: Path) -> Path:
    """Write ``run.json`` into the staging folder, its paths already those under ``out``."""
    summary = result.rebased(result.out, out).to_json()
    return write_text_atomic(Path(result.out) / "run.json",
                             json.dumps(summary, indent=2, default=str))


def publish(result: RunResult, out: Path) -> RunResult:
    """Write the manifest (last), swap the staging folder in as ``out``; the result rebased.

    The previous ``out`` (a finished run) is replaced as a whole; what an earlier swap
    interrupted between its two renames left beside ``out`` is removed.
    """
    work = Path(result.out)
    quality = work / "quality" / "quality.json"
    if quality.is_file():  # it names the run's own input copy: by its path after the swap
        data = json.loads(quality.read_text())
        if str(data.get("cube", "")).startswith(str(work)):
            data["cube"] = str(out / Path(data["cube"]).relative_to(work))
            write_text_atomic(quality, json.dumps(data, indent=2, default=str))
    write_run_manifest(work, result.run_id)
    fault_point("manifest_written")
    replace_path(work, out, markers=KIND_MARKERS["run"])
    for stale in out.parent.glob(f".{out.stem}.old-*"):  # a swap killed between renames
        if LEFTOVER.match(stale.name):
            shutil.rmtree(stale, ignore_errors=True)
    return result.rebased(work, out)
