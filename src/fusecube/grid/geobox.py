"""Every way of saying "where" → one odc-geo ``GeoBox``.

An area of interest (AOI) can be a bbox (with its CRS), a polygon (GeoJSON mapping, shapely
or odc-geo geometry), a vector file (GeoJSON, GeoPackage, Shapefile), or an existing grid
(``like=``: a GeoBox, a cube, a raster file). :func:`resolve_geobox` turns any one of these,
plus an optional CRS and resolution, into the single grid value the rest of fusecube uses.
When no CRS is given the UTM zone of the AOI centre is chosen, so pixels are square metres,
and :func:`grid_attrs` records the zone and the centre in the cube. An AOI crossing the
antimeridian, an invalid (e.g. self-intersecting) polygon and a resolution that is not a
positive number are refused with the fix.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from odc.geo import geom
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox

from fusecube.errors import GridError, InputFileError

log = logging.getLogger(__name__)

#: Default pixel size in metres (Sentinel-2 red/NIR).
DEFAULT_RESOLUTION = 10.0
#: Refuse grids larger than this many pixels (a resolution given in the wrong unit).
MAX_PIXELS = 2_000_000_000
#: File suffixes read as vector data (AOIs, masks, polygons).
VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".fgb", ".parquet")
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".nc")

AOILike = Any  # bbox tuple/str, GeoJSON mapping, shapely/odc geometry, or a path
ANTIMERIDIAN_FIX = ("Split the AOI at 180° into two AOIs, one east and one west of it (e.g. "
                    "179.5,-17,180,-16 and -180,-17,-179.5,-16), each gridded in its own UTM zone.")
"""How to fix an AOI that crosses the antimeridian (fusecube grids an AOI in one UTM zone)."""
INVALID_FIX = ("Repair it first: shapely.make_valid(polygon) or polygon.buffer(0) in Python, "
               "'Fix geometries' in QGIS, or ogr2ogr -makevalid.")
"""How to fix a self-intersecting or otherwise invalid polygon."""


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """Parse ``"minx,miny,maxx,maxy"`` (commas or spaces) into four floats."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError as exc:
        raise GridError(f"bbox {text!r} is not four numbers; write minx,miny,maxx,maxy.") from exc
    if len(values) != 4:
        raise GridError(f"bbox {text!r} has {len(values)} numbers; write minx,miny,maxx,maxy.")
    return values  # type: ignore[return-value]


def _check_bbox(bbox: Sequence[float], crs: CRS, what: str) -> None:
    minx, miny, maxx, maxy = bbox
    if not all(math.isfinite(v) for v in bbox):
        raise GridError(f"{what} {tuple(bbox)} has non-finite values.")
    if crs.geographic and minx > maxx and minx > 0 > maxx and miny < maxy:
        raise GridError(
            f"{what} {tuple(bbox)} has minx {minx:g} east of maxx {maxx:g}: if it crosses the "
            f"antimeridian, {ANTIMERIDIAN_FIX[0].lower()}{ANTIMERIDIAN_FIX[1:]} Otherwise write "
            "minx,miny,maxx,maxy with minx < maxx."
        )
    if minx >= maxx or miny >= maxy:
        raise GridError(
            f"{what} {tuple(bbox)} is empty or inverted (need minx < maxx and miny < maxy); "
            "write it as minx,miny,maxx,maxy."
        )
    if crs.geographic and max(abs(miny), abs(maxy)) <= 90 and 180 < max(abs(minx), abs(maxx)) <= 360:
        raise GridError(
            f"{what} {tuple(bbox)} reaches longitude {max(minx, maxx, key=abs):g}, beyond ±180: it "
            f"crosses the antimeridian or uses 0..360 longitudes. {ANTIMERIDIAN_FIX}"
        )
    if crs.geographic and (max(abs(minx), abs(maxx)) > 180 or max(abs(miny), abs(maxy)) > 90):
        raise GridError(
            f"{what} {tuple(bbox)} is outside longitude/latitude range but its CRS is {crs}; "
            "these look like projected coordinates: pass their CRS (e.g. crs='EPSG:32749')."
        )


