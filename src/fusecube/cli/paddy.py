"""``fusecube paddy CUBE --out DIR``: map rice paddy from the cube's own time series."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fusecube.cli.console import out
from fusecube.cli.layout import one_of


def paddy_cmd(
    cube: Annotated[Path, typer.Argument(help="Cube zarr store (vv, vh, ndvi).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("paddy-out"),
    method: Annotated[str, typer.Option(help="rules (no labels) or supervised (needs --labels).",
                                        **one_of("rules", "supervised"))] = "rules",
    labels: Annotated[Optional[Path], typer.Option(
        help="Vector file of known paddy (e.g. irrigation blocks) to train on.")] = None,
    label_region: Annotated[str, typer.Option(
        help="Where --labels are complete: bbox (of the polygons), all, or "
             "LEFT,BOTTOM,RIGHT,TOP in the cube's CRS.")] = "bbox",
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Probability cut.")] = 0.5,
    mmu_ha: Annotated[float, typer.Option(
        "--mmu-ha", min=0.0, help="Minimum mapping unit in hectares (0: none).")] = 1.0,
    polygons: Annotated[Optional[Path], typer.Option(
        help="Polygons (admin units, blocks) to total the paddy area by.")] = None,
    id_column: Annotated[Optional[str], typer.Option(help="Column naming the polygons.")] = None,
    truth: Annotated[Optional[Path], typer.Option(
        help="Truth store with land_class (synthetic scenes) for the confusion matrix.")] = None,
    report: Annotated[bool, typer.Option(help="Write paddy_report.html.")] = True,
) -> None:
    """Detect paddy in CUBE: probability and binary COGs, area in km², optional report."""
    from fusecube.products.paddy_mapping import map_paddy
    from fusecube.storage.atomic import prepare_output

    prepare_output(out_dir, kind="paddy")  # the output rule, before any work
    mapping = map_paddy(cube, out_dir, method=method, labels=labels, region=label_region,
                        threshold=threshold, mmu_ha=mmu_ha, polygons=polygons,
                        id_column=id_column, truth=truth, report=report)
    for line in mapping.lines:
        out.print(line)
    for key, path in mapping.products.items():
        out.print(f"{key:>22}: {path}")


def register(app: typer.Typer) -> None:
    """Add ``fusecube paddy`` to the CLI."""
    app.command("paddy")(paddy_cmd)
