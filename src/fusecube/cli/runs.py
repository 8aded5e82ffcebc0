"""Run control from any shell: ``fusecube status|pause|resume|stop RUN_ID`` through the ledger."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Annotated, Optional

import typer

LedgerOpt = Annotated[Optional[str], typer.Option(
    "--ledger", help="Run ledger: SQLite path or SQLAlchemy URL (default $FUSECUBE_LEDGER).")]


def _ledger(location: str | None):
    from fusecube.runner.ledger import Ledger

    return Ledger(location)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def status(
    run_id: Annotated[Optional[str], typer.Argument(help="Run id (a unique prefix is enough).")] = None,
    ledger: LedgerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[int, typer.Option(help="Runs to list without RUN_ID.")] = 20,
) -> None:
    """Show a run's stage, blocks done/total, rate, ETA and memory (or list recent runs)."""
    from fusecube.cli.console import out
    from fusecube.runner.status import run_status

    book = _ledger(ledger)
    records = [book.get_run(run_id)] if run_id else book.list_runs(limit)
    rows = [run_status(book, r) for r in records]
    if as_json:
        out.print_json(json.dumps(rows[0] if run_id else rows))
        return
    if not run_id:
        from rich.table import Table

        table = Table()
        table.add_column("run", no_wrap=True, min_width=22)
        for name in ("state", "stage", "blocks", "RSS MB", "updated"):
            table.add_column(name, no_wrap=True)
        table.add_column("output")
        for r, row in zip(records, rows, strict=True):
            table.add_row(row["id"], row["state"], row["stage"],
                          f"{row['blocks_done']}/{row['blocks_total']}", f"{row['rss_mb']:.0f}",
                          datetime.fromtimestamp(r.updated).strftime("%m-%d %H:%M"), row["out"])
        out.print(table if rows else f"no runs in the ledger {book.url}")
        return
    row = rows[0]
    rate = row["rate_blocks_per_s"]
    out.print(f"run      {row['id']}  [bold]{row['state']}[/bold]  (pid {row['pid']} on {row['host']}, "
              f"last heartbeat {row['heartbeat_age_s']:.0f} s ago)")
    out.print(f"stage    {row['stage'] or '-'}")
    pct = 100 * row["blocks_done"] / row["blocks_total"] if row["blocks_total"] else 0.0
    out.print(f"blocks   {row['blocks_done']}/{row['blocks_total']} ({pct:.0f} %) of "
              f"{row['block_edge']} px")
    out.print(f"rate     {rate * 60:.1f} blocks/min" if rate else "rate     -")
    out.print(f"ETA      {_duration(row['eta_s'])}")
    out.print(f"memory   RSS {row['rss_mb']:.0f} MB, peak {row['peak_rss_mb']:.0f} MB, "
              f"limit {row['memory_limit_mb']:.0f} MB")
    out.print(f"output   {row['out']}")
    if row["message"]:
        out.print(f"message  {row['message']}", highlight=False)
    for event in row["events"]:
        when = datetime.fromtimestamp(event["ts"]).strftime("%H:%M:%S")
        out.print(f"  {when} {event['level']:<5} {event['kind']:<12} {event['message']}",
                  highlight=False)


def _live(book, run_id: str, action: str):
    from fusecube.errors import LedgerError

    record = book.get_run(run_id)
    if not record.alive:
        hint = (f"; resume it with `fusecube resume {record.id}`"
                if record.state in ("crashed", "interrupted", "stopped") else "")
        raise LedgerError(f"Run {record.id} is not running (it is {record.state}), so there is "
                          f"nothing to {action}{hint}.")
    return record


def pause(run_id: Annotated[str, typer.Argument(help="Run id.")], ledger: LedgerOpt = None) -> None:
    """Ask a running run to pause after its current block."""
    from fusecube.cli.console import out

    book = _ledger(ledger)
    record = book.request(_live(book, run_id, "pause").id, "pause")
    out.print(f"pause requested: run {record.id} pauses after its current block "
              f"({record.blocks_done}/{record.n_blocks} done); `fusecube resume {record.id}` "
              "continues it")


def stop(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    ledger: LedgerOpt = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the run has stopped.")] = False,
) -> None:
    """Ask a running run to stop cleanly after its current block (resumable)."""
    from fusecube.cli.console import out

    book = _ledger(ledger)
    record = book.request(_live(book, run_id, "stop").id, "stop")
    out.print(f"stop requested: run {record.id} stops after its current block; "
              f"`fusecube resume {record.id}` continues it later")
    while wait and book.get_run(record.id).alive:
        time.sleep(0.5)


def resume(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    ledger: LedgerOpt = None,
    memory_limit: Annotated[Optional[str], typer.Option("--memory-limit", help="Memory budget.")] = None,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="local:N or tcp://...")] = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="Progress as JSON lines.")] = False,
) -> None:
    """Continue a paused run, or restart an interrupted/crashed one where it stopped."""
    from fusecube.cli.console import out, run_with_progress
    from fusecube.runner import resume_run

    book = _ledger(ledger)
    record = book.get_run(run_id)
    if record.alive:
        if record.control == "run" and record.status == "running":
            out.print(f"run {record.id} is already running (pid {record.pid})")
            return
        book.request(record.id, "run")
        out.print(f"resume requested: run {record.id} continues (pid {record.pid})")
        return
    book.dispose()
    run_with_progress(lambda report: resume_run(record.id, report, ledger=ledger,
                                                memory_limit=memory_limit, scheduler=scheduler),
                      log_json)


def register(app: typer.Typer) -> None:
    """Add ``status``, ``pause``, ``resume`` and ``stop`` to the CLI."""
    app.command()(status)
    app.command()(pause)
    app.command()(resume)
    app.command()(stop)
