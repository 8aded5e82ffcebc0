"""Masks from vector files (Shapefile, GeoPackage, GeoJSON, ...) rasterised onto the cube grid.

Features are read only over the area of interest (a bbox filter in the file's own CRS), Z
coordinates are dropped, invalid geometries repaired with ``shapely.make_valid`` and the
non-polygon parts dropped, every step counted in the :class:`~fusecube.masks.report.MaskReport`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from odc.geo.geobox import GeoBox

from fusecube.errors import InputFileError, MaskError, require
from fusecube.masks.report import MaskReport, _aoi_text, coverage

log = logging.getLogger(__name__)


POLYGON_TYPES = ("Polygon", "MultiPolygon")


def _polygon_parts(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the polygonal parts of each geometry; returns ``(multipolygons, keep)`` per row."""
    import shapely

    parts, index = geoms, np.arange(len(geoms))
    # make_valid can return nested collections: flatten until only simple geometries remain
    while len(parts) and np.isin(shapely.get_type_id(parts), (4, 5, 6, 7)).any():
        parts, sub = shapely.get_parts(parts, return_index=True)
        index = index[sub]
    polygonal = (shapely.get_type_id(parts) == 3) & ~shapely.is_empty(parts)
    parts, index = parts[polygonal], index[polygonal]
    out = np.full(len(geoms), None, dtype=object)
    keep = np.zeros(len(geoms), bool)
    if len(parts):
        groups, inverse = np.unique(index, return_inverse=True)
        out[groups] = shapely.multipolygons(parts, indices=inverse)
        keep[groups] = True
    return out, keep


def _read_vector(path: Path, geobox: GeoBox):
    """Read the features whose envelope meets the area of interest; returns (gdf, n_total, crs)."""
    gpd = require("geopandas", "geo")
    pyogrio = require("pyogrio", "geo")
    try:
        info = pyogrio.read_info(path)
    except Exception as exc:  # GDAL raises DataSourceError, DataLayerError, OSError...
        raise InputFileError(
            f"Mask {path} cannot be read as a vector file ({type(exc).__name__}: {exc}); "
            "check that the file is complete (a Shapefile needs its .shx/.dbf beside it) "
            "or re-export it as GeoPackage."
        ) from exc
    if not info.get("crs"):
        raise MaskError(
            f"Mask {path} has no CRS, so it cannot be placed on the cube grid; add one "
            "(a .prj beside the Shapefile, or gdf.set_crs('EPSG:4326').to_file(...))."
        )
    n_total = int(info.get("features") or 0)
    if n_total == 0:
        raise MaskError(f"Mask {path} has no features; it needs polygons of the paddy area.")
    from odc.geo import CRS

    file_crs = CRS(info["crs"])
    try:
        bbox = geobox.extent.to_crs(file_crs).boundingbox
        bbox = tuple(float(v) for v in (bbox.left, bbox.bottom, bbox.right, bbox.top))
    except Exception:  # area of interest not representable in the file CRS: read all
        bbox = None
    try:
        gdf = gpd.read_file(path, bbox=bbox) if bbox is not None else gpd.read_file(path)
    except Exception as exc:
        raise InputFileError(
            f"Mask {path} cannot be read as a vector file ({type(exc).__name__}: {exc}); "
            "it may be truncated or corrupt: export it again."
        ) from exc
    return gdf, n_total, file_crs


def vector_mask_with_report(path: str | Path, geobox: GeoBox) -> tuple[np.ndarray, MaskReport]:
    """Rasterise the polygons of a vector file onto ``geobox`` (1 inside, 0 outside).

    Args:
        path: Shapefile, GeoPackage, GeoJSON, FlatGeobuf or GeoParquet file, any CRS.
        geobox: The cube grid.

    Returns:
        ``(mask (ny, nx) uint8, report)``.

    Raises:
        InputFileError: The file cannot be read.
        MaskError: No CRS, no polygon left after repair, or no overlap with the area of interest.
    """
    import shapely
    from rasterio import features

    path = Path(path)
    gdf, n_total, file_crs = _read_vector(path, geobox)
    report = MaskReport(source=str(path), kind="vector", source_crs=str(file_crs),
                        n_features=n_total, n_read=len(gdf))
    if len(gdf) == 0:
        raise MaskError(
            f"Mask {path} ({n_total} features) does not overlap the area of interest "
            f"{_aoi_text(geobox)}: check that the mask and the cube cover the same place "
            "and that the mask's CRS is right."
        )
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    null = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    report.n_null = int(null.sum())
    geoms = geoms[~null]
    report.had_z = bool(shapely.has_z(geoms).any())
    geoms = shapely.force_2d(geoms)
    invalid = ~shapely.is_valid(geoms)
    report.n_invalid = int(invalid.sum())
    if invalid.any():
        geoms[invalid] = shapely.make_valid(geoms[invalid])
    geoms, keep = _polygon_parts(geoms)
    report.n_non_polygon = int((~keep).sum())
    geoms = geoms[keep]
    report.n_used = len(geoms)
    for count, what in ((report.n_null, "empty or missing geometries dropped"),
                        (report.n_invalid, "invalid geometries repaired"),
                        (report.n_non_polygon, "non-polygon features dropped")):
        if count:
            report.notes.append(f"{count} {what}")
            log.info("mask %s: %d %s", path, count, what)
    if report.n_used == 0:
        raise MaskError(
            f"Mask {path}: nothing is left after repair ({report.n_read} features read, "
            f"{report.n_null} empty, {report.n_invalid} invalid, {report.n_non_polygon} not "
            "polygons); the mask needs polygon features of the paddy area."
        )
    import geopandas as gpd

    projected = gpd.GeoSeries(geoms, crs=file_crs.to_wkt()).to_crs(geobox.crs.to_wkt())
    # repair again: reprojection can make a valid ring self-intersect
    projected = projected.where(projected.is_valid, projected.make_valid())
    burned = features.rasterize(((g, 1) for g in projected if g is not None and not g.is_empty),
                                out_shape=geobox.shape, transform=geobox.affine, fill=0,
                                dtype="uint8")
    if not geobox.crs.geographic:
        aoi = shapely.box(*geobox.extent.boundingbox)
        report.polygon_km2 = float(shapely.area(shapely.intersection(
            shapely.union_all(projected.values), aoi)) / 1e6)
    coverage(report, burned, geobox)
    if report.pixels == 0:
        raise MaskError(
            f"Mask {path}: {report.n_used} polygons near the area of interest "
            f"{_aoi_text(geobox)} but none covers a pixel centre; check the mask's CRS or use "
            "a finer grid."
        )
    return burned, report


def vector_mask(path: str | Path, geobox: GeoBox) -> np.ndarray:
    """Rasterise polygons of a vector file onto ``geobox`` (1 inside, 0 outside)."""
    return vector_mask_with_report(path, geobox)[0]
