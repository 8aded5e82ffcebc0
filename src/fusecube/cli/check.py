"""``fusecube check CUBE [--mask PATH] [--strict] [--aoi BBOX]``: run the gates, print the report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def _years(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    from fusecube.errors import ConfigError

    try:
        first, _, last = text.partition(":")
        years = (int(first), int(last or first))
    except ValueError as exc:
        raise ConfigError(f"--years {text!r} must look like FIRST:LAST, e.g. 2023:2025.") from exc
    if years[0] > years[1]:
        raise ConfigError(f"--years {text!r}: the first year is after the last; use e.g. "
                          f"{years[1]}:{years[0]}.")
    return years


def crop_to_aoi(ds, aoi: str):
    """The part of a cube inside an AOI (bbox or vector file), on the cube's own pixels."""
    from fusecube.cube import X, Y
    from fusecube.errors import CubeSchemaError
    from fusecube.grid.geobox import resolve_geobox

    base = ds.odc.geobox
    if base is None or base.crs is None:
        raise CubeSchemaError("Cube has no CRS, so --aoi cannot be placed on it; attach one "
                              "with ds.odc.assign_crs(...).")
    crop = resolve_geobox(aoi, like=base)
    col0 = round((crop.affine.c - base.affine.c) / base.affine.a)
    row0 = round((crop.affine.f - base.affine.f) / base.affine.e)
    ny, nx = crop.shape
    return ds.isel({Y: slice(row0, row0 + ny), X: slice(col0, col0 + nx)})


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
    """Run every quality gate on CUBE (and its mask) and print the gate report."""
    from fusecube.cli.console import out
    from fusecube.cube import read_cube
    from fusecube.quality.gates import GateThresholds, quality_report

    thresholds = GateThresholds(expected_years=_years(years))
    ds = read_cube(cube, chunks={})
    if aoi is not None:
        ds = crop_to_aoi(ds, aoi)
    report, arrays, mask_values = quality_report(ds, mask_spec=mask, source=str(cube),
                                                 thresholds=thresholds, strict=strict)
    out.print(report.to_markdown(), markup=False, highlight=False, soft_wrap=True)
    if report.mask:
        m = report.mask
        out.print(f"mask {m['source']}: {m['pixels']} pixels, {m['km2']:.2f} km², "
                  f"{m['percent_of_aoi']:.2f} % of the area of interest"
                  + (f" ({'; '.join(m['notes'])})" if m.get("notes") else ""),
                  markup=False, highlight=False)
    failed = report.failed
    out.print(f"{len(report.gates)} gates, {len(failed)} failed"
              + (f" ({', '.join(g.gate for g in failed)}): a run masks what they found and "
                 "continues; --strict stops at the first." if failed else "."),
              markup=False, highlight=False)
    if out_dir is not None:
        from fusecube.quality.diagnostics import write_diagnostics

        paths = write_diagnostics(report, arrays, mask_values, out_dir)
        out.print(f"quality report: {paths['json']}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``check`` command to the CLI."""
    app.command("check")(check_cmd)
