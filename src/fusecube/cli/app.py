"""The ``fusecube`` command line: parses, validates and calls the library."""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from fusecube.cli.console import err, out, run_with_progress, validated
from fusecube.cli.layout import PanelGroup, arrange, one_of
from fusecube.cli.plan import (
    MaxBytesOpt,
    MaxWalltimeOpt,
    PlanOpt,
    budget_from_options,
    print_run_plan,
)
from fusecube.errors import ConfigError, FusecubeError

app = typer.Typer(help="Gap-free NDVI datacubes and rice calendars from Sentinel-1/2.\n\n"
                       "New here? `fusecube demo` runs the whole pipeline on a synthetic scene.",
                  cls=PanelGroup, no_args_is_help=True, pretty_exceptions_enable=False,
                  add_completion=False)

#: Gap-fill methods of a run (``RunConfig.gapfill``).
GAPFILL_METHODS = ("auto", "linear", "whittaker", "ridge", "fusion")

#: Modules adding command groups (each has ``register(app)``).
COMMAND_MODULES: list[str] = ["fusecube.cli.runs", "fusecube.cli.patches",
                              "fusecube.cli.check", "fusecube.cli.paddy",
                              "fusecube.cli.fuse", "fusecube.cli.serve",
                              "fusecube.cli.sources", "fusecube.cli.convert",
                              "fusecube.cli.train", "fusecube.cli.batch",
                              "fusecube.cli.plan"]


def parse_size(size: str) -> tuple[int, int]:
    """``"671x893"`` → (width, height)."""
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError as exc:
        raise typer.BadParameter(f"size {size!r} must look like WIDTHxHEIGHT, e.g. 96x96") from exc
    if w < 8 or h < 8:
        raise typer.BadParameter(f"size {size!r} is too small; use at least 8x8")
    return w, h


def _print_version(value: bool) -> None:
    if value:
        from fusecube import __version__

        out.print(f"fusecube {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _setup(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the fusecube version and exit.")] = None,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("synthetic"),
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT in pixels.")] = "671x893",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    periods: Annotated[int, typer.Option(help="Number of 12-day periods.")] = 62,
    radar_skill: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="How much of the radar follows the vegetation: 1 rice, 0 none.")] = 1.0,
) -> None:
    """Generate the synthetic Demak-like scene with its ground truth."""
    from fusecube.runner.progress import progress_reporter
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize
    from fusecube.storage.atomic import prepare_output

    width, height = parse_size(size)
    prepare_output(out_dir, kind="scene")  # the output rule, before any work
    with progress_reporter() as report:
        paths = synthesize(SceneConfig(width=width, height=height, seed=seed, n_periods=periods,
                                       radar_skill=radar_skill),
                           out_dir, progress=lambda d, t: report("synth", d, t))
    for key, path in paths.items():
        out.print(f"{key:>6}: {path}")


def _run(config, log_json: bool, resume: bool = False, overwrite: bool = False,
         budget=None) -> None:
    from fusecube.runner import run
    from fusecube.runner.rerun import refuse_rerun

    refuse_rerun(config.out, config.ledger, resume=resume, overwrite=overwrite)
    run_with_progress(lambda report: run(config, progress=report, resume=resume, budget=budget),
                      log_json)


MemoryOpt = Annotated[Optional[str], typer.Option(
    "--memory-limit", help="Memory budget, e.g. 2GB; sets the block size (default: half the free RAM).")]
SchedulerOpt = Annotated[Optional[str], typer.Option(
    "--scheduler", help="Run blocks on Dask: local:N or tcp://host:port.")]
LedgerOpt = Annotated[Optional[str], typer.Option(
    "--ledger", help="Run ledger: SQLite path or SQLAlchemy URL (default $FUSECUBE_LEDGER).")]
