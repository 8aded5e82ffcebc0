"""``fusecube batch run|status|train``: many AOIs in one resumable command (parses, calls fusecube.batch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fusecube.cli.console import names, out, print_json, validated
from fusecube.cli.layout import one_of
from fusecube.cli.plan import (
    MaxBytesOpt,
    MaxWalltimeOpt,
    PlanOpt,
    budget_from_options,
    show_plan,
)

batch_app = typer.Typer(help="Many AOIs (CSV/GeoJSON) into cubes, tiles and products, resumable.",
                        no_args_is_help=True)


@batch_app.command("run")
def run_cmd(
    aois: Annotated[Path, typer.Argument(help="AOIs: CSV (id,lon,lat,size_km or id,bbox) or GeoJSON.")],
    start: Annotated[str, typer.Option(help="First day (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option(help="Last day (YYYY-MM-DD).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Batch folder.")],
    source: Annotated[str, typer.Option(help="synthetic (offline, seeded per AOI id) or stac.",
                                        **one_of("synthetic", "stac"))] = "synthetic",
    produce: Annotated[str, typer.Option(help="Comma-separated: cube, patches, products.")] = "cube,patches",
    resolution: Annotated[float, typer.Option(help="Pixel size in metres.")] = 10.0,
    concurrency: Annotated[int, typer.Option(help="AOIs processed at the same time.")] = 2,
    time_budget: Annotated[Optional[float], typer.Option(
        "--time-budget", help="Seconds one AOI may take before it is failed.")] = None,
    patch_size: Annotated[int, typer.Option("--patch-size", help="Tile edge in pixels.")] = 64,
    patch_vars: Annotated[str, typer.Option("--vars", help="Tile variables, comma-separated.")] = "vv,vh",
    max_invalid: Annotated[float, typer.Option(
        "--max-invalid", help="Skip tiles with more than this share of invalid values.")] = 0.05,
    stac_url: Annotated[Optional[str], typer.Option("--stac-url", help="STAC API root.")] = None,
    catalogue: Annotated[str, typer.Option(help="Known catalogue for collections and assets.")
                         ] = "planetary-computer",
    sign: Annotated[Optional[str], typer.Option(
        help="URL signing: 'planetary-computer' or module:function.")] = None,
    max_cloud: Annotated[float, typer.Option("--max-cloud", help="Skip S2 items above this cloud %.")] = 80.0,
    retries: Annotated[int, typer.Option(help="Tries per search and asset read.")] = 5,
    timeout: Annotated[float, typer.Option(help="HTTP timeout of one request, seconds.")] = 30.0,
    item_workers: Annotated[int, typer.Option("--item-workers", help="Items of one AOI read in parallel.")] = 2,
    mask: Annotated[Optional[str], typer.Option(help="Paddy mask for products.")] = None,
    ledger: Annotated[Optional[str], typer.Option(
        "--ledger", help="Ledger: SQLite path or SQLAlchemy URL (default DIR/ledger.sqlite).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the batch in --out.")] = False,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="Continue the batch in --out and retry its failed AOIs.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    plan: PlanOpt = False,
    max_bytes: MaxBytesOpt = None,
    max_walltime: MaxWalltimeOpt = None,
) -> None:
    """Run every AOI of AOIS (fetch, tiles, products), recorded per AOI in one ledger."""
    from fusecube.batch import BatchConfig, run_batch
    from fusecube.batch.summary import record_line, totals_line

    config = validated(
        BatchConfig, "batch options", start=start, end=end, out=out_dir, source=source,
        produce=names(produce), resolution=resolution, concurrency=concurrency,
        time_budget_s=time_budget, patch_size=patch_size, patch_vars=names(patch_vars),
        max_invalid_fraction=max_invalid, stac_url=stac_url, catalogue=catalogue, sign=sign,
        max_cloud=max_cloud, retries=retries, timeout_s=timeout, item_workers=item_workers,
        mask=mask, ledger=ledger)

    def on_aoi(record) -> None:
        if record.state in ("done", "failed", "skipped") and not as_json:
            out.print(record_line(record), highlight=False, soft_wrap=True)

    if plan:
        from fusecube.runner.plan import plan_batch

        return show_plan(plan_batch(aois, config), as_json)
    result = run_batch(aois, config, resume=resume, retry_failed=retry_failed, on_aoi=on_aoi,
                       budget=budget_from_options(max_bytes, max_walltime))
    if as_json:
        print_json(result.to_json())
        return
    out.print(totals_line(result.totals), highlight=False)
    out.print(f"report: {result.report['html']}")


@batch_app.command("status")
def status_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Batch folder.")],
    ledger: Annotated[Optional[str], typer.Option("--ledger", help="Ledger, if not the recorded one.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the batch's AOIs (state, reason, attempts, bytes, seconds) and totals."""
    from fusecube.batch import batch_status
    from fusecube.batch.summary import records_table, totals_line

    status = batch_status(out_dir, ledger)
    if as_json:
        print_json({**status, "records": [r.to_dict() for r in status["records"]]})
        return
    out.print(f"batch {status['batch_id']}  [bold]{status['state']}[/bold]  {status['message']}",
              highlight=False)
    out.print(records_table(status["records"]))
    out.print(totals_line(status["totals"]), highlight=False)


@batch_app.command("train")
def train_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Batch folder (with tiles from --produce patches).")],
    epochs: Annotated[int, typer.Option(help="Passes over the training tiles.")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Tiles per step.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of the split and the model.")] = 0,
) -> None:
    """Train a tiny VV→VH model on the batch's tiles: shows they can be learnt from.

    Held-out AOIs validate it, against the training mean as the baseline. Not a model runs
    use: `fusecube fuse train` trains the gap-fill model, `fusecube cube-model fit` the
    3-D U-Net.
    """
    from fusecube.batch.train import train_on_batch

    report = train_on_batch(out_dir, epochs=epochs, batch_size=batch_size, seed=seed)
    print_json(report)


def register(app: typer.Typer) -> None:
    """Add the ``batch`` command group to the CLI."""
    app.add_typer(batch_app, name="batch")
