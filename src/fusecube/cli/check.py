"""``fusecube check CUBE [--mask PATH] [--strict] [--aoi BBOX]``: run the gates, print the report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fusecube.cli.console import out


def check_cmd(
    cube: Annotated[Path, typer.Argument(help="Cube zarr store to check.")],
    mask: Annotated[str, typer.Option(help="'cube', 'none' or a vector/raster mask file.")] = "cube",
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first failing gate.")
                      ] = False,
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", help="Folder for quality.json, quality.md, quality.html and the figures.")] = None,
    years: Annotated[Optional[str], typer.Option(
        help="Expected years FIRST:LAST of the series (default: the Sentinel era).")] = None,
    aoi: Annotated[Optional[str], typer.Option(
        help="Check only this area: bbox minx,miny,maxx,maxy (lon/lat) or a vector file.")
                   ] = None,
) -> None:
    """Run every quality gate on CUBE (and its mask) and print the gate report.

    Exits non-zero, with the run's own message, on what ``fusecube run`` refuses at input: the
    schema (dtype, dims, time axis, Sentinel era, CRS), ±inf and nodata sentinels.
    """
    from fusecube.quality.cube_check import check_cube
    from fusecube.storage.atomic import prepare_output

    if out_dir is not None:  # the output rule, before the gates run
        prepare_output(out_dir, kind="quality")
    checked = check_cube(cube, mask=mask, strict=strict, years=years, aoi=aoi)
    for line in checked.summary_lines():
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    checked.raise_if_run_refuses()  # what a run stops on at input: exit non-zero, write nothing
    if out_dir is not None:
        paths = checked.write_diagnostics(out_dir)
        out.print(f"quality report: {paths['json']}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``check`` command to the CLI."""
    app.command("check")(check_cmd)
