"""Run a batch: plan every AOI, work through them with a concurrency limit, record each state.

The batch is recorded before any work starts: a run row in the runner's ledger (heartbeat,
pause/stop requests, ``fusecube status``) and one ``batch_aois`` row per AOI, pending. The
batch folder holds ``batch.json`` (batch id and ledger) so ``fusecube batch status DIR`` and
``--resume`` find it again.

- ``resume``: AOIs left ``fetching``/``processing`` by a killed batch and ``pending`` ones are
  run; ``done``, ``failed`` and ``skipped`` ones are not touched.
- ``retry_failed``: as ``resume``, and ``failed`` AOIs are tried again (their attempt count
  grows); ``done`` ones are never redone.

AOIs run in threads (``concurrency`` at a time). A STAC AOI waits mostly on the network;
synthetic and tiling work is numpy/zarr code that releases the GIL for its heavy parts.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from odc.geo.geobox import GeoBox

from fusecube.batch.aois import AOI, aoi_geobox, read_aois
from fusecube.batch.config import BatchConfig, differing_fields
from fusecube.batch.ledger import AOIRecord, BatchLedger, totals
from fusecube.batch.work import AOIOutcome, Deadline, aoi_folder, process_aoi
from fusecube.errors import BatchStateError, FusecubeError, RunInterrupted
from fusecube.runner.budget import Budget, check_batch
from fusecube.runner.control import AbandonRun, RunControl, fault_point
from fusecube.runner.execution import new_run_id
from fusecube.runner.ledger import Ledger
from fusecube.runner.memory import peak_rss_bytes, rss_bytes
from fusecube.storage.atomic import prepare_output, write_text_atomic

log = logging.getLogger(__name__)

MANIFEST = "batch.json"
#: Called after every AOI state change with the AOI's row.
OnAOI = Callable[[AOIRecord], None]


@dataclass
class BatchResult:
    """What a batch call ended with."""

    batch_id: str
    out: Path
    records: list[AOIRecord]
    totals: dict
    seconds: float
    ran: list[str]
    report: dict[str, Path]

    def to_json(self) -> dict:
        """JSON-ready summary."""
        return {"batch_id": self.batch_id, "out": str(self.out), "totals": self.totals,
                "seconds": round(self.seconds, 3), "ran": self.ran,
                "report": {k: str(v) for k, v in self.report.items()},
                "aois": [r.to_dict() for r in self.records]}


@dataclass(frozen=True)
class _Planned:
    aoi: AOI
    config: BatchConfig
    geobox: GeoBox | None
    problem: str | None = None
    duplicate_of: str | None = None


def read_manifest(out: str | os.PathLike) -> dict | None:
    """The ``batch.json`` of a batch folder, or None when there is none."""
    path = Path(out) / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BatchStateError(f"{path} is unreadable ({exc}); it names the batch's ledger. "
                              "Restore it or start the batch in a new --out folder.") from exc


def _write_manifest(out: Path, data: dict) -> None:
    write_text_atomic(out / MANIFEST, json.dumps(data, indent=1, default=str))


def plan(aois: list[AOI], config: BatchConfig) -> list[_Planned]:
    """Per AOI: its settings (overrides applied), its grid, or why it cannot run.

    An AOI with the same grid and settings as an earlier one is marked as its duplicate
    (skipped: the earlier one's outputs serve both).
    """
    planned: list[_Planned] = []
    owners: dict[tuple, str] = {}
    for aoi in aois:
        if aoi.problem is not None:
            planned.append(_Planned(aoi, config, None, aoi.problem))
            continue
        try:
            cfg = config.for_aoi(aoi)
            geobox = aoi_geobox(aoi, cfg.resolution)
        except FusecubeError as exc:
            planned.append(_Planned(aoi, config, None, f"invalid geometry or settings: {exc}"))
            continue
        key = (geobox, cfg.fingerprint())
        planned.append(_Planned(aoi, cfg, geobox, duplicate_of=owners.get(key)))
        owners.setdefault(key, aoi.id)
    return planned


def run_batch(aois_file: str | os.PathLike, config: BatchConfig, *, resume: bool = False,
              retry_failed: bool = False, on_aoi: OnAOI | None = None,
              budget: Budget | None = None) -> BatchResult:
    """Run (or continue) a batch of AOIs and write its summary report.

    Args:
        aois_file: CSV or GeoJSON of AOIs (see :func:`fusecube.batch.aois.read_aois`).
        config: The batch settings.
        resume: Continue the batch already in ``config.out`` (pending and interrupted AOIs).
        retry_failed: Continue it and also try its failed AOIs again.
        on_aoi: Called with an AOI's row after each of its state changes (progress).
        budget: Caps on wall time and bytes, checked between AOIs (:mod:`fusecube.runner.budget`).

    Returns:
        The final rows, totals and report paths.

    Raises:
        BatchInputError: The AOI file cannot be used.
        BatchStateError: ``config.out`` holds a batch and neither ``resume`` nor
            ``retry_failed`` was asked, or the batch there was run with other settings.
        RunInterrupted: A signal or ``fusecube stop`` ended the batch early; resume it.
    """
    out = Path(config.out).resolve()
    config = config.model_copy(update={"out": out})
    prepare_output(out, kind="batch")  # the output rule, before any work
    aois = read_aois(aois_file)
    _check_source(config)
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out)
    if manifest is not None and not (resume or retry_failed):
        raise BatchStateError(
            f"{out} already holds batch {manifest['batch_id']}; pass --resume to continue it, "
            "--retry-failed to also retry its failures, or choose another --out.")
    if manifest is not None:
        config = config.model_copy(update={"ledger": config.ledger or manifest.get("ledger")})
    ledger = Ledger(config.ledger_location)
    book = BatchLedger(ledger)
    try:
        if manifest is None:
            batch_id = "batch-" + new_run_id()
            ledger.create_run(run_id=batch_id, out=str(out), store="", fingerprint=config.fingerprint(),
                              config=config.model_dump_json(), memory_limit=0, scheduler="batch")
            book.add_aois(batch_id, aois)
            _write_manifest(out, {"batch_id": batch_id, "ledger": config.ledger_location,
                                  "aois_file": str(Path(aois_file).resolve()),
                                  "config": config.model_dump(mode="json")})
            ledger.event(batch_id, "run", "start", f"batch {batch_id}: {len(aois)} AOIs into {out}")
        else:
            batch_id = manifest["batch_id"]
            previous = BatchConfig.model_validate({**manifest["config"], "out": out})
            changed = differing_fields(previous, config)
            if changed:
                raise BatchStateError(
                    f"batch {batch_id} in {out} was run with other settings ({', '.join(changed)} "
                    "differ); resume with the same options, or start a new batch in another --out.")
            _add_new_aois(book, batch_id, aois)
            ledger.claim_run(batch_id, memory_limit=0, scheduler="batch")
            redo = book.reset_in_flight(batch_id)
            if redo:
                log.info("redoing %d AOIs interrupted mid-way: %s", len(redo), ", ".join(redo))
            ledger.event(batch_id, "run", "resume",
                         f"batch {batch_id} resumed ({'retrying failures' if retry_failed else 'pending only'})")
        return _execute(batch_id, aois, config, ledger, book, retry_failed, on_aoi, budget)
    finally:
        ledger.dispose()


def _check_source(config: BatchConfig) -> None:
    """Fail the whole batch at once for a mistake every AOI would hit (catalogue, signing)."""
    if config.source != "stac":
        return
    from fusecube.sources.stac.catalogues import sign_hook
    from fusecube.sources.stac.fetch_aoi import catalogue_for

    catalogue_for(config.stac())
    sign_hook(config.sign)


def _add_new_aois(book: BatchLedger, batch_id: str, aois: list[AOI]) -> None:
    known = {r.aoi_id for r in book.records(batch_id)}
    new = [a for a in aois if a.id not in known]
    if new:
        log.info("%d AOIs are new in the AOI file; added as pending", len(new))
        book.add_aois(batch_id, new, start_position=len(known))


def _execute(batch_id: str, aois: list[AOI], config: BatchConfig, ledger: Ledger,
             book: BatchLedger, retry_failed: bool, on_aoi: OnAOI | None,
             budget: Budget | None = None) -> BatchResult:
    t0 = time.perf_counter()
    notify = (lambda aoi_id: on_aoi(book.get(batch_id, aoi_id))) if on_aoi else (lambda aoi_id: None)
    wanted = ("pending", "failed") if retry_failed else ("pending",)
    states = {r.aoi_id: r.state for r in book.records(batch_id)}
    planned = [p for p in plan(aois, config) if states.get(p.aoi.id) in wanted]
    runnable: list[_Planned] = []
    for p in planned:
        if p.problem is not None:
            book.start_attempt(batch_id, p.aoi.id)
            book.set_state(batch_id, p.aoi.id, "failed", reason=p.problem, seconds=0.0)
            notify(p.aoi.id)
        elif p.duplicate_of is not None:
            book.set_state(batch_id, p.aoi.id, "skipped", reason=(
                f"same grid and settings as AOI {p.duplicate_of!r}; its outputs serve this one "
                "(remove the duplicate row to silence this)."))
            notify(p.aoi.id)
        else:
            runnable.append(p)
    ran: list[str] = []
    control = RunControl(ledger, batch_id, on_event=lambda kind, message: log.warning("%s", message))
    interrupted: RunInterrupted | None = None
    with control.installed(), ThreadPoolExecutor(max_workers=config.concurrency,
                                                 thread_name_prefix="fusecube-aoi") as pool:
        queue = list(runnable)
        running: dict[Future, str] = {}
        finished = 0
        while queue or running:
            while queue and len(running) < config.concurrency and interrupted is None:
                job = queue.pop(0)
                running[pool.submit(_run_one, batch_id, job, book, notify)] = job.aoi.id
            if not running:
                break
            try:
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            except AbandonRun:  # a second signal: start nothing more; AOIs in flight end first
                interrupted = interrupted or control.interrupted(finished, len(runnable),
                                                                 abandoned=True)
                queue.clear()
                continue
            for future in done:
                aoi_id = running.pop(future)
                future.result()  # _run_one records every failure; anything here is a bug
                ran.append(aoi_id)
                finished += 1
                ledger.heartbeat(batch_id, rss=rss_bytes(), peak_rss=peak_rss_bytes(),
                                 stage=f"aois {finished}/{len(runnable)}")  # for `fusecube status`
                fault_point("batch_aoi_done")
                if budget is not None:
                    budget.unit_done(book.get(batch_id, aoi_id).bytes_read or 0)
            if interrupted is None:
                try:
                    control.checkpoint(finished, len(runnable))
                    check_batch(budget, ledger, batch_id, finished, len(runnable))
                except RunInterrupted as exc:
                    interrupted = exc  # let the AOIs in flight finish, start no new one
                    queue.clear()
    records = book.records(batch_id)
    summary = totals(records)
    from fusecube.batch.report import write_report

    report = write_report(config.out, batch_id, records, config)
    if interrupted is not None:
        raise interrupted
    states_text = ", ".join(f"{n} {s}" for s, n in summary["states"].items() if n)
    ledger.set_status(batch_id, "done", f"{summary['aois']} AOIs: {states_text}")
    ledger.event(batch_id, "run", "done", f"batch finished: {states_text}", **summary["states"])
    return BatchResult(batch_id, config.out, records, summary, time.perf_counter() - t0, ran, report)


def _run_one(batch_id: str, job: _Planned, book: BatchLedger, notify: Callable[[str], None]) -> None:
    """Run one AOI and record how it ended; never raises for an AOI's own failure."""
    aoi, config = job.aoi, job.config
    attempt = book.start_attempt(batch_id, aoi.id)
    notify(aoi.id)
    t0 = time.perf_counter()
    outcome = AOIOutcome(detail={"attempt": attempt})
    folder = aoi_folder(config.out, aoi.id)

    def on_state(state: str) -> None:
        book.set_state(batch_id, aoi.id, state, bytes_read=outcome.bytes_read,  # type: ignore[arg-type]
                       seconds=time.perf_counter() - t0)
        notify(aoi.id)

    try:
        process_aoi(aoi, job.geobox, config, folder, deadline=Deadline(aoi.id, config.time_budget_s),
                    on_state=on_state, outcome=outcome)
    except FusecubeError as exc:
        state, reason = "failed", str(exc)
    except Exception as exc:  # an AOI's bug must not take the other AOIs down: record it
        log.exception("AOI %s failed unexpectedly", aoi.id)
        state, reason = "failed", (f"unexpected error {type(exc).__name__}: {exc}; this is a "
                                   "fusecube bug, please report it with the log (-v).")
    else:
        state, reason = "done", ""
    seconds = time.perf_counter() - t0
    outcome.detail["grid"] = {"crs": str(job.geobox.crs), "shape": list(job.geobox.shape.yx),
                              "resolution": abs(job.geobox.resolution.x)}
    book.set_state(batch_id, aoi.id, state, reason=reason, bytes_read=outcome.bytes_read,  # type: ignore[arg-type]
                   seconds=seconds, tiles=outcome.tiles, detail=outcome.detail)
    log.info("AOI %s %s in %.1f s%s", aoi.id, state, seconds, f": {reason}" if reason else "")
    notify(aoi.id)


def batch_status(out: str | os.PathLike, ledger: str | None = None) -> dict:
    """The state of the batch in ``out``: run state, AOI rows and totals.

    Raises:
        BatchStateError: ``out`` holds no batch.
    """
    manifest = read_manifest(out)
    if manifest is None:
        raise BatchStateError(f"{out} holds no batch (no {MANIFEST}); start one with "
                              "`fusecube batch run AOIS --out DIR ...`.")
    book_ledger = Ledger(ledger or manifest["ledger"])
    try:
        run = book_ledger.get_run(manifest["batch_id"])
        records = BatchLedger(book_ledger).records(manifest["batch_id"])
    finally:
        book_ledger.dispose()
    return {"batch_id": manifest["batch_id"], "state": run.state, "message": run.message,
            "ledger": manifest["ledger"], "records": records, "totals": totals(records)}