ResumeOpt = Annotated[bool, typer.Option(
    "--resume", help="Continue the unfinished run of this config and output folder.")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace the finished run in the output folder (listed as superseded).")]
AllowEmptyOpt = Annotated[bool, typer.Option(
    "--allow-empty-results", help="Publish results that fail the result gates (paddy without "
                                  "seasons, all-NaN layers, values out of range) instead of "
                                  "failing and keeping the previous output.")]


@app.command("run")
def run_cmd(
    config: Annotated[Optional[Path], typer.Argument(help="Run config (YAML/TOML/JSON).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output folder (overrides config).")] = None,
    mask: Annotated[Optional[str], typer.Option(help="'cube', 'auto', 'none' or a mask file.")] = None,
    gapfill: Annotated[Optional[str], typer.Option(
        help="Gap-fill method: linear, whittaker, ridge, fusion, or auto (default): the best "
             "of them on held-out data.", **one_of(*GAPFILL_METHODS, metavar="METHOD"))] = None,
    block_size: Annotated[Optional[int], typer.Option("--block-size", help="Largest block edge, px.")] = None,
    memory_limit: MemoryOpt = None,
    scheduler: SchedulerOpt = None,
    ledger: LedgerOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    log_json: Annotated[bool, typer.Option("--log-json", help="Progress as JSON lines.")] = False,
    strict: Annotated[Optional[bool], typer.Option(
        "--strict/--no-strict", help="Stop at the first failing quality gate.")] = None,
    allow_empty: AllowEmptyOpt = False,
    plan: PlanOpt = False,
    max_bytes: MaxBytesOpt = None,
    max_walltime: MaxWalltimeOpt = None,
) -> None:
    """Run the pipeline on the cube described by a run config file, block by block.

    Every run is recorded in the run ledger (`fusecube status`); its results replace the
    output folder only once it has finished.
    """
    from fusecube.config import load_config

    if config is None:
        raise ConfigError(
            "fusecube run needs a run config file, e.g. run.yaml holding `source: {kind: cube, "
            "path: cube.zarr}` and `out: my-run` (docs/runner.md lists every field); "
            "`fusecube demo` runs the whole pipeline on a synthetic scene without one.")
    run_config = load_config(config, out=out_dir, mask=mask, gapfill=gapfill,
                             block_size=block_size, memory_limit=memory_limit,
                             scheduler=scheduler, ledger=ledger, strict=strict,
                             result_gates=False if allow_empty else None)
    if plan:
        return print_run_plan(run_config)
    _run(run_config, log_json, resume=resume, overwrite=overwrite,
         budget=budget_from_options(max_bytes, max_walltime))


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("demo-out"),
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT in pixels (default: Demak).")] = "671x893",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    radar_skill: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="How much of the radar follows the vegetation: 1 rice, 0 none.")] = 1.0,
    mask: Annotated[str, typer.Option(
        help="'cube', 'blocks' (the scene's GeoPackage, made in OUT-scene/), 'none' or a file.")] = "cube",
    gapfill: Annotated[str, typer.Option(
        help="Gap-fill method: fusion (S1→NDVI network trained here), ridge (closed-form S1 "
             "fusion), linear, whittaker, or auto (the best on held-out data).",
        **one_of(*GAPFILL_METHODS, metavar="METHOD"))] = "fusion",
    memory_limit: MemoryOpt = None,
    scheduler: SchedulerOpt = None,
    ledger: LedgerOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    log_json: Annotated[bool, typer.Option("--log-json", help="Progress as JSON lines.")] = False,
    allow_empty: AllowEmptyOpt = False,
) -> None:
    """Synthesise the Demak-like scene and run the whole pipeline on it, with a report."""
    from fusecube.config import RunConfig, SyntheticSource
    from fusecube.runner.rerun import refuse_rerun
    from fusecube.storage.atomic import prepare_output

    width, height = parse_size(size)
    prepare_output(out_dir, kind="run")  # before the scene below is made
    refuse_rerun(out_dir, ledger, resume=resume, overwrite=overwrite)
    if mask == "blocks":
        # the run makes its own scene in its staging folder; the mask must exist before it:
        # the same scene is made beside the output folder, never inside it
        scene = out_dir.with_name(f"{out_dir.name}-scene")
        mask = str(scene / "blocks.gpkg")
        if not Path(mask).exists():
            prepare_output(scene, kind="scene")
            from fusecube.sources.synthetic.scene import SceneConfig
            from fusecube.sources.synthetic.writer import synthesize

            synthesize(SceneConfig(width=width, height=height, seed=seed, radar_skill=radar_skill),
                       scene)
    config = validated(RunConfig, "demo options",
                       source=SyntheticSource(width=width, height=height, seed=seed,
                                              radar_skill=radar_skill),
                       out=out_dir, mask=mask, gapfill=gapfill, memory_limit=memory_limit,
                       scheduler=scheduler, ledger=ledger, result_gates=not allow_empty)
    _run(config, log_json, resume=resume, overwrite=overwrite)


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_commands()
arrange(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning fusecube errors into one clear line and an exit code."""
    try:
        app(args=argv, prog_name="fusecube")
    except FusecubeError as exc:
        from rich.markup import escape  # one line, never wrapped, brackets in paths kept

        err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False,
                  soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
