"""Run control from any shell: ``fusecube status|pause|resume|stop RUN_ID`` through the ledger."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from fusecube.cli.console import out, print_json

LedgerOpt = Annotated[Optional[str], typer.Option(
    "--ledger", help="Run ledger: SQLite path or SQLAlchemy URL (default $FUSECUBE_LEDGER).")]
RunIdArg = Annotated[str, typer.Argument(
    metavar="RUN", help="Run id, a unique start or end of it (e.g. 3f2a9c), or its output folder.")]


def _ledger(location: str | None):
    from fusecube.runner.ledger import Ledger

    return Ledger(location)


def status(
    run_id: Annotated[Optional[str], typer.Argument(
        metavar="RUN", help="Run id, a unique start or end of it (e.g. 3f2a9c), or its output "
                              "folder; without it, the recent runs.")] = None,
    ledger: LedgerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[int, typer.Option(help="Runs to list without RUN.")] = 20,
) -> None:
    """Show a run's stage, blocks, rate, ETA and memory, or list the recent runs."""
    from fusecube.runner.status import run_status
    from fusecube.runner.summary import runs_table, status_lines

    book = _ledger(ledger)
    records = [book.get_run(run_id)] if run_id else book.list_runs(limit)
    rows = [run_status(book, r) for r in records]
    if as_json:
        print_json(rows[0] if run_id else rows)
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
    """Ask a running run to stop after its current block (it can be resumed)."""
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
    """Continue a paused run, or restart a stopped or crashed one where it stopped."""
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
