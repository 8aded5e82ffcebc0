"""``fusecube fuse train|predict|series``: S1→NDVI fusion from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fusecube.cli.console import out
from fusecube.cli.layout import DEVICE, one_of

fuse_app = typer.Typer(help="Train and apply the S1→NDVI gap-fill model (--gapfill fusion).",
                       no_args_is_help=True)


@fuse_app.command("train")
def train_cmd(
    cube: Annotated[Path, typer.Argument(help="Cube zarr store (vv, vh, ndvi).")],
    out_path: Annotated[Path, typer.Option("--out", help="Model file to write.")] = Path("fusion_model.pt"),
    init: Annotated[Optional[Path], typer.Option(
        help="Pretrained model to fine-tune (same time grid).")] = None,
    epochs: Annotated[Optional[int], typer.Option(
        min=1, help="Passes over the training pixels (default 10, or 2 when fine-tuning).")] = None,
    max_pixels: Annotated[int, typer.Option(min=100, help="Cap on training pixels.")] = 30_000,
    min_steps: Annotated[Optional[int], typer.Option(
        min=1, help="Fewest optimiser steps (default 300, or 50 when fine-tuning).")] = None,
    arch: Annotated[str, typer.Option(help="Network architecture.",
                                      **one_of("conv", "gru", "mlp"))] = "conv",
    width: Annotated[int, typer.Option(min=4, help="Hidden channels.")] = 16,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="Torch device (auto: a GPU if one is seen).",
                                        **DEVICE)] = "auto",
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="CPU threads for torch (default: every core).")] = None,
) -> None:
    """Train the S1→NDVI gap-fill model of runs (--gapfill fusion) on one cube.

    Validated on held-out blocks and dates; the model goes to --out.
    """
    from fusecube.fusion.neural.cube_training import train_on_cube, training_lines
    from fusecube.storage.atomic import prepare_output

    prepare_output(out_path, kind="file")  # the output rule, before training
    model, path = train_on_cube(cube, out_path, init=init, epochs=epochs, min_steps=min_steps,
                                arch=arch, width=width, max_pixels=max_pixels, seed=seed,
                                device=device, threads=threads)
    for line in training_lines(model, fine_tuned=init is not None):
        out.print(line, highlight=False)
    out.print(f"model: {path}")


@fuse_app.command("predict")
def predict_cmd(
    cube: Annotated[Path, typer.Argument(help="Cube zarr store (vv, vh, ndvi).")],
    model_path: Annotated[Path, typer.Option("--model", help="Model from `fusecube fuse train`.")],
    out_path: Annotated[Optional[Path], typer.Option(
        "--out", help="Output cube (default: CUBE name + _fused.zarr).")] = None,
    block: Annotated[int, typer.Option(min=16, help="Block edge in pixels.")] = 256,
    device: Annotated[str, typer.Option(help="Torch device (auto: a GPU if one is seen).",
                                        **DEVICE)] = "auto",
) -> None:
    """Gap-fill CUBE with a trained model: writes the cube with ``ndvi_fused`` added."""
    from fusecube.cube import read_cube, validate_cube
    from fusecube.fusion.neural.model import NeuralFusion
    from fusecube.fusion.neural.network import select_device
    from fusecube.fusion.neural.workflows import fuse_cube
    from fusecube.storage.atomic import prepare_output

    target = prepare_output(out_path or cube.with_name(f"{cube.stem}_fused.zarr"), kind="store")
    ds = validate_cube(read_cube(cube, chunks={}))
    model = NeuralFusion.load(model_path, device=select_device(device))
    out.print(f"written: {fuse_cube(ds, model=model, out=target, block=block)}")


@fuse_app.command("series")
def series_cmd(
    table: Annotated[Path, typer.Argument(help="CSV (or .parquet) with one row per date (and field).")],
    ndvi: Annotated[str, typer.Option(help="NDVI column.")] = "NDVI",
    radar: Annotated[str, typer.Option(help="Radar column (RVI, or VH in linear units).")] = "RVI_DESC",
    date: Annotated[str, typer.Option(help="Date column.")] = "date",
    id_column: Annotated[Optional[str], typer.Option("--id", help="Field id column (many series).")] = None,
    out_path: Annotated[Optional[Path], typer.Option(
        "--out", help="CSV to write (default: TABLE name + _fused.csv).")] = None,
    plot: Annotated[bool, typer.Option(help="Also write a PNG of the first series.")] = True,
) -> None:
    """Gap-fill field series from a table by radar-guided Whittaker smoothing.

    The smoothing is chosen per series.

    Series without any radar value are skipped and named; Parquet needs pyarrow.
    """
    from fusecube.fusion.guided.series import plot_series
    from fusecube.fusion.guided.series_table import fuse_series_table
    from fusecube.storage.atomic import prepare_output

    target = prepare_output(out_path or table.with_name(f"{table.stem}_fused.csv"), kind="file")
    if plot:  # the plot is written beside the table
        prepare_output(target.with_suffix(".png"), kind="file")
    result = fuse_series_table(table, ndvi=ndvi, radar=radar, date=date, id_column=id_column,
                               out=target)
    for line in result.lines:
        out.print(line, highlight=False)
    if plot:
        out.print(f"plot: {plot_series(result.fused, result.path.with_suffix('.png'))}")


def register(app: typer.Typer) -> None:
    """Add ``fusecube fuse`` to the CLI."""
    app.add_typer(fuse_app, name="fuse")
