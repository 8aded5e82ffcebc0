"""Areas on a grid and the minimum mapping unit.

km² per pixel row (rows differ on geographic grids), paddy area in total and per polygon, and
the minimum-mapping-unit clean-up of a 0/1 map (a sieve, no loop over patches).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from fusecube.errors import MaskError, require

EARTH_RADIUS_M = 6371008.8  # mean radius; cell areas of geographic grids


def pixel_areas_km2(geobox: GeoBox) -> np.ndarray:
    """Area of each pixel row in km² (shape ``(ny, 1)``; geographic grids vary with latitude)."""
    ny, _ = geobox.shape
    aff = geobox.affine
    if geobox.crs is not None and geobox.crs.geographic:
        edges = aff.f + aff.e * np.arange(ny + 1)  # latitude of row edges (north-up grid)
        lat = np.radians(edges)
        band = np.abs(np.sin(lat[:-1]) - np.sin(lat[1:]))
        area_m2 = EARTH_RADIUS_M**2 * np.radians(abs(aff.a)) * band
        return (area_m2 / 1e6)[:, None]
    factor = 1.0
    if geobox.crs is not None:
        units = geobox.crs.units[0] if geobox.crs.units else "metre"
        factor = {"metre": 1.0, "m": 1.0, "foot": 0.3048,
                  "US survey foot": 1200 / 3937}.get(units, 1.0)
    area_m2 = abs(aff.a * aff.e - aff.b * aff.d) * factor**2
    return np.full((ny, 1), area_m2 / 1e6)


def clean_mask(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Minimum mapping unit: drop paddy patches and fill non-paddy holes under ``min_pixels``.

    Connectivity is 4-neighbour (a sieve, like ``gdal_sieve``); patches are counted with one
    ``ndimage.label`` and a ``bincount``, no loop over patches.

    Args:
        mask: ``(y, x)`` 0/1 map.
        min_pixels: Smallest patch kept (1 or less: unchanged).

    Returns:
        The cleaned ``(y, x)`` uint8 map.
    """
    from scipy import ndimage

    out = np.asarray(mask).astype(bool)
    if min_pixels <= 1:
        return out.astype(np.uint8)
    for value in (True, False):  # remove small paddy islands, then fill small holes
        patches, _ = ndimage.label(out == value)
        sizes = np.bincount(patches.ravel())
        small = (sizes < min_pixels) & (np.arange(sizes.size) > 0)
        out = np.where(small[patches], not value, out)
    return out.astype(np.uint8)


def pixel_area_km2(geobox: GeoBox) -> np.ndarray:
    """``(ny, 1)`` area of the pixels of each row in km² (rows differ on geographic grids)."""
    return pixel_areas_km2(geobox)


def mmu_pixels(min_mapping_unit_ha: float, geobox: GeoBox) -> int:
    """Pixels in a minimum mapping unit of ``min_mapping_unit_ha`` hectares (at least 1)."""
    mean_km2 = float(pixel_area_km2(geobox).mean())
    return max(1, int(math.ceil(min_mapping_unit_ha / 100.0 / mean_km2 - 1e-9)))


def paddy_area_km2(mask: xr.DataArray) -> float:
    """Total paddy area in km² of a ``(y, x)`` 0/1 map carrying its grid."""
    areas = pixel_area_km2(mask.odc.geobox)
    return float(((np.asarray(mask.values) > 0) * areas).sum())


def paddy_area_by_polygon(mask: xr.DataArray, polygons: str | Path, *,
                          id_column: str | None = None):
    """Paddy area inside each polygon (administrative units, irrigation blocks, ...).

    Each pixel counts for the polygon covering its centre (the last one where polygons overlap).

    Args:
        mask: ``(y, x)`` 0/1 paddy map with its grid.
        polygons: Vector file, any CRS.
        id_column: Column naming the polygons (default: the row number).

    Returns:
        A pandas DataFrame with ``id``, ``paddy_km2``, ``polygon_km2`` (pixels inside) and
        ``paddy_fraction``, one row per polygon.
    """
    import pandas as pd

    gpd = require("geopandas", "geo")
    from rasterio import features

    path = Path(polygons)
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:
        from fusecube.errors import InputFileError

        raise InputFileError(f"Polygons {path} cannot be read as a vector file ({exc}); give "
                             "a Shapefile, GeoPackage or GeoJSON.") from exc
    if gdf.crs is None:
        raise MaskError(f"Polygons {path} have no CRS; set one (e.g. a .prj file).")
    if id_column is not None and id_column not in gdf.columns:
        raise MaskError(f"Polygons {path} have no column {id_column!r}; columns are "
                        f"{[c for c in gdf.columns if c != 'geometry']}.")
    geobox = mask.odc.geobox
    geoms = gdf.geometry.to_crs(geobox.crs.to_wkt())
    geoms = geoms.where(geoms.is_valid, geoms.make_valid())
    zone = features.rasterize(((g, i + 1) for i, g in enumerate(geoms) if g is not None
                               and not g.is_empty),
                              out_shape=geobox.shape, transform=geobox.affine, fill=0,
                              dtype="int32")
    areas = np.broadcast_to(pixel_area_km2(geobox), geobox.shape)
    paddy = np.asarray(mask.values) > 0
    n = len(gdf) + 1
    total = np.bincount(zone.ravel(), weights=areas.ravel(), minlength=n)[1:]
    inside = np.bincount(zone.ravel(), weights=(areas * paddy).ravel(), minlength=n)[1:]
    ids = gdf[id_column].to_numpy() if id_column else np.arange(len(gdf))
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)
    return pd.DataFrame({"id": ids, "paddy_km2": inside, "polygon_km2": total,
                         "paddy_fraction": fraction})