def _geometry_from_mapping(obj: Mapping, crs: CRS, what: str) -> geom.Geometry:
    kind = obj.get("type")
    if kind == "FeatureCollection":
        features = obj.get("features") or []
        if not features:
            raise GridError(f"{what} is a FeatureCollection with no features; draw an AOI polygon.")
        crs = _geojson_crs(obj, crs)
        return geom.unary_union(_geometry_from_mapping(f, crs, what) for f in features)
    if kind == "Feature":
        if obj.get("geometry") is None:
            raise GridError(f"{what} is a Feature without geometry.")
        return _geometry_from_mapping(obj["geometry"], _geojson_crs(obj, crs), what)
    if kind in ("Polygon", "MultiPolygon", "Point", "MultiPoint", "LineString",
                "MultiLineString", "GeometryCollection"):
        try:
            shape = geom.Geometry(dict(obj), crs=crs)
        except Exception as exc:
            raise GridError(f"{what} is not a valid GeoJSON {kind}: {exc}") from exc
        check_valid(shape, what)  # before any union: GEOS fails on invalid inputs
        return shape
    raise GridError(
        f"{what} is not GeoJSON (type {kind!r}); give a Polygon, Feature or FeatureCollection."
    )


def _geojson_crs(obj: Mapping, default: CRS) -> CRS:
    name = (obj.get("crs") or {}).get("properties", {}).get("name")
    if not name:
        return default
    crs = CRS(name)
    return CRS(f"EPSG:{crs.epsg}") if crs.epsg else crs


