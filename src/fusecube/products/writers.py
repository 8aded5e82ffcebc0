"""Product writers: CF NetCDF of the phenology, COGs of the maps, PNG figures.

Everything is written through :func:`fusecube.storage.atomic.atomic_path`, so a failure
never leaves a half-written product behind. The NetCDF follows CF-1.8 (:mod:`.cf`: GDAL and
QGIS place it); the COGs carry descriptions, units, colour tables and reference dates
(:mod:`.cog`); season dates come as day of year and as days since the agricultural year's
start (:mod:`.season_days`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import xarray as xr

from fusecube.cube import PADDY_MASK, SEASON, YEAR, read_cube
from fusecube.grid.periods import year_label
from fusecube.products.cf import COUNT_NODATA, SEASON_COUNT, cf_dataset, dates_as_days, storage_encoding
from fusecube.products.cog import write_cog
from fusecube.products.season_days import DOY_REFERENCE, SEASON_START, days_name, with_season_days
from fusecube.products.season_reasons import reason_rows, write_reason_csv
from fusecube.stages.phenology import season_labels
from fusecube.storage.atomic import atomic_path

log = logging.getLogger(__name__)

__all__ = ["MAP_VARIABLES", "phenology_dataset", "write_cog", "write_cogs", "write_netcdf",
           "write_products"]

#: Date metrics written as COGs, each as day of year (``_doy``) and days since year start (``_days``).
MAP_METRICS = ("planting", "sos", "eos", "harvest")
MAP_VARIABLES = tuple(f"{m}_doy" for m in MAP_METRICS) + tuple(days_name(m) for m in MAP_METRICS)


def phenology_dataset(result: xr.Dataset, start_month: int = 11, geobox=None) -> xr.Dataset:
    """The season/year variables of a result, CF-1.8 georeferenced, with readable labels.

    Beside each date's day of year it holds days since the agricultural year's start
    (``sos_days``, reference ``season_start``); seasons are labelled ``2023/24 season1``.

    Args:
        result: The run's result dataset.
        start_month: First month of the agricultural year.
        geobox: The grid (default: the result's own).
    """
    names = [n for n, v in result.data_vars.items() if SEASON in v.dims or YEAR in v.dims]
    if PADDY_MASK in result:
        names.append(PADDY_MASK)
    ds = with_season_days(result[names], start_month)
    ds = ds.assign_coords(
        season_label=(SEASON, season_labels(ds, start_month), {"long_name": "season slot label"}),
        year_label=(YEAR, [year_label(int(y), start_month) for y in ds[YEAR].values],
                    {"long_name": "agricultural year label"}))
    return cf_dataset(ds, geobox if geobox is not None else result.odc.geobox,
                      title="fusecube rice phenology", start_month=start_month)


def write_netcdf(ds: xr.Dataset, path: Path) -> Path:
    """Write a compressed CF NetCDF atomically."""
    ds = dates_as_days(ds)
    encoding = storage_encoding(ds)
    for name in ds.variables:
        # level 1: Demak's phenology.nc in 1.7 s instead of 3.1 s (level 4), 39 vs 37 MB; with
        # the byte shuffle (30 layers since): 2.3 s and 72 MB instead of 3.0 s and 77 MB
        enc = encoding.setdefault(name, {})
        if name in ds.data_vars:
            enc.update(zlib=True, complevel=1, shuffle=True)
        if not enc:
            encoding.pop(name)
    with atomic_path(path) as staged:
        ds.to_netcdf(staged, engine="h5netcdf", encoding=encoding)
    return path


def write_cogs(pheno: xr.Dataset, out_dir: Path, crs) -> dict[str, str]:
    """One COG per map variable and season slot that has data, and one per year's season count.

    Files are named ``sos_doy_2023-24_season1.tif``; tags name the variable, the season and
    the reference of the dates (1 January for ``_doy``, ``season_start`` for ``_days``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    start_month = int(pheno.attrs.get("year_start_month", 11))
    labels = pheno["season_label"].values
    tags = season_labels(pheno, start_month, for_file=True)
    starts = pheno[SEASON_START].values if SEASON_START in pheno.coords else None
    for name in MAP_VARIABLES:
        if name not in pheno:
            continue
        for i, tag in enumerate(tags):
            layer = pheno[name].isel({SEASON: i})
            if not np.isfinite(layer.values).any():
                continue
            info = {"variable": name, "season": labels[i]}
            if name.endswith("_doy"):
                info["day_of_year_reference"] = DOY_REFERENCE
            elif starts is not None:
                start = np.datetime_as_string(starts[i], unit="D")
                info.update(reference_date=start, time_units=f"days since {start}")
            path = write_cog(layer, out_dir / f"{name}_{tag}.tif", crs, tags=info)
            written[f"{name}_{tag}"] = str(path)
    for i, label in enumerate(pheno["year_label"].values):
        tag = label.replace("/", "-")
        path = write_cog(pheno[SEASON_COUNT].isel({YEAR: i}), out_dir / f"season_count_{tag}.tif", crs,
                         dtype=np.uint8, nodata=COUNT_NODATA,
                         tags={"variable": SEASON_COUNT, "agricultural_year": label})
        written[f"season_count_{tag}"] = str(path)
    return written


def write_products(result, inputs, config, evaluation=None) -> dict[str, str]:
    """Write NetCDF, COGs, the block calendar and figures of a finished run.

    Writers only write: the inputs come resolved from the runner and the accuracy comes from
    the evaluation step (:func:`fusecube.evaluate.run.evaluate_run`).

    Args:
        result: The :class:`~fusecube.runner.RunResult` of the run (``out``, ``result``).
        inputs: The run's :class:`~fusecube.runner.inputs.RunInputs` (cube, truth, blocks).
        config: The run configuration (``phenology.year_start_month``).
        evaluation: What the evaluation step measured (its sample feeds the scatter figure).

    Returns:
        Product name → path.
    """
    out = Path(result.out)
    res = read_cube(result.result, chunks={})
    cube = read_cube(inputs.cube_path, chunks={})
    crs = cube.odc.geobox.crs.to_wkt()
    start_month = config.phenology.year_start_month
    pheno = phenology_dataset(res, start_month, cube.odc.geobox).load()
    products = {"result": str(result.result),
                "phenology": str(write_netcdf(pheno, out / "phenology.nc"))}
    products.update(write_cogs(pheno, out / "cogs", crs))
    if inputs.blocks is not None:
        from fusecube.products.block_calendar import block_calendar_table, write_block_calendar_csv

        table = block_calendar_table(pheno, inputs.blocks, cube.odc.geobox, start_month=start_month)
        products["block_calendar"] = str(write_block_calendar_csv(table, out / "block_calendar.csv"))
    reasons = write_reason_csv(reason_rows(pheno), out / "season_reasons.csv")
    if reasons:
        products["season_reasons"] = reasons
    truth = read_cube(inputs.truth_path, chunks={}) if inputs.truth_path else None
    try:
        from fusecube.products import figures as plots
    except ImportError:  # pragma: no cover - viz extra missing
        log.warning("matplotlib not installed: no figures (pip install 'fusecube[viz]')")
        return products
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    products["map_planting"] = str(plots.season_map(pheno, "planting_doy", fig_dir / "map_planting.png"))
    products["map_intensity"] = str(plots.intensity_map(pheno, fig_dir / "map_intensity.png"))
    if "season_reason" in pheno:
        products["map_season_reason"] = str(plots.reason_map(pheno, fig_dir / "map_season_reason.png"))
    from fusecube.quality.summary import screened_ndvi_periods

    products["curves"] = str(plots.pixel_curves(cube, res, truth, fig_dir / "pixel_curves.png",
                                                screened=screened_ndvi_periods(inputs.screen)))
    drawn = evaluation.sample.arrays() if evaluation is not None else {}
    if "true" in drawn:  # a truth with cloud-hidden paddy values
        products["scatter"] = str(plots.hidden_scatter(drawn, fig_dir / "gapfill_scatter.png"))
    return products
