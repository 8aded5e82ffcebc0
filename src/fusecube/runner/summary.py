"""What a terminal shows about runs: a finished run's result, one run's status, a table of runs.

Lines are in console markup (``[bold]``) for :mod:`rich`, which the progress display uses too.
"""

from __future__ import annotations

from datetime import datetime


def duration_text(seconds: float | None) -> str:
    """``H:MM:SS``, or ``-`` for an unknown duration."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def result_lines(result) -> list[str]:
    """The summary of a finished run (a :class:`~fusecube.runner.execution.RunResult`)."""
    lines = [f"run {result.run_id}: {result.n_blocks} blocks of {result.block_edge} px"
             + (f" ({result.blocks_resumed} written before resuming)" if result.blocks_resumed else "")
             + f"; total {result.seconds['total']:.1f} s; peak memory {result.peak_rss_mb:.0f} MB"
             + f" (limit {result.memory_limit_mb:.0f} MB)"]
    if getattr(result, "gapfill", None):
        lines.append(f"gap-fill: {result.gapfill['verdict']}")
    if getattr(result, "result_gates", None):
        from fusecube.quality.result_gates import gates_line

        lines.append(gates_line(result.result_gates))
    ph = result.accuracy.get("phenology")
    gap = result.accuracy.get("gapfill_hidden", {}).get("smooth_paddy")
    if gap:
        lines.append(f"gap-fill (paddy, cloud-hidden): RMSE {gap['rmse']:.3f}, R² {gap['r2']:.3f}")
    if ph:
        lines.append(f"SOS MAE {ph['sos_mae_days']:.1f} d, EOS MAE {ph['eos_mae_days']:.1f} d, "
                     f"season count correct {100 * ph['season_count_accuracy']:.1f} %")
    if "report" in result.products:
        lines.append(f"report: {result.products['report']}")
    lines.append(f"results: {result.out}")
    return lines


def status_lines(row: dict) -> list[str]:
    """One run's status (a :func:`~fusecube.runner.status.run_status` row), line by line."""
    rate = row["rate_blocks_per_s"]
    pct = 100 * row["blocks_done"] / row["blocks_total"] if row["blocks_total"] else 0.0
    lines = [
        f"run      {row['id']}  [bold]{row['state']}[/bold]  (pid {row['pid']} on {row['host']}, "
        f"last heartbeat {row['heartbeat_age_s']:.0f} s ago)",
        f"stage    {row['stage'] or '-'}",
        f"blocks   {row['blocks_done']}/{row['blocks_total']} ({pct:.0f} %) of "
        f"{row['block_edge']} px",
        f"rate     {rate * 60:.1f} blocks/min" if rate else "rate     -",
        f"ETA      {duration_text(row['eta_s'])}",
        f"memory   RSS {row['rss_mb']:.0f} MB, peak {row['peak_rss_mb']:.0f} MB, "
        f"limit {row['memory_limit_mb']:.0f} MB",
        f"output   {row['out']}",
    ]
    if row["message"]:
        lines.append(f"message  {row['message']}")
    for event in row["events"]:
        when = datetime.fromtimestamp(event["ts"]).strftime("%H:%M:%S")
        lines.append(f"  {when} {event['level']:<5} {event['kind']:<12} {event['message']}")
    return lines


def runs_table(records: list, rows: list[dict]):
    """A :class:`rich.table.Table` of runs (their ledger records and status rows)."""
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
    return table
