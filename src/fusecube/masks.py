"""Paddy/land masks from vectors (Shapefile, GeoPackage, GeoJSON) or rasters, on the cube's grid."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from fusecube.cube import PADDY_MASK, X, Y
from fusecube.errors import InputFileError, MaskError, require

log = logging.getLogger(__name__)

VECTOR_SUFFIXES = {".shp", ".gpkg", ".geojson", ".json", ".fgb", ".parquet"}
RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img"}


def vector_mask(path: str | Path, geobox: GeoBox) -> np.ndarray:
    """Rasterise polygons of a vector file onto ``geobox`` (1 inside, 0 outside)."""
    gpd = require("geopandas", "geo")
    from rasterio import features
    from shapely import make_valid
    from shapely import force_2d

    path = Path(path)
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:
        raise InputFileError(f"Mask {path} cannot be read as a vector file ({exc}).") from exc
    if gdf.crs is None:
        raise MaskError(f"Mask {path} has no CRS; add one (e.g. a .prj file or gdf.set_crs('EPSG:4326')).")
    geoms = gdf.geometry.dropna()
    geoms = geoms[~geoms.is_empty]
    invalid = ~geoms.is_valid
    if invalid.any():
        log.info("mask %s: repaired %d invalid geometries", path, int(invalid.sum()))
        geoms = geoms.where(~invalid, make_valid(geoms[invalid].values) if invalid.any() else geoms)
    geoms = geoms.apply(force_2d).to_crs(geobox.crs.to_wkt())
    geoms = geoms[geoms.geom_type.isin(["Polygon", "MultiPolygon", "GeometryCollection"])]
    if geoms.empty:
        raise MaskError(f"Mask {path} has no polygons after repair; it needs polygon features.")
    burned = features.rasterize(((g, 1) for g in geoms), out_shape=geobox.shape,
                                transform=geobox.affine, fill=0, dtype="uint8")
    if not burned.any():
        raise MaskError(f"Mask {path} does not overlap the area of interest {geobox.extent.boundingbox}.")
    return burned


def raster_mask(path: str | Path, geobox: GeoBox) -> np.ndarray:
    """Read a raster mask onto ``geobox`` by nearest-neighbour, reading only the needed window."""
    import rasterio
    from rasterio.vrt import WarpedVRT
    from rasterio.enums import Resampling

    path = Path(path)
    try:
        src = rasterio.open(path)
    except Exception as exc:
        raise InputFileError(f"Mask {path} cannot be opened as a raster ({exc}).") from exc
    with src:
        if src.crs is None:
            raise MaskError(f"Mask {path} has no CRS; assign one with gdal_edit.py -a_srs.")
        with WarpedVRT(src, crs=geobox.crs.to_wkt(), transform=geobox.affine, width=geobox.shape[1],
                       height=geobox.shape[0], resampling=Resampling.nearest) as vrt:
            data = vrt.read(1)
    mask = (data > 0).astype(np.uint8)
    if not mask.any():
        raise MaskError(f"Mask {path} has no positive pixels inside the area of interest.")
    return mask


def resolve_mask(spec: str, cube: xr.Dataset) -> xr.DataArray | None:
    """Turn a mask spec into a ``(y, x)`` uint8 DataArray on the cube's grid.

    Args:
        spec: ``"cube"`` (the cube's own ``paddy_mask``), ``"none"``, or a vector/raster path.
        cube: The cube whose grid the mask must match.

    Returns:
        The mask, or None for ``"none"``.
    """
    if spec == "none":
        return None
    if spec == "cube":
        if PADDY_MASK not in cube:
            raise MaskError("mask='cube' but the cube has no paddy_mask variable; "
                            "pass a mask file with --mask PATH or use --mask none.")
        return cube[PADDY_MASK].load().astype(np.uint8)
    path = Path(spec)
    if not path.exists():
        raise InputFileError(f"Mask file {path} does not exist.")
    geobox = cube.odc.geobox
    suffix = path.suffix.lower()
    if suffix in VECTOR_SUFFIXES:
        data = vector_mask(path, geobox)
    elif suffix in RASTER_SUFFIXES:
        data = raster_mask(path, geobox)
    else:
        raise MaskError(f"Mask {path}: unknown format {suffix!r}; use a Shapefile, GeoPackage, "
                        "GeoJSON or GeoTIFF.")
    return xr.DataArray(data, dims=(Y, X), coords={Y: cube[Y], X: cube[X]}, name=PADDY_MASK)
