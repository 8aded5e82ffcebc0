"""The ``fusecube`` command line: parses, validates and calls the library."""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from fusecube.cli.console import err, out, run_with_progress
from fusecube.errors import FusecubeError

app = typer.Typer(help="Gap-free NDVI datacubes and rice calendars from Sentinel-1/2.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

#: Modules adding command groups (each has ``register(app)``).
COMMAND_MODULES: list[str] = ["fusecube.cli.runs", "fusecube.cli.patches",
                              "fusecube.cli.check", "fusecube.cli.paddy",
                              "fusecube.cli.fuse", "fusecube.cli.serve",
                              "fusecube.cli.sources", "fusecube.cli.convert",
                              "fusecube.cli.train", "fusecube.cli.batch"]


def parse_size(size: str) -> tuple[int, int]:
    """``"671x893"`` → (width, height)."""
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError as exc:
        raise typer.BadParameter(f"size {size!r} must look like WIDTHxHEIGHT, e.g. 96x96") from exc
    if w < 8 or h < 8:
        raise typer.BadParameter(f"size {size!r} is too small; use at least 8x8")
    return w, h


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False) -> None:
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

    width, height = parse_size(size)
    with progress_reporter() as report:
        paths = synthesize(SceneConfig(width=width, height=height, seed=seed, n_periods=periods,
                                       radar_skill=radar_skill),
                           out_dir, progress=lambda d, t: report("synth", d, t))
    for key, path in paths.items():
        out.print(f"{key:>6}: {path}")


def _run(config, log_json: bool, resume: bool = False) -> None:
    from fusecube.runner import run

    run_with_progress(lambda report: run(config, progress=report, resume=resume), log_json)


MemoryOpt = Annotated[Optional[str], typer.Option(
    "--memory-limit", help="Memory budget, e.g. 2GB; sets the block size (default: half the free RAM).")]
SchedulerOpt = Annotated[Optional[str], typer.Option(
    "--scheduler", help="Run blocks on Dask: local:N or tcp://host:port.")]
LedgerOpt = Annotated[Optional[str], typer.Option(
    "--ledger", help="Run ledger: SQLite path or SQLAlchemy URL (default $FUSECUBE_LEDGER).")]
ResumeOpt = Annotated[bool, typer.Option(
    "--resume", help="Continue the unfinished run of this config and output folder.")]
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
        help="auto (validated choice, default) | linear | whittaker | ridge | fusion")] = None,
    block_size: Annotated[Optional[int], typer.Option("--block-size", help="Largest block edge, px.")] = None,
    memory_limit: MemoryOpt = None,
    scheduler: SchedulerOpt = None,
    ledger: LedgerOpt = None,
    resume: ResumeOpt = False,
    log_json: Annotated[bool, typer.Option("--log-json", help="Progress as JSON lines.")] = False,
    strict: Annotated[Optional[bool], typer.Option(
        "--strict/--no-strict", help="Stop at the first failing quality gate.")] = None,
    allow_empty: AllowEmptyOpt = False,
) -> None:
    """Run the pipeline described by CONFIG (block by block, recorded in the run ledger)."""
    from fusecube.config import load_config

    _run(load_config(config, out=out_dir, mask=mask, gapfill=gapfill, block_size=block_size,
                     memory_limit=memory_limit, scheduler=scheduler, ledger=ledger,
                     strict=strict, result_gates=False if allow_empty else None),
         log_json, resume=resume)


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
        help="fusion (S1→NDVI, trained here) | ridge (closed-form S1 fusion) | linear | whittaker")] = "fusion",
    memory_limit: MemoryOpt = None,
    scheduler: SchedulerOpt = None,
    ledger: LedgerOpt = None,
    resume: ResumeOpt = False,
    log_json: Annotated[bool, typer.Option("--log-json", help="Progress as JSON lines.")] = False,
    allow_empty: AllowEmptyOpt = False,
) -> None:
    """Synthesise the Demak-like scene and run the whole pipeline on it, with a report."""
    from fusecube.config import RunConfig, SyntheticSource
    from fusecube.storage.atomic import prepare_output

    width, height = parse_size(size)
    prepare_output(out_dir, kind="run")  # before the scene below is made
    if mask == "blocks":
        # the run makes its own scene in its staging folder; the mask must exist before it:
        # the same scene is made beside the output folder, never inside it
        scene = out_dir.with_name(f"{out_dir.name}-scene")
        mask = str(scene / "blocks.gpkg")
        if not Path(mask).exists():
            from fusecube.sources.synthetic.scene import SceneConfig
            from fusecube.sources.synthetic.writer import synthesize

            synthesize(SceneConfig(width=width, height=height, seed=seed, radar_skill=radar_skill),
                       scene)
    config = RunConfig(source=SyntheticSource(width=width, height=height, seed=seed,
                                              radar_skill=radar_skill),
                       out=out_dir, mask=mask, gapfill=gapfill, memory_limit=memory_limit,
                       scheduler=scheduler, ledger=ledger, result_gates=not allow_empty)
    _run(config, log_json, resume=resume)


@app.command()
def version() -> None:
    """Print the fusecube version."""
    from fusecube import __version__

    out.print(__version__)


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_commands()


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