def read_aoi_file(path: str | os.PathLike) -> geom.Geometry:
    """Read all features of a vector file and dissolve them into one geometry with its CRS.

    Args:
        path: GeoJSON, GeoPackage, Shapefile (anything pyogrio reads).

    Returns:
        The union of the features' geometries.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"AOI file {path} does not exist.")
    if path.suffix.lower() in (".geojson", ".json"):
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputFileError(f"AOI file {path} is not valid JSON: {exc}") from exc
        return _geometry_from_mapping(data, CRS("EPSG:4326"), f"AOI file {path}")
    from fusecube.errors import require

    gpd = require("geopandas", "geo")
    try:
        frame = gpd.read_file(path)
    except Exception as exc:
        raise InputFileError(f"AOI file {path} cannot be read as vector data: {exc}") from exc
    if frame.empty:
        raise GridError(f"AOI file {path} has no features; draw an AOI polygon in it.")
    if frame.crs is None:
        raise GridError(f"AOI file {path} has no CRS; set one (e.g. ogr2ogr -a_srs EPSG:4326).")
    for index, shape in enumerate(frame.geometry):
        if shape is not None:
            check_valid(geom.Geometry(shape), f"AOI file {path} (feature {index})")
    shape = frame.geometry.union_all()
    return geom.Geometry(shape, crs=CRS(frame.crs.to_wkt()))


def aoi_geometry(aoi: AOILike, *, crs: Any = "EPSG:4326") -> geom.Geometry:
    """Turn any AOI description into one odc-geo ``Geometry`` carrying its CRS.

    Args:
        aoi: A ``(minx, miny, maxx, maxy)`` bbox, a ``"minx,miny,maxx,maxy"`` string, a
            GeoJSON mapping, a shapely geometry, an odc-geo Geometry or BoundingBox, or the
            path of a vector file.
        crs: CRS of a bbox or of a geometry that has none (default: longitude/latitude).

    Returns:
        The geometry (never empty).

    Raises:
        GridError: An empty, invalid (e.g. self-intersecting) or area-less geometry, a bbox
            out of range, or an AOI crossing the antimeridian; each message says how to fix it.
    """
    crs = CRS(crs)
    from_file = isinstance(aoi, os.PathLike) or (
        isinstance(aoi, str) and Path(aoi).suffix.lower() in VECTOR_SUFFIXES)
    if isinstance(aoi, geom.Geometry):
        if aoi.crs is None:
            aoi = geom.Geometry(aoi.geom, crs=crs)
        shape = aoi
    elif isinstance(aoi, geom.BoundingBox):
        bcrs = aoi.crs or crs
        _check_bbox(tuple(aoi), bcrs, "bbox")
        shape = geom.box(*aoi, bcrs)
    elif from_file:
        shape = read_aoi_file(aoi)
    elif isinstance(aoi, str):
        bbox = parse_bbox(aoi)
        _check_bbox(bbox, crs, "bbox")
        shape = geom.box(*bbox, crs)
    elif isinstance(aoi, Mapping):
        shape = _geometry_from_mapping(aoi, crs, "AOI")
    elif hasattr(aoi, "__geo_interface__"):
        shape = _geometry_from_mapping(aoi.__geo_interface__, crs, "AOI")
    elif isinstance(aoi, Sequence) and len(aoi) == 4:
        bbox = tuple(float(v) for v in aoi)
        _check_bbox(bbox, crs, "bbox")
        shape = geom.box(*bbox, crs)
    else:
        raise GridError(
            f"AOI of type {type(aoi).__name__} is not understood; give a bbox "
            "(minx,miny,maxx,maxy), a GeoJSON polygon, or a vector file path."
        )
    if shape.is_empty:
        raise GridError("AOI geometry is empty; check the file or coordinates.")
    what = f"AOI file {aoi}" if from_file else "AOI"
    check_valid(shape, what)
    if shape.geom_type not in ("Polygon", "MultiPolygon") or shape.area == 0:
        raise GridError(
            f"AOI is a {shape.geom_type} with no area; give a polygon or a bbox "
            "(buffer points/lines first, e.g. geometry.buffer(100) in metres)."
        )
    if shape.crs.geographic:
        _check_bbox(tuple(shape.boundingbox), shape.crs, "AOI bounds")
    _check_antimeridian(shape, what)
    return shape


def check_valid(shape: geom.Geometry, what: str) -> None:
    """Refuse an invalid geometry (a self-intersecting polygon, a bow-tie), naming the defect.

    Raises:
        GridError: ``shape`` is not valid; the message quotes shapely's ``explain_validity``
            (e.g. ``Self-intersection[110.6 -6.9]``) and how to repair it.
    """
    if shape.is_empty or shape.is_valid:
        return
    from shapely.validation import explain_validity

    reason = explain_validity(shape.geom)
    kind = "self-intersecting" if reason.startswith(("Self-intersection", "Ring Self-intersection")) \
        else "invalid"
    raise GridError(f"{what} is a {kind} {shape.geom_type} ({reason}), so its area and its "
                    f"inside are undefined. {INVALID_FIX}")


def _check_antimeridian(shape: geom.Geometry, what: str = "AOI") -> None:
    """Refuse an AOI that crosses ±180° longitude (as one polygon or as parts on both sides).

    Read as lon/lat, a polygon crossing it wraps the long way round the globe, and parts on
    both sides have their centre half a world away: either way the UTM zone (of the centre)
    would be wrong. Both show as bounds wider than 180° of longitude.
    """
    lonlat = shape if shape.crs.epsg == 4326 else shape.to_crs("EPSG:4326")
    west, _, east, _ = lonlat.boundingbox
    if east - west > 180:
        raise GridError(
            f"{what} spans longitudes {west:g} to {east:g} ({east - west:.0f}°): it crosses the "
            "antimeridian (an edge from one side of ±180° to the other, or parts on both sides), "
            f"or is too wide for one UTM grid. {ANTIMERIDIAN_FIX}")


def check_resolution(resolution: float, what: str = "resolution") -> float:
    """A pixel size as a positive finite float.

    Raises:
        GridError: ``resolution`` is zero, negative, NaN or infinite.
    """
    try:
        value = float(resolution)
    except (TypeError, ValueError) as exc:
        raise GridError(f"{what} {resolution!r} is not a number; give the pixel size in metres "
                        "(e.g. --resolution 10).") from exc
    if not (math.isfinite(value) and value > 0):
        raise GridError(f"{what} {resolution!r} is not a positive pixel size; give the pixel size "
                        f"in metres (e.g. --resolution {DEFAULT_RESOLUTION:g}), or leave it out "
                        "for the default.")
    return value


def normalise_crs(crs: Any) -> CRS:
    """A CRS as ``EPSG:n`` when it has an EPSG code (so grids print and compare simply)."""
    crs = CRS(crs.to_wkt() if hasattr(crs, "to_wkt") and not isinstance(crs, CRS) else crs)
    return CRS(f"EPSG:{crs.epsg}") if crs.epsg else crs


def utm_crs(shape: geom.Geometry) -> CRS:
    """The WGS 84 UTM CRS of the zone holding the centre of ``shape``."""
    centre = shape.to_crs("EPSG:4326").centroid
    lon, lat = centre.coords[0]
    return CRS.utm(lon, lat)


def grid_attrs(geobox: GeoBox) -> dict[str, str]:
    """Cube attributes recording the grid: its CRS, its UTM zone (if it is one) and its centre.

    A grid resolved from an AOI without ``crs`` is in the UTM zone of the AOI's centre
    (:func:`utm_crs`); ``utm_zone`` and ``grid_centre_lonlat`` let a reader check that.
    """
    crs = normalise_crs(geobox.crs)
    lon, lat = geobox.extent.to_crs("EPSG:4326").centroid.coords[0]
    attrs = {"grid_crs": str(crs), "grid_centre_lonlat": f"{lon:.6f},{lat:.6f}"}
    zone = crs.proj.utm_zone
    if zone:
        attrs["utm_zone"] = str(zone)
    return attrs


def _like_geobox(like: Any) -> GeoBox:
    if isinstance(like, GeoBox):
        return like
    if hasattr(like, "odc"):
        gbox = like.odc.geobox
        if not isinstance(gbox, GeoBox):
            raise GridError(
                "like= dataset has no regular grid with a CRS; attach one with .odc.assign_crs()."
            )
        return gbox
    path = Path(like)
    if not path.exists():
        raise InputFileError(f"like= {path} does not exist.")
    if path.is_dir() or path.suffix == ".zarr":
        from fusecube.cube import read_cube

        return _like_geobox(read_cube(path))
    import rasterio

    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise GridError(f"like= raster {path} has no CRS; set one with gdal_edit -a_srs.")
            return GeoBox(src.shape, src.transform, normalise_crs(src.crs))
    except rasterio.errors.RasterioIOError as exc:
        raise InputFileError(f"like= {path} cannot be opened as a raster: {exc}") from exc


def resolve_geobox(
    aoi: AOILike | None = None,
    *,
    like: Any = None,
    crs: Any = None,
    resolution: float | None = None,
    aoi_crs: Any = "EPSG:4326",
) -> GeoBox:
    """Resolve an area of interest or a reference grid into one ``GeoBox``.

    Args:
        aoi: Where: bbox, polygon, GeoJSON mapping or vector file (see :func:`aoi_geometry`).
        like: Reuse this grid (GeoBox, cube, raster or zarr path); with ``aoi`` the grid is
            cropped to the AOI, keeping ``like``'s pixel alignment.
        crs: Output CRS; default the UTM zone of the AOI centre.
        resolution: Pixel size in units of ``crs`` (metres for UTM); default 10 m.
        aoi_crs: CRS of a bbox or GeoJSON without one (default longitude/latitude).

    Returns:
        The grid, pixel-aligned to multiples of ``resolution``.

    Raises:
        GridError: no AOI, an ambiguous request, an empty AOI, or a resolution that makes no
            sense for the CRS.
    """
    if like is not None:
        if crs is not None or resolution is not None:
            raise GridError(
                "like= fixes the CRS and resolution; do not also pass crs= or resolution= "
                "(drop like= to choose them yourself)."
            )
        base = _like_geobox(like)
        if aoi is None:
            return base
        return _crop_to(base, aoi_geometry(aoi, crs=aoi_crs))
    if aoi is None:
        raise GridError("No area of interest: give --aoi (bbox or vector file) or like= a grid.")
    shape = aoi_geometry(aoi, crs=aoi_crs)
    out_crs = CRS(crs) if crs is not None else utm_crs(shape)
    res = check_resolution(resolution) if resolution is not None else (
        DEFAULT_RESOLUTION if not out_crs.geographic else None)
    if res is None:
        raise GridError(
            f"CRS {out_crs} is in degrees: give resolution= in degrees (e.g. 0.0001), "
            "or leave crs unset for UTM in metres."
        )
    if out_crs.geographic and res > 1:
        raise GridError(f"resolution {res} is in degrees for {out_crs}; did you mean metres? "
                        "Leave crs unset to get UTM.")
    projected = shape.to_crs(out_crs)
    if projected.is_empty or not np.isfinite(projected.area):
        raise GridError(f"AOI cannot be projected to {out_crs}; it lies outside that CRS's area.")
    out_crs = normalise_crs(out_crs)
    gbox = GeoBox.from_geopolygon(projected, resolution=res, crs=out_crs)
    gbox = GeoBox(gbox.shape, gbox.affine, out_crs)
    if gbox.shape[0] * gbox.shape[1] > MAX_PIXELS:
        raise GridError(
            f"AOI at resolution {res} gives {gbox.shape[1]} x {gbox.shape[0]} pixels; "
            "check the resolution unit (metres for UTM) or split the AOI."
        )
    log.info("AOI grid: %s x %s px, %s, resolution %s", gbox.shape[1], gbox.shape[0], out_crs, res)
    return gbox


def _crop_to(base: GeoBox, shape: geom.Geometry) -> GeoBox:
    """Crop ``base`` to the pixels touching ``shape``, keeping its alignment."""
    left, bottom, right, top = shape.to_crs(base.crs).boundingbox
    inverse = ~base.affine
    cols, rows = zip(*(inverse * xy for xy in ((left, bottom), (left, top), (right, bottom),
                                              (right, top))), strict=True)
    x0, x1 = max(math.floor(min(cols)), 0), min(math.ceil(max(cols)), base.shape[1])
    y0, y1 = max(math.floor(min(rows)), 0), min(math.ceil(max(rows)), base.shape[0])
    if x1 <= x0 or y1 <= y0:
        raise GridError("AOI does not overlap the like= grid; check the AOI or the grid.")
    return base[y0:y1, x0:x1]
