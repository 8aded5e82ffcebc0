"""``fusecube plan``: what a run will cost before it starts; the cap and ``--plan`` options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fusecube.cli.console import out, print_json
from fusecube.cli.layout import one_of

MaxBytesOpt = Annotated[Optional[str], typer.Option(
    "--max-bytes", metavar="SIZE", help="Stop cleanly (resumable) before moving more than this "
                                        "many bytes, e.g. 5GB.")]
MaxWalltimeOpt = Annotated[Optional[str], typer.Option(
    "--max-walltime", metavar="DURATION", help="Stop cleanly (resumable) before this much wall "
                                               "time has passed, e.g. 90s, 15m, 2h.")]
PlanOpt = Annotated[bool, typer.Option(
    "--plan", help="Print what the work would cost (fusecube plan) and do nothing.")]
WorkersOpt = Annotated[int, typer.Option(
    "--workers", min=1, help="Workers sharing the blocks (each gets memory-limit / N).")]


def _mb(size: float) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def plan_table(plan):
    """The plan as a rich table (sizes, bytes, memory, seconds per stage)."""
    from rich.table import Table

    mark = "calibrated" if plan.calibrated else "uncalibrated: run `fusecube plan --calibrate`"
    table = Table(title=f"plan of the {plan.what}: {plan.source} ({mark})", show_header=True)
    table.add_column("quantity")
    table.add_column("estimate", justify="right")
    rows = [("pixels", f"{plan.pixels:,}"), ("periods", str(plan.periods))]
    if plan.aois:
        rows.append(("AOIs", str(plan.aois)))
    if plan.blocks:
        rows += [("blocks", f"{plan.blocks} of {plan.block_edge} px"),
                 ("gap-fill costs of", plan.method)]
    if plan.items:
        rows.append(("STAC items", f"{plan.items} ({_mb(plan.network_bytes)} to download)"))
    rows += [("bytes to read", _mb(plan.read_bytes)), ("bytes to write", _mb(plan.write_bytes))]
    if plan.peak_memory_per_worker:
        rows.append(("peak memory / worker", f"{_mb(plan.peak_memory_per_worker)} (limit "
                                             f"{_mb(plan.memory_limit_per_worker)})"))
    rows.append(("workers", str(plan.workers)))
    rows += [(f"  {stage} (s)", f"{seconds:.1f}") for stage, seconds in plan.stages.items()]
    rows.append(("wall time (s)", f"{plan.seconds:.1f}"))
    for row in rows:
        table.add_row(*row)
    table.caption = f"costs: {plan.calibration}"
    return table


def show_plan(plan, as_json: bool) -> None:
    """Print a plan as a table, or as JSON."""
    if as_json:
        print_json(plan.to_json())
    else:
        out.print(plan_table(plan))


def plan_cmd(
    config: Annotated[Optional[Path], typer.Argument(help="Run config (YAML/TOML/JSON).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output folder.")] = None,
    gapfill: Annotated[Optional[str], typer.Option(
        help="Gap-fill method whose costs to estimate: auto, linear, whittaker, ridge, fusion.",
        **one_of("auto", "linear", "whittaker", "ridge", "fusion", metavar="METHOD"))] = None,
    block_size: Annotated[Optional[int], typer.Option("--block-size", help="Largest block edge, px.")] = None,
    memory_limit: Annotated[Optional[str], typer.Option(
        "--memory-limit", help="Memory budget of the run, split between the workers.")] = None,
    workers: WorkersOpt = 1,
    calibrate: Annotated[bool, typer.Option(
        "--calibrate", help="First measure this machine's costs on small synthetic scenes "
                            "(about a minute) and store them.")] = False,
    methods: Annotated[str, typer.Option(
        help="Gap-fill methods --calibrate measures: ridge, or ridge,fusion (needs torch).")] = "ridge",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Estimate a run before it starts: pixels, blocks, bytes, memory, time per stage."""
    from fusecube.cli.console import names
    from fusecube.config import load_config
    from fusecube.runner.calibration import calibrate as run_calibration
    from fusecube.runner.calibration import calibration_path
    from fusecube.runner.plan import plan_run

    if calibrate:
        chosen = names(methods)
        bad = [m for m in chosen if m not in ("ridge", "fusion")]
        if bad or not chosen:
            raise typer.BadParameter(f"--methods {methods!r}: use ridge or ridge,fusion")
        from fusecube.runner.progress import progress_reporter

        with progress_reporter() as report:
            costs = run_calibration(chosen, progress=report)
        if not as_json:
            out.print(f"calibration stored in {calibration_path()} ({costs.machine})")
    if config is None and calibrate and not (out_dir or gapfill):
        return
    run_config = load_config(config, out=out_dir, gapfill=gapfill, block_size=block_size,
                             memory_limit=memory_limit)
    show_plan(plan_run(run_config, workers=workers), as_json)


def register(app: typer.Typer) -> None:
    """Add ``plan`` to the CLI."""
    app.command("plan")(plan_cmd)


def print_run_plan(config, as_json: bool = False) -> None:
    """``--plan`` of ``run``: the plan of ``config`` (workers from a ``local:N`` scheduler)."""
    from fusecube.runner.plan import plan_run

    scheduler = config.scheduler or ""
    workers = int(scheduler.split(":")[1]) if scheduler.startswith("local:") else 1
    show_plan(plan_run(config, workers=max(1, workers)), as_json)


def budget_from_options(max_bytes: str | None, max_walltime: str | None):
    """The :class:`~fusecube.runner.budget.Budget` of ``--max-bytes``/``--max-walltime``, or None."""
    from fusecube.runner.budget import budget_from_options as from_options

    return from_options(max_bytes, max_walltime)
