"""Paddy/land masks from vectors (Shapefile, GeoPackage, GeoJSON) or rasters, on the cube's grid.

Vector masks are read only over the area of interest (a bbox filter in the file's own CRS),
Z coordinates are dropped, invalid geometries repaired with ``shapely.make_valid`` and the
non-polygon parts dropped, every step counted. Raster masks are read by window (only the
rows/columns under the area of interest, plus a margin) and resampled to the cube's GeoBox by
nearest neighbour, so a 24870 x 8475 island mask never loads whole. Each mask comes with a
:class:`MaskReport` (counts and coverage in pixels, km² and % of the area of interest).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from fusecube.cube import PADDY_MASK, X, Y
from fusecube.errors import InputFileError, MaskError, require

log = logging.getLogger(__name__)

VECTOR_SUFFIXES = {".shp", ".gpkg", ".geojson", ".json", ".fgb", ".parquet"}
RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img"}
POLYGON_TYPES = ("Polygon", "MultiPolygon")
EARTH_RADIUS_M = 6371008.8  # mean radius; cell areas of geographic grids


@dataclass
class MaskReport:
    """What building a mask did and how much of the area of interest it covers."""

    source: str
    """The mask spec: a path, ``"cube"`` or ``"none"``."""
    kind: str
    """``"vector"``, ``"raster"`` or ``"cube"``."""
    source_crs: str | None = None
    """CRS of the mask file (before reprojection to the cube grid)."""
    n_features: int = 0
    """Vector features in the file."""
    n_read: int = 0
    """Vector features read (those whose envelope touches the area of interest)."""
    n_null: int = 0
    """Features with a missing or empty geometry (dropped)."""
    n_invalid: int = 0
    """Invalid geometries (self-intersections, ...) repaired with ``make_valid``."""
    n_non_polygon: int = 0
    """Features dropped because nothing polygonal was left (points, lines, collapsed rings)."""
    n_used: int = 0
    """Polygon features burned into the mask."""
    had_z: bool = False
    """Whether the geometries carried Z coordinates (dropped)."""
    window: tuple[int, int, int, int] | None = None
    """Raster window read ``(row_off, col_off, height, width)``."""
    file_shape: tuple[int, int] | None = None
    """Full raster size ``(height, width)``."""
    bytes_read: int = 0
    """Bytes of decoded raster pixels read (the window only)."""
    pixels: int = 0
    """Mask pixels (value 1) on the cube grid."""
    aoi_pixels: int = 0
    """Pixels of the area of interest (the cube grid)."""
    km2: float = 0.0
    """Area of the mask pixels in km²."""
    aoi_km2: float = 0.0
    """Area of the area of interest in km²."""
    percent_of_aoi: float = 0.0
    """Mask pixels as a percentage of the area of interest."""
    polygon_km2: float | None = None
    """Area of the polygons clipped to the area of interest (vector masks), for comparison."""
    notes: list[str] = field(default_factory=list)
    """Human-readable remarks (repairs, drops)."""

    def to_dict(self) -> dict:
        """JSON-able dictionary."""
        return asdict(self)


# ----------------------------------------------------------------------------- areas
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


def coverage(report: MaskReport, mask: np.ndarray, geobox: GeoBox) -> MaskReport:
    """Fill the coverage fields of ``report`` from a ``(y, x)`` 0/1 mask."""
    areas = pixel_areas_km2(geobox)
    on = mask > 0
    report.pixels = int(on.sum())
    report.aoi_pixels = int(mask.size)
    report.km2 = float((on * areas).sum())
    report.aoi_km2 = float(areas.sum() * mask.shape[1])
    report.percent_of_aoi = 100.0 * report.pixels / max(report.aoi_pixels, 1)
    return report


def crs_text(crs) -> str:
    """``EPSG:32749`` when the CRS has an EPSG code, else its WKT."""
    epsg = getattr(crs, "epsg", None)
    return f"EPSG:{epsg}" if epsg else str(crs)


def _aoi_text(geobox: GeoBox) -> str:
    b = geobox.extent.boundingbox
    return f"({b.left:.6g}, {b.bottom:.6g}, {b.right:.6g}, {b.top:.6g}) in {crs_text(geobox.crs)}"


# ----------------------------------------------------------------------------- vectors
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


# ----------------------------------------------------------------------------- rasters
def _source_window(src, geobox: GeoBox, margin: int = 2):
    """The window of ``src`` under the area of interest (plus ``margin`` pixels), or None."""
    from rasterio.windows import Window, from_bounds

    b = geobox.extent.to_crs(src.crs.to_wkt()).boundingbox
    win = from_bounds(b.left, b.bottom, b.right, b.top, transform=src.transform)
    row0 = int(np.floor(win.row_off)) - margin
    col0 = int(np.floor(win.col_off)) - margin
    row1 = int(np.ceil(win.row_off + win.height)) + margin
    col1 = int(np.ceil(win.col_off + win.width)) + margin
    row0, col0 = max(row0, 0), max(col0, 0)
    row1, col1 = min(row1, src.height), min(col1, src.width)
    if row1 <= row0 or col1 <= col0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def raster_mask_with_report(path: str | Path, geobox: GeoBox, *,
                            band: int = 1) -> tuple[np.ndarray, MaskReport]:
    """Read a raster mask onto ``geobox`` by nearest neighbour, reading only the needed window.

    Pixels > 0 (and not nodata) are mask. Only the rows and columns of the source under the
    area of interest are decoded.

    Args:
        path: GeoTIFF (or any GDAL raster) with a CRS.
        geobox: The cube grid.
        band: Band to read (1-based).

    Returns:
        ``(mask (ny, nx) uint8, report)``; ``report.window`` and ``report.bytes_read`` say what
        was read.

    Raises:
        InputFileError: The file cannot be opened or its pixels cannot be decoded.
        MaskError: No CRS, no overlap, or no positive pixel inside the area of interest.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    path = Path(path)
    try:
        src = rasterio.open(path)
    except Exception as exc:  # RasterioIOError and friends
        raise InputFileError(
            f"Mask {path} cannot be opened as a raster ({type(exc).__name__}: {exc}); "
            "check the file is a complete GeoTIFF or re-export it."
        ) from exc
    with src:
        if src.crs is None:
            raise MaskError(
                f"Mask {path} has no CRS, so it cannot be placed on the cube grid; assign one, "
                "e.g. gdal_edit.py -a_srs EPSG:4326 " + str(path)
            )
        report = MaskReport(source=str(path), kind="raster", source_crs=str(src.crs),
                            file_shape=(src.height, src.width))
        window = _source_window(src, geobox)
        if window is None:
            b = src.bounds
            raise MaskError(
                f"Mask {path} (bounds {b.left:.6g}, {b.bottom:.6g}, {b.right:.6g}, {b.top:.6g} "
                f"in {src.crs}) does not overlap the area of interest {_aoi_text(geobox)}; use "
                "a mask of the same place or check both CRSs."
            )
        try:
            data = src.read(band, window=window)
        except Exception as exc:
            raise InputFileError(
                f"Mask {path}: pixels of window {window} cannot be decoded "
                f"({type(exc).__name__}: {exc}); the file may be truncated: copy it again."
            ) from exc
        valid = data > 0
        if src.nodata is not None:
            valid &= data != src.nodata
        report.window = (int(window.row_off), int(window.col_off), int(window.height),
                         int(window.width))
        report.bytes_read = int(data.nbytes)
        win_transform = src.window_transform(window)
        burned = np.zeros(geobox.shape, np.uint8)
        reproject(valid.astype(np.uint8), burned, src_transform=win_transform, src_crs=src.crs,
                  dst_transform=geobox.affine, dst_crs=geobox.crs.to_wkt(),
                  resampling=Resampling.nearest, src_nodata=None, dst_nodata=None)
    coverage(report, burned, geobox)
    log.info("mask %s: read window %s (%d bytes) of %s", path, report.window, report.bytes_read,
             report.file_shape)
    if report.pixels == 0:
        raise MaskError(
            f"Mask {path} has no positive pixels inside the area of interest {_aoi_text(geobox)}; "
            "it overlaps the cube but is 0/nodata there: check that it is the right mask."
        )
    return burned, report


