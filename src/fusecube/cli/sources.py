"""``fusecube fetch``, ``fusecube import-geotiff`` and ``fusecube inspect``: data in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fusecube.cli.console import names, print_json, validated
from fusecube.cli.console import out as console
from fusecube.cli.layout import one_of
from fusecube.cli.plan import (
    MaxBytesOpt,
    MaxWalltimeOpt,
    PlanOpt,
    budget_from_options,
    show_plan,
)


def fetch_cmd(
    aoi: Annotated[str, typer.Option(help="bbox minx,miny,maxx,maxy or a vector file.")],
    start: Annotated[str, typer.Option(help="First day (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option(help="Last day (YYYY-MM-DD).")],
    out: Annotated[Path, typer.Option("--out", help="Output zarr cube.")],
    catalogue: Annotated[str, typer.Option(
        help="A known catalogue (planetary-computer, earth-search, cdse) or a STAC API URL.")
                         ] = "planetary-computer",
    aoi_crs: Annotated[str, typer.Option(help="CRS of a bbox AOI.")] = "EPSG:4326",
    resolution: Annotated[float, typer.Option(help="Pixel size in metres (UTM grid).")] = 10.0,
    period_days: Annotated[int, typer.Option(help="Compositing period in days.")] = 12,
    max_cloud: Annotated[float, typer.Option(help="Skip S2 items cloudier than this %.")] = 80.0,
    s2_collection: Annotated[Optional[str], typer.Option(help="S2 L2A collection id.")] = None,
    s2_assets: Annotated[Optional[str], typer.Option(help="e.g. red=B04,nir=B08,scl=SCL")] = None,
    s1_collection: Annotated[Optional[str], typer.Option(help="S1 collection id.")] = None,
    s1_assets: Annotated[Optional[str], typer.Option(help="e.g. vv=vv,vh=vh")] = None,
    s1_units: Annotated[Optional[str], typer.Option(
        help="Units of the S1 assets (default: from the catalogue).", **one_of("linear", "db"))] = None,
    no_s1: Annotated[bool, typer.Option("--no-s1", help="Skip Sentinel-1.")] = False,
    no_s2: Annotated[bool, typer.Option("--no-s2", help="Skip Sentinel-2.")] = False,
    retries: Annotated[int, typer.Option(help="Tries per asset read and search.")] = 5,
    timeout: Annotated[float, typer.Option(help="HTTP timeout in seconds.")] = 30.0,
    workers: Annotated[int, typer.Option(help="Items read in parallel.")] = 2,
    fail_on_error: Annotated[bool, typer.Option(
        "--fail-on-error", help="Stop at the first item that fails after all retries.")] = False,
    max_pages: Annotated[int, typer.Option(
        help="Most result pages one search may follow.", min=1)] = 2000,
    max_items: Annotated[int, typer.Option(
        help="Most items one search may return.", min=1)] = 50000,
    max_search_s: Annotated[float, typer.Option(
        "--max-search-s", help="Most seconds one search may take.", min=1)] = 900.0,
    restart: Annotated[bool, typer.Option(
        "--restart", help="Discard partial results of a fetch with other settings.")] = False,
    sign: Annotated[Optional[str], typer.Option(
        help="URL signing: 'planetary-computer' or module:function.")] = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="Progress as JSON lines.")] = False,
    plan: PlanOpt = False,
    max_bytes: MaxBytesOpt = None,
    max_walltime: MaxWalltimeOpt = None,
) -> None:
    """Fetch a cube for an AOI from a STAC catalogue (AOI windows only; resumable)."""
    import dataclasses

    from fusecube.config import StacSource
    from fusecube.runner.budget import fetch_guard
    from fusecube.runner.progress import progress_reporter
    from fusecube.sources.stac.fetch_aoi import fetch_aoi, fetch_lines

    source = validated(StacSource, "fetch options", aoi=aoi, start=start, end=end,
                       catalogue=catalogue, aoi_crs=aoi_crs, resolution=resolution,
                       period_days=period_days, max_cloud=max_cloud, s2_collection=s2_collection,
                       s2_assets=s2_assets, s1_collection=s1_collection, s1_assets=s1_assets,
                       s1_units=s1_units, no_s1=no_s1, no_s2=no_s2, retries=max(1, retries),
                       timeout_s=timeout, workers=workers, fail_on_error=fail_on_error, sign=sign,
                       max_pages=max_pages, max_items=max_items, max_search_s=max_search_s)

    if plan:  # the search only: items and the bytes of their AOI windows
        from fusecube.runner.plan import plan_fetch

        return show_plan(plan_fetch(source, workers=workers), as_json=False)
    guard = fetch_guard(budget_from_options(max_bytes, max_walltime),
                        "Run the same command again: it reads only the missing items.")

    def item_line(item) -> None:
        if log_json:  # one JSON line per item, beside the stage progress lines
            print_json({"stage": "item", **dataclasses.asdict(item)}, indent=None, stderr=True)
        if guard is not None:  # --max-bytes/--max-walltime: stop before the next item
            guard(item)

    with progress_reporter(json_lines=log_json) as report:
        result, geobox = fetch_aoi(source, out, progress=report, on_item=item_line,
                                   restart=restart)
    for line in fetch_lines(result, geobox):
        console.print(line, highlight=False)


def import_geotiff_cmd(
    folder: Annotated[Path, typer.Argument(help="Folder of period_NN.tif or dated GeoTIFFs.")],
    out: Annotated[Path, typer.Option("--out", help="Output zarr cube.")],
    start: Annotated[Optional[str], typer.Option(help="First day of period 1.")] = None,
    period_days: Annotated[int, typer.Option(help="Period length in days.")] = 12,
    dates: Annotated[Optional[Path], typer.Option(help="File of period start dates.")] = None,
    aoi: Annotated[Optional[str], typer.Option(help="Crop: bbox (lon/lat) or vector file.")
                   ] = None,
    resolution: Annotated[Optional[float], typer.Option(help="Pixel size in metres.")] = None,
    bands: Annotated[str, typer.Option(help="Band roles in file order.")] = "vv_db,vh_db,ndvi",
    pattern: Annotated[str, typer.Option(help="File glob.")] = "*.tif",
    ndvi_scale: Annotated[Optional[float], typer.Option(help="NDVI multiplier.")] = None,
) -> None:
    """Import a folder of per-period GeoTIFFs (e.g. Earth Engine exports) as a cube."""
    from fusecube.cube import read_cube
    from fusecube.grid.geobox import normalise_crs
    from fusecube.runner.progress import progress_reporter
    from fusecube.sources.geotiff import import_geotiff

    with progress_reporter() as report:
        path = import_geotiff(folder, out, start=start, period_days=period_days,
                              dates_file=dates, aoi=aoi, resolution=resolution,
                              bands=names(bands),
                              pattern=pattern, ndvi_scale=ndvi_scale, progress=report)
    ds = read_cube(path)
    gbox = ds.odc.geobox
    console.print(f"cube: {path} ({gbox.shape.x} x {gbox.shape.y} px, {ds.sizes['time']} "
                  f"periods from {str(ds.period_start.values[0])[:10]}, "
                  f"{normalise_crs(gbox.crs)})")


def inspect_cmd(
    path: Annotated[str, typer.Argument(help="Raster path or http(s) URL, or a .nc/.zarr store.")],
    timeout: Annotated[float, typer.Option(help="Seconds before giving up.")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a raster's bounds, CRS, resolution, bands, overviews and tiling.

    Only the header is read. For a NetCDF file or zarr store: its layers (name, dims, dtype, units, CRS).
    """
    from fusecube.sources.inspection import inspect_raster
    from fusecube.sources.store_layers import inspect_store, is_layer_store

    store = not path.startswith(("http://", "https://")) and is_layer_store(path)
    info = inspect_store(path) if store else inspect_raster(path, timeout_s=timeout)
    if as_json:
        print_json(info)
        return
    if store:
        console.print(f"{info['format']} {info['path']}: "
                      + ", ".join(f"{k} {v}" for k, v in info["dims"].items()), highlight=False)
        for layer in info["layers"]:
            console.print(f"  {layer['name']:<22} ({', '.join(layer['dims'])}) {layer['dtype']:<8} "
                          f"units: {layer['units'] or '-'}  crs: {layer['crs'] or '-'}",
                          highlight=False)
        return
    for key, value in info.items():
        console.print(f"{key:>14}: {value}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the data-in commands to the CLI."""
    app.command("fetch")(fetch_cmd)
    app.command("import-geotiff")(import_geotiff_cmd)
    app.command("inspect")(inspect_cmd)
