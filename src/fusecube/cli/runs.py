"""Run control from any shell: ``fusecube status|pause|resume|stop RUN_ID`` through the ledger."""

from __future__ import annotations

import json
import time
from typing import Annotated, Optional

import typer

from fusecube.cli.console import out

LedgerOpt = Annotated[Optional[str], typer.Option(
    "--ledger", help="Run ledger: SQLite path or SQLAlchemy URL (default $FUSECUBE_LEDGER).")]
RunIdArg = Annotated[str, typer.Argument(help="Run id.")]


def _ledger(location: str | None):
    from fusecube.runner.ledger import Ledger

    return Ledger(location)


def status(
    run_id: Annotated[Optional[str], typer.Argument(help="Run id (a unique prefix is enough).")] = None,
    ledger: LedgerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[int, typer.Option(help="Runs to list without RUN_ID.")] = 20,
) -> None:
    """Show a run's stage, blocks done/total, rate, ETA and memory (or list recent runs)."""
    from fusecube.runner.status import run_status
    from fusecube.runner.summary import runs_table, status_lines

    book = _ledger(ledger)
    records = [book.get_run(run_id)] if run_id else book.list_runs(limit)
    rows = [run_status(book, r) for r in records]
    if as_json:
        out.print_json(json.dumps(rows[0] if run_id else rows))
    elif not run_id:
        out.print(runs_table(records, rows) if rows else f"no runs in the ledger {book.url}")
    else:
        for line in status_lines(rows[0]):
            out.print(line, highlight=False)


def pause(run_id: RunIdArg, ledger: LedgerOpt = None) -> None:
    """Ask a running run to pause after its current block."""
    from fusecube.runner.remote_control import request_action

    record = request_action(_ledger(ledger), run_id, "pause")
    out.print(f"pause requested: run {record.id} pauses after its current block "
              f"({record.blocks_done}/{record.n_blocks} done); `fusecube resume {record.id}` "
              "continues it")


def stop(
    run_id: RunIdArg,
    ledger: LedgerOpt = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the run has stopped.")] = False,
) -> None:
    """Ask a running run to stop cleanly after its current block (resumable)."""
    from fusecube.runner.remote_control import request_action

    book = _ledger(ledger)
    record = request_action(book, run_id, "stop")
    out.print(f"stop requested: run {record.id} stops after its current block; "
              f"`fusecube resume {record.id}` continues it later")
    while wait and book.get_run(record.id).alive:
        time.sleep(0.5)


def resume(
    run_id: RunIdArg,
    ledger: LedgerOpt = None,
    memory_limit: Annotated[Optional[str], typer.Option("--memory-limit", help="Memory budget.")] = None,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="local:N or tcp://...")] = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="Progress as JSON lines.")] = False,
    allow_empty: Annotated[bool, typer.Option(
        "--allow-empty-results", help="Publish results that fail the result gates.")] = False,
) -> None:
    """Continue a paused run, or restart an interrupted/crashed one where it stopped."""
    from fusecube.cli.console import run_with_progress
    from fusecube.runner import resume_run
    from fusecube.runner.remote_control import request_resume

    book = _ledger(ledger)
    record, message = request_resume(book, run_id)
    if message is not None:
        out.print(message)
        return
    book.dispose()
    run_with_progress(lambda report: resume_run(record.id, report, ledger=ledger,
                                                memory_limit=memory_limit, scheduler=scheduler,
                                                result_gates=False if allow_empty else None),
                      log_json)


def register(app: typer.Typer) -> None:
    """Add ``status``, ``pause``, ``resume`` and ``stop`` to the CLI."""
    app.command()(status)
    app.command()(pause)
    app.command()(resume)
    app.command()(stop)