def raster_mask(path: str | Path, geobox: GeoBox) -> np.ndarray:
    """Read a raster mask onto ``geobox`` by nearest neighbour, reading only the needed window."""
    return raster_mask_with_report(path, geobox)[0]


# ----------------------------------------------------------------------------- resolver
def mask_with_report(spec: str, cube: xr.Dataset) -> tuple[xr.DataArray | None, MaskReport]:
    """Turn a mask spec into a ``(y, x)`` uint8 DataArray on the cube's grid, with its report.

    Args:
        spec: ``"cube"`` (the cube's own ``paddy_mask``), ``"auto"`` (detected from the time
            series), ``"none"``, or a vector/raster path.
        cube: The cube whose grid the mask must match.

    Returns:
        ``(mask or None for "none", report)``.
    """
    if spec == "none":
        return None, MaskReport(source="none", kind="none")
    try:
        geobox = cube.odc.geobox
    except Exception:
        geobox = None
    if spec == "cube":
        if PADDY_MASK not in cube:
            raise MaskError("mask='cube' but the cube has no paddy_mask variable; "
                            "pass a mask file with --mask PATH or use --mask none.")
        mask = cube[PADDY_MASK].load().astype(np.uint8)
        report = MaskReport(source="cube", kind="cube")
        if geobox is not None:
            coverage(report, mask.values, geobox)
        return mask, report
    if spec == "auto":  # paddy detected from the cube's own time series (fusecube.masks.paddy)
        from fusecube.masks.paddy import paddy_mask_auto

        mask = paddy_mask_auto(cube)
        report = MaskReport(source="auto", kind="auto")
        if geobox is not None:
            coverage(report, mask.values, geobox)
        return mask, report
    path = Path(spec)
    if not path.exists():
        raise InputFileError(f"Mask file {path} does not exist; give a Shapefile, GeoPackage, "
                             "GeoJSON or GeoTIFF path, 'cube' or 'none'.")
    if geobox is None or geobox.crs is None:
        raise MaskError(f"Mask {path} cannot be placed: the cube has no CRS/grid; attach one with "
                        "ds.odc.assign_crs(...).")
    suffix = path.suffix.lower()
    if suffix in VECTOR_SUFFIXES:
        data, report = vector_mask_with_report(path, geobox)
    elif suffix in RASTER_SUFFIXES:
        data, report = raster_mask_with_report(path, geobox)
    else:
        raise MaskError(f"Mask {path}: unknown format {suffix!r}; use a Shapefile, GeoPackage, "
                        "GeoJSON or GeoTIFF.")
    mask = xr.DataArray(data, dims=(Y, X), coords={Y: cube[Y], X: cube[X]}, name=PADDY_MASK)
    return mask, report


def resolve_mask(spec: str, cube: xr.Dataset) -> xr.DataArray | None:
    """Turn a mask spec into a ``(y, x)`` uint8 DataArray on the cube's grid.

    Args:
        spec: ``"cube"`` (the cube's own ``paddy_mask``), ``"auto"`` (detected from the time
            series), ``"none"``, or a vector/raster path.
        cube: The cube whose grid the mask must match.

    Returns:
        The mask (coverage in ``attrs["coverage_pixels"|"coverage_km2"|"coverage_percent"]``),
        or None for ``"none"``.
    """
    mask, report = mask_with_report(spec, cube)
    if mask is not None:
        mask.attrs["coverage_pixels"] = report.pixels
        mask.attrs["coverage_km2"] = round(report.km2, 4)
        mask.attrs["coverage_percent"] = round(report.percent_of_aoi, 4)
        log.info("mask %s: %d pixels, %.2f km², %.2f %% of the area of interest",
                 spec, report.pixels, report.km2, report.percent_of_aoi)
    return mask
