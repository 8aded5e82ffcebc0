"""Rice calendar per irrigation block: the phenology maps summarised over vector polygons.

An agronomist plans water releases per irrigation block (petak tersier), not per pixel:
for each block and season slot this gives the number of paddy pixels, the share that grew
the season, the median and inter-quartile range of planting, SOS, peak, EOS and harvest
dates, and the mean cropping intensity of that agricultural year. Pixel seasons are first
re-slotted onto the block's calendar (:func:`align_to_block_calendar`). Pixels are grouped
with a rasterised block index, so the work is a few vectorised group-bys per season slot.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from odc.geo.geobox import GeoBox

from fusecube.cube import SEASON, YEAR, X, Y
from fusecube.errors import CubeSchemaError, InputFileError, MaskError, require
from fusecube.grid.periods import from_days, season_label, to_days
from fusecube.storage.atomic import atomic_path

log = logging.getLogger(__name__)

#: Date variables summarised per block (median and quartiles).
CALENDAR_DATES = ("planting", "sos", "pos", "eos", "harvest")
#: Other per-season variables summarised by their median.
CALENDAR_VALUES = ("length", "peak_value", "amplitude")


def read_blocks(blocks_path: str | Path, geobox: GeoBox, id_column: str | None = None):
    """Read irrigation-block polygons, repaired and reprojected to the grid's CRS.

    Args:
        blocks_path: Shapefile, GeoPackage, GeoJSON, ... with polygon features.
        geobox: The grid of the phenology maps.
        id_column: Column naming each block; default ``block_id`` when present, otherwise
            the feature's position (1, 2, ...).

    Returns:
        A GeoDataFrame with columns ``block_id`` and ``geometry`` in the grid's CRS.
    """
    gpd = require("geopandas", "geo")
    from shapely import force_2d, make_valid

    path = Path(blocks_path)
    if not path.exists():
        raise InputFileError(f"Irrigation-block file {path} does not exist.")
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio raises several types; all mean "unreadable"
        raise InputFileError(f"Irrigation-block file {path} cannot be read ({exc}).") from exc
    if gdf.crs is None:
        raise MaskError(f"Irrigation-block file {path} has no CRS; add one (e.g. a .prj file).")
    if id_column is None:
        ids = gdf["block_id"] if "block_id" in gdf else pd.Series(np.arange(1, len(gdf) + 1))
    elif id_column in gdf:
        ids = gdf[id_column]
    else:
        raise MaskError(f"Irrigation-block file {path} has no column {id_column!r}; "
                        f"it has {sorted(c for c in gdf.columns if c != 'geometry')}.")
    geoms = gdf.geometry.apply(lambda g: None if g is None or g.is_empty else force_2d(make_valid(g)))
    out = gpd.GeoDataFrame({"block_id": ids.to_numpy()}, geometry=geoms.to_numpy(), crs=gdf.crs)
    out = out[out.geometry.notna() & out.geom_type.isin(["Polygon", "MultiPolygon",
                                                         "GeometryCollection"])]
    if out.empty:
        raise MaskError(f"Irrigation-block file {path} holds no polygons.")
    return out.to_crs(geobox.crs.to_wkt())


def rasterize_blocks(blocks, geobox: GeoBox) -> np.ndarray:
    """Position (1..n, 0 outside) of the block covering each pixel centre; later blocks win."""
    from rasterio import features

    shapes = ((geom, i + 1) for i, geom in enumerate(blocks.geometry))
    return features.rasterize(shapes, out_shape=geobox.shape, transform=geobox.affine, fill=0,
                              dtype="int32")


def _days(var: xr.DataArray) -> np.ndarray:
    values = var.values
    return to_days(values) if np.issubdtype(values.dtype, np.datetime64) else values.astype(float)


def block_calendar_table(pheno: xr.Dataset, blocks_path: str | Path, geobox: GeoBox, *,
                         id_column: str | None = None, start_month: int = 11) -> pd.DataFrame:
    """Per-irrigation-block rice calendar: one row per block and season slot.

    Args:
        pheno: The phenology dataset (``(season, y, x)`` dates/values, ``(year, y, x)``
            ``season_count``) on ``geobox``. Pixels where ``season_count`` is NaN were not
            analysed (not paddy) and are left out.
        blocks_path: Vector file of irrigation blocks.
        geobox: The grid of ``pheno``.
        id_column: Column naming the blocks (see :func:`read_blocks`).
        start_month: First month of the agricultural year, for the season labels.

    Returns:
        DataFrame with ``block_id``, ``season``, ``season_label``, ``n_paddy_pixels``,
        ``n_with_season``, ``share_with_season``, ``<date>_median``/``_p25``/``_p75`` (dates)
        for planting, SOS, POS, EOS, harvest, ``<value>_median`` for length, peak NDVI and
        amplitude, and ``intensity_mean`` (mean seasons per paddy pixel in that year).
        Blocks without analysed pixels are left out.
    """
    if (pheno.sizes.get(Y), pheno.sizes.get(X)) != tuple(geobox.shape):
        raise CubeSchemaError(
            f"Phenology grid {pheno.sizes.get(Y)} x {pheno.sizes.get(X)} does not match the grid "
            f"{geobox.shape[0]} x {geobox.shape[1]}; pass the GeoBox of the phenology maps.")
    blocks = read_blocks(blocks_path, geobox, id_column)
    position = rasterize_blocks(blocks, geobox).reshape(-1)
    counts = pheno["season_count"].transpose(YEAR, Y, X).values.reshape(pheno.sizes[YEAR], -1)
    analysed = np.isfinite(counts).any(axis=0)
    keep = (position > 0) & analysed
    if not keep.any():
        raise MaskError(f"No analysed (paddy) pixel lies inside the blocks of {blocks_path}; "
                        "check that the file covers the area of interest.")
    block_ids = blocks["block_id"].to_numpy()
    group = pd.Index(position[keep], name="position")
    years = pheno[YEAR].values
    intensity = pd.DataFrame(counts[:, keep].T, index=group).groupby(level=0).mean()
    rows = []
    season_years = pheno["season_year"].values if "season_year" in pheno.coords else None
    numbers = pheno["season_number"].values if "season_number" in pheno.coords else None
    values = {name: _days(pheno[name].transpose(SEASON, Y, X)).reshape(pheno.sizes[SEASON], -1)[
        :, keep] for name in (*CALENDAR_DATES, *CALENDAR_VALUES) if name in pheno}
    if season_years is not None and "pos" in values:
        slot_year = np.searchsorted(years, season_years)
        values = align_to_block_calendar(values, group.to_numpy(), counts[:, keep], slot_year)
    for s in range(pheno.sizes[SEASON]):
        frame = pd.DataFrame({name: v[s] for name, v in values.items()}, index=group)
        grouped = frame.groupby(level=0)
        table = pd.DataFrame({"n_paddy_pixels": grouped.size(),
                              "n_with_season": grouped["pos"].count()})
        table["share_with_season"] = table["n_with_season"] / table["n_paddy_pixels"]
        for name in CALENDAR_DATES:
            if name not in frame:
                continue
            quartiles = grouped[name].quantile([0.25, 0.5, 0.75]).unstack()
            for q, tag in ((0.5, "median"), (0.25, "p25"), (0.75, "p75")):
                table[f"{name}_{tag}"] = pd.to_datetime(from_days(np.round(quartiles[q].to_numpy())))
        for name in CALENDAR_VALUES:
            if name in frame:
                table[f"{name}_median"] = grouped[name].median()
        table.insert(0, "season", s)
        if season_years is not None:
            year = int(season_years[s])
            table.insert(1, "season_label", season_label(year, int(numbers[s]), start_month))
            table["intensity_mean"] = intensity[int(np.flatnonzero(years == year)[0])]
        rows.append(table)
    out = pd.concat(rows)
    out.insert(0, "block_id", block_ids[out.index.to_numpy() - 1])
    return out.reset_index(drop=True).sort_values(["block_id", "season"], kind="stable",
                                                  ignore_index=True)


def align_to_block_calendar(values: dict[str, np.ndarray], group: np.ndarray,
                            counts: np.ndarray, slot_year: np.ndarray) -> dict[str, np.ndarray]:
    """Re-slot each pixel's seasons onto its block's calendar before summarising.

    Slots are filled in time order per pixel, so a pixel whose first season of the year was
    missed (clouds, a late start) holds its second season in slot 1. Within a block the
    reference date of each slot is the median peak of the pixels that grew the block's
    largest number of seasons that year; every pixel season goes to the slot whose reference
    peak is nearest, keeping their time order.

    Args:
        values: ``(S, P)`` arrays per metric (``pos`` required), days for dates.
        group: ``(P,)`` block of each pixel.
        counts: ``(Y, P)`` seasons per agricultural year.
        slot_year: ``(S,)`` year index of each slot.

    Returns:
        The same metrics, re-slotted.
    """
    out = {name: np.full_like(v, np.nan) for name, v in values.items()}
    n_pix = group.size
    cols = np.arange(n_pix)
    for year in np.unique(slot_year):
        slots = np.flatnonzero(slot_year == year)
        pos = values["pos"][slots]  # (k, P), time-ordered, left-packed
        count = counts[year]
        block_max = pd.Series(count).groupby(group).transform("max").to_numpy()
        full = (count == block_max) & (count > 0)
        reference = np.vstack([
            pd.Series(np.where(full, pos[j], np.nan)).groupby(group).transform("median").to_numpy()
            for j in range(slots.size)])
        previous = np.full(n_pix, -1)
        for i in range(slots.size):
            has = np.isfinite(pos[i])
            distance = np.abs(pos[i][None, :] - reference)
            distance = np.where(np.isfinite(distance), distance, np.inf)
            nearest = np.argmin(distance, axis=0)
            # no reference at all (a block-year without full pixels): keep the order
            nearest = np.where(np.isfinite(distance.min(axis=0)), nearest, i)
            target = np.maximum(nearest, previous + 1)
            ok = has & (target < slots.size)
            for name, v in values.items():
                out[name][slots[target[ok]], cols[ok]] = v[slots[i], cols[ok]]
            previous = np.where(ok, target, previous)
    return out


def write_block_calendar_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """Write the block calendar as CSV (ISO dates) atomically: temporary name, then rename."""
    path = Path(path)
    with atomic_path(path) as staged:
        table.to_csv(staged, index=False, date_format="%Y-%m-%d", float_format="%.4g")
    log.info("block calendar: %d rows written to %s", len(table), path)
    return path
