"""``fusecube convert`` and ``fusecube verify-cube``: parse, then call :mod:`fusecube.sources.convert`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fusecube.cli.layout import one_of


def convert_cmd(
    src: Annotated[list[Path], typer.Argument(
        help="NetCDF file, GeoTIFF folder/file or zarr cube; or several NetCDF/zarr (e.g. S1 and S2).")],
    out: Annotated[Path, typer.Option("--out", help="Output zarr cube.")],
    chunks: Annotated[Optional[str], typer.Option(
        help="Chunks, e.g. time=-1,y=256,x=256 (-1: whole dim); default chosen from --access.")] = None,
    access: Annotated[str, typer.Option(
        help="How the cube is read: timeseries (blocks, all dates) or maps (one date).",
        **one_of("timeseries", "maps"))] = "timeseries",
    target_mb: Annotated[float, typer.Option(help="Chunk size to aim for, MB.")] = 16.0,
    crs: Annotated[Optional[str], typer.Option(help="CRS of an input that carries none.")] = None,
    require_vars: Annotated[str, typer.Option("--require", help="Variables the cube must have.")
                            ] = "vv,vh,ndvi",
    start: Annotated[Optional[str], typer.Option(
        help="First day of period 1 (default: the first date).")] = None,
    period_days: Annotated[Optional[int], typer.Option(
        min=1, help="Period length, days (default 12); NetCDF/zarr: composite onto these periods "
                    "(default: only when S1 and S2 are on their own dates).")] = None,
    s1_encoding: Annotated[Optional[str], typer.Option(
        help="Integer S1 bands without scale attributes: gfmap (openEO GFMap uint16, "
             "DN = 10**((dB + 83) / 20)).", **one_of("gfmap"))] = None,
    dates: Annotated[Optional[Path], typer.Option(help="GeoTIFF: period start dates file.")] = None,
    bands: Annotated[Optional[str], typer.Option(
        help="GeoTIFF: band roles in file order, e.g. vv_db,vh_db,ndvi.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Convert NetCDF, a GeoTIFF stack or zarr into a validated, checksummed zarr cube."""
    from fusecube.cli.console import names
    from fusecube.cli.console import out as console
    from fusecube.sources.convert import convert

    geotiff: dict = {"dates_file": dates}
    if bands:
        geotiff["bands"] = names(bands)
    first = src[0]
    is_geotiff = (first.is_dir() and not (first / "zarr.json").exists() and first.suffix.lower() != ".zarr"
                  or first.suffix.lower() in (".tif", ".tiff"))
    result = convert(src[0] if len(src) == 1 else src, out, chunks=chunks, access=access,  # type: ignore[arg-type]
                     target_mb=target_mb, crs=crs, required=names(require_vars), overwrite=overwrite,
                     s1_encoding=s1_encoding, period_days=period_days, start=start,  # type: ignore[arg-type]
                     **(geotiff if is_geotiff else {}))
    m = result.manifest
    console.print(f"{result.path}: {m['sizes']} chunks {m['chunks']} CRS {m['crs']}; "
                  f"{len(m['files'])} files, digest {m['digest'][:16]}")


def verify_cmd(
    cube: Annotated[Path, typer.Argument(help="Zarr cube written by `fusecube convert`.")],
    no_stats: Annotated[bool, typer.Option("--no-stats", help="Check checksums only.")] = False,
) -> None:
    """Check a converted cube against its manifest: checksums, sizes, CRS, statistics."""
    from fusecube.cli.console import out as console
    from fusecube.sources.convert import verify_cube

    manifest = verify_cube(cube, statistics=not no_stats)
    console.print(f"{cube}: ok ({len(manifest['files'])} files, digest {manifest['digest'][:16]})")


def register(app: typer.Typer) -> None:
    """Add ``convert`` and ``verify-cube`` to the CLI."""
    app.command("convert")(convert_cmd)
    app.command("verify-cube")(verify_cmd)
