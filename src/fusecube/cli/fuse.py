"""``fusecube fuse train|predict|series``: S1→NDVI fusion from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

fuse_app = typer.Typer(help="Train and apply the S1→NDVI fusion gap-fill model.",
                       no_args_is_help=True)


def metrics_table(metrics: dict) -> list[str]:
    """Lines comparing fusion with the baselines on each validation test."""
    lines = []
    for test in ("heldout_dates", "heldout_spans"):
        if test not in metrics:
            continue
        where = "training pixels" if metrics.get("pixels_seen") else "held-out blocks"
        lines.append(f"{test} ({where}): RMSE / R²")
        groups = [g for g in ("all", "paddy", "paddy_wet", "paddy_dry")
                  if g in metrics[test]["fusion"]]
        lines.append(f"  {'method':<10}" + "".join(f"{g:>18}" for g in groups))
        for method, scores in metrics[test].items():
            cells = "".join(f"{scores[g]['rmse']:>10.4f} / {scores[g]['r2']:>5.2f}" for g in groups)
            lines.append(f"  {method:<10}{cells}")
    return lines


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
    arch: Annotated[str, typer.Option(help="conv | gru | mlp")] = "conv",
    width: Annotated[int, typer.Option(min=4, help="Hidden channels.")] = 16,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="CPU threads for torch (default: every core).")] = None,
) -> None:
    """Train a fusion model on CUBE, validated on held-out blocks and dates; write --out."""
    from dataclasses import replace

    from fusecube.cli.console import out
    from fusecube.cube import read_cube, validate_cube
    from fusecube.errors import ConfigError
    from fusecube.fusion.neural.model import FusionModel
    from fusecube.fusion.neural.train import TrainConfig, fit

    if arch not in ("conv", "gru", "mlp"):
        raise ConfigError(f"--arch {arch!r}: use conv, gru or mlp.")
    ds = validate_cube(read_cube(cube, chunks={}))
    config = TrainConfig(arch=arch, width=width, max_train_pixels=max_pixels, seed=seed,
                         device=device, threads=threads)
    start = FusionModel.load(init) if init is not None else None
    if start is not None:
        config = replace(config, epochs=epochs or 2, min_steps=min_steps or 50)
    else:
        config = replace(config, epochs=epochs or config.epochs,
                         min_steps=min_steps or config.min_steps)
    model = fit(ds, config, init=start)
    path = model.save(out_path)
    seconds = model.meta["seconds"]
    out.print(f"trained on {model.meta['trained_on']['train_pixels']} pixels in "
              f"{seconds['train']:.1f} s ({'fine-tuned' if start else 'from scratch'}, "
              f"{model.meta['device']})")
    for line in metrics_table(model.metrics):
        out.print(line, highlight=False)
    out.print(f"model: {path}")


@fuse_app.command("predict")
def predict_cmd(
    cube: Annotated[Path, typer.Argument(help="Cube zarr store (vv, vh, ndvi).")],
    model_path: Annotated[Path, typer.Option("--model", help="Model from `fusecube fuse train`.")],
    out_path: Annotated[Optional[Path], typer.Option(
        "--out", help="Output cube (default: CUBE name + _fused.zarr).")] = None,
    block: Annotated[int, typer.Option(min=16, help="Block edge in pixels.")] = 256,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """Gap-fill CUBE with a trained model: writes the cube with ``ndvi_fused`` added."""
    from fusecube.cli.console import out
    from fusecube.cube import read_cube, validate_cube
    from fusecube.fusion.neural.model import FusionModel, select_device
    from fusecube.fusion.neural.predict import fuse_cube

    ds = validate_cube(read_cube(cube, chunks={}))
    model = FusionModel.load(model_path, device=select_device(device))
    target = out_path or cube.with_name(f"{cube.stem}_fused.zarr")
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
    """Gap-fill field series from a table: radar-guided Whittaker, smoothing chosen per series."""
    import os

    from fusecube.cli.console import out
    from fusecube.fusion.guided.series import fuse_series, plot_series, read_series_table

    series = read_series_table(table, ndvi=ndvi, radar=radar, date=date, id_column=id_column)
    fused = fuse_series(series)
    target = out_path or table.with_name(f"{table.stem}_fused.csv")
    partial = target.with_name(f".{target.name}.partial")
    fused.to_csv(partial, index=False, date_format="%Y-%m-%dT%H:%M:%S")
    os.replace(partial, target)  # a failed write never leaves a half CSV under the real name
    per_series = fused.drop_duplicates("id")
    for row in per_series.head(10).itertuples():
        out.print(f"{row.id}: {int((~fused[fused['id'] == row.id]['filled']).sum())} observations, "
                  f"λ {row.lam:g}, λ_g {row.guide_lam:g}, radar coefficient {row.coef:.3f}, "
                  f"leave-one-out RMSE {row.loo_rmse:.4f}", highlight=False)
    out.print(f"written: {target} ({len(per_series)} series x {series.dates.size} dates)")
    if plot:
        out.print(f"plot: {plot_series(fused, target.with_suffix('.png'))}")


def register(app: typer.Typer) -> None:
    """Add ``fusecube fuse`` to the CLI."""
    app.add_typer(fuse_app, name="fuse")
