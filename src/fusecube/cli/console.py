"""The consoles every command prints to: ``out`` for results, ``err`` for errors."""

from rich.console import Console

out = Console()
err = Console(stderr=True)


def print_result(result) -> None:
    """Print the summary of a finished run."""
    out.print(f"run {result.run_id}: {result.n_blocks} blocks of {result.block_edge} px"
              + (f" ({result.blocks_resumed} written before resuming)" if result.blocks_resumed else "")
              + f"; total {result.seconds['total']:.1f} s; peak memory {result.peak_rss_mb:.0f} MB"
              + f" (limit {result.memory_limit_mb:.0f} MB)")
    ph = result.accuracy.get("phenology")
    gap = result.accuracy.get("gapfill_hidden", {}).get("smooth_paddy")
    if gap:
        out.print(f"gap-fill (paddy, cloud-hidden): RMSE {gap['rmse']:.3f}, R² {gap['r2']:.3f}")
    if ph:
        out.print(f"SOS MAE {ph['sos_mae_days']:.1f} d, EOS MAE {ph['eos_mae_days']:.1f} d, "
                  f"season count correct {100 * ph['season_count_accuracy']:.1f} %")
    if "report" in result.products:
        out.print(f"report: {result.products['report']}")
    out.print(f"results: {result.out}")


def run_with_progress(start, log_json: bool) -> None:
    """Call ``start(reporter)`` (a runner entry) under a progress reporter and print the result."""
    import signal

    from fusecube.errors import RunInterrupted
    from fusecube.runner.progress import progress_reporter

    try:
        with progress_reporter(json_lines=log_json) as report:
            result = start(report)
    except RunInterrupted:
        # the run has stopped and recorded it: a late second Ctrl-C must not bury the message
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise
    print_result(result)
