"""Controlling a run from another process: pause, stop and resume requests through the ledger."""

from __future__ import annotations

from fusecube.errors import LedgerError
from fusecube.runner.ledger import Ledger, RunRecord


def request_action(ledger: Ledger, run_id: str, action: str) -> RunRecord:
    """Ask the live run ``run_id`` to ``pause`` or ``stop`` after its current block.

    Returns:
        The run's record after the request.

    Raises:
        LedgerError: The run is not running (with how to resume it, where it can be).
    """
    record = ledger.get_run(run_id)
    if not record.alive:
        hint = (f"; resume it with `fusecube resume {record.id}`"
                if record.state in ("crashed", "interrupted", "stopped") else "")
        raise LedgerError(f"Run {record.id} is not running (it is {record.state}), so there is "
                          f"nothing to {action}{hint}.")
    return ledger.request(record.id, action)


def request_resume(ledger: Ledger, run_id: str) -> tuple[RunRecord, str | None]:
    """Ask a live (paused) run to continue.

    Returns:
        The run's record and what happened; the message is None when the run is not alive,
        so the caller must restart it (:func:`~fusecube.runner.execution.resume_run`).
    """
    record = ledger.get_run(run_id)
    if not record.alive:
        return record, None
    if record.control == "run" and record.status == "running":
        return record, f"run {record.id} is already running (pid {record.pid})"
    ledger.request(record.id, "run")
    return record, f"resume requested: run {record.id} continues (pid {record.pid})"
