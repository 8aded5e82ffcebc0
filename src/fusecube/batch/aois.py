"""Areas of interest of a batch: read a CSV or GeoJSON list, validate each row, resolve grids.

A CSV has an ``id`` column and, per row, either ``lon``, ``lat`` and ``size_km`` (a square
of that side centred on the point) or ``bbox`` (``"minx,miny,maxx,maxy"`` in longitude /
latitude). A GeoJSON FeatureCollection has one feature per AOI: a polygon, or a point with a
``size_km`` property; the id is ``properties.id`` or the feature's ``id``.

Problems with the file as a whole (unreadable, no ``id`` column, duplicate ids) raise
:class:`~fusecube.errors.BatchInputError`. A row with invalid coordinates does not stop the
batch: it becomes an AOI with a ``problem`` and is recorded as failed with that reason.
Other columns/properties listed in :data:`OVERRIDE_FIELDS` override the batch settings for
that AOI (e.g. its own ``start``/``end`` dates or cloud limit).
"""

from __future__ import annotations

import csv
import difflib
import functools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affine import Affine
from odc.geo import geom
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox

from fusecube.errors import BatchInputError, FusecubeError
from fusecube.grid.geobox import aoi_geometry, check_resolution, normalise_crs, resolve_geobox

#: Batch settings an AOI row may override (CSV columns / GeoJSON properties).
OVERRIDE_FIELDS = ("start", "end", "resolution", "max_cloud", "patch_size", "time_budget_s")
#: Columns kept as labels only (shown in the report, not used).
LABEL_FIELDS = ("name", "note", "description")
GEOMETRY_FIELDS = ("id", "lon", "lat", "size_km", "bbox")
#: Largest AOI side accepted; bigger ones are almost always a unit mistake (m vs km).
MAX_SIZE_KM = 200.0


@dataclass(frozen=True)
class AOI:
    """One area of interest of a batch.

    Attributes:
        id: Unique id (used for folders, seeds and the ledger).
        lon: Centre longitude (for the map), NaN when unknown.
        lat: Centre latitude (for the map), NaN when unknown.
        size_km: Side of the square for point AOIs, else None.
        geometry: Polygon in EPSG:4326 for bbox/polygon AOIs, else None.
        overrides: Per-AOI settings (see :data:`OVERRIDE_FIELDS`).
        labels: Descriptive columns kept for the report.
        problem: Why the row cannot be used (invalid geometry), or None.
        source_row: Line (CSV) or feature index (GeoJSON) it came from.
    """

    id: str
    lon: float = math.nan
    lat: float = math.nan
    size_km: float | None = None
    geometry: geom.Geometry | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    problem: str | None = None
    source_row: int = 0

    def bounds(self) -> tuple[float, float, float, float] | None:
        """``(west, south, east, north)`` in degrees, or None for an invalid AOI."""
        if self.problem is not None:
            return None
        if self.geometry is not None:
            return tuple(self.geometry.to_crs("EPSG:4326").boundingbox)  # type: ignore[return-value]
        half_lat = self.size_km / 2 / 110.574  # type: ignore[operator]
        half_lon = self.size_km / 2 / (111.320 * max(math.cos(math.radians(self.lat)), 1e-6))  # type: ignore[operator]
        return (self.lon - half_lon, self.lat - half_lat, self.lon + half_lon, self.lat + half_lat)

    def to_dict(self) -> dict:
        """JSON-ready description (geometry as GeoJSON)."""
        return {"id": self.id, "lon": self.lon, "lat": self.lat, "size_km": self.size_km,
                "geometry": None if self.geometry is None else self.geometry.json,
                "overrides": dict(self.overrides), "labels": dict(self.labels),
                "problem": self.problem, "source_row": self.source_row}


def read_aois(path: str | os.PathLike) -> list[AOI]:
    """Read and validate the AOIs of a CSV or GeoJSON file.

    Args:
        path: ``.csv`` or ``.geojson``/``.json`` file.

    Returns:
        The AOIs in file order; rows with invalid coordinates carry a ``problem``.

    Raises:
        BatchInputError: The file is missing, unreadable, empty, lacks an id column or
            repeats an id.
    """
    path = Path(path)
    if not path.is_file():
        raise BatchInputError(f"AOI file {path} does not exist; give a CSV (id,lon,lat,size_km "
                              "or id,bbox) or a GeoJSON FeatureCollection.")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        aois = _read_csv(path)
    elif suffix in (".geojson", ".json"):
        aois = _read_geojson(path)
    else:
        raise BatchInputError(f"AOI file {path} has suffix {suffix!r}; use .csv or .geojson.")
    if not aois:
        raise BatchInputError(f"AOI file {path} lists no AOIs; add at least one row.")
    seen: dict[str, int] = {}
    for aoi in aois:
        if aoi.id in seen:
            raise BatchInputError(
                f"AOI file {path}: id {aoi.id!r} appears twice (rows {seen[aoi.id]} and "
                f"{aoi.source_row}); ids name output folders and must be unique.")
        seen[aoi.id] = aoi.source_row
    return aois


def _check_columns(path: Path, names: list[str]) -> None:
    known = set(GEOMETRY_FIELDS + OVERRIDE_FIELDS + LABEL_FIELDS)
    for name in names:
        if name not in known:
            match = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
            hint = f" (did you mean {match[0]!r}?)" if match else ""
            raise BatchInputError(
                f"AOI file {path}: unknown column {name!r}{hint}; known columns are "
                f"{', '.join(GEOMETRY_FIELDS + OVERRIDE_FIELDS + LABEL_FIELDS)}.")


def _read_csv(path: Path) -> list[AOI]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            names = [n.strip() for n in (reader.fieldnames or [])]
            rows = [({(k or "").strip(): (v or "").strip() for k, v in row.items()}, reader.line_num)
                    for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BatchInputError(f"AOI file {path} cannot be read as CSV: {exc}") from exc
    if "id" not in names:
        raise BatchInputError(f"AOI file {path} has no 'id' column (columns: {names}); add one.")
    if "bbox" not in names and not {"lon", "lat", "size_km"} <= set(names):
        raise BatchInputError(
            f"AOI file {path} needs either a 'bbox' column or 'lon', 'lat' and 'size_km' "
            f"columns (it has {names}).")
    _check_columns(path, names)
    return [_aoi_from_fields(row, line, f"AOI file {path} line {line}") for row, line in rows]


def _read_geojson(path: Path) -> list[AOI]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BatchInputError(f"AOI file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise BatchInputError(f"AOI file {path} is not a GeoJSON FeatureCollection; put one "
                              "feature per AOI in a FeatureCollection.")
    aois = []
    for index, feature in enumerate(data.get("features") or []):
        props = dict(feature.get("properties") or {})
        aoi_id = props.pop("id", None) or feature.get("id")
        where = f"AOI file {path} feature {index}"
        if aoi_id is None or str(aoi_id).strip() == "":
            raise BatchInputError(f"{where} has no id; set properties.id on every feature.")
        _check_columns(path, list(props))
        fields = {"id": str(aoi_id), **{k: "" if v is None else str(v) for k, v in props.items()}}
        shape = feature.get("geometry")
        if shape and shape.get("type") == "Point":
            coords = shape.get("coordinates") or [math.nan, math.nan]
            fields.update(lon=str(coords[0]), lat=str(coords[1]))
            aois.append(_aoi_from_fields(fields, index, where))
        else:
            aois.append(_aoi_from_shape(fields, shape, index, where))
    return aois


def _split_fields(fields: Mapping[str, str]) -> tuple[dict, dict]:
    overrides = {k: fields[k] for k in OVERRIDE_FIELDS if fields.get(k, "") != ""}
    labels = {k: fields[k] for k in LABEL_FIELDS if fields.get(k, "") != ""}
    return overrides, labels


def _aoi_from_fields(fields: Mapping[str, str], row: int, where: str) -> AOI:
    aoi_id = fields.get("id", "")
    if not aoi_id:
        raise BatchInputError(f"{where} has an empty id; give every AOI an id.")
    overrides, labels = _split_fields(fields)
    base = {"id": aoi_id, "overrides": overrides, "labels": labels, "source_row": row}
    if fields.get("bbox"):
        try:
            shape = aoi_geometry(fields["bbox"])
        except FusecubeError as exc:
            return AOI(**base, problem=f"invalid geometry: {exc}")
        return _with_centre(AOI(**base, geometry=shape))
    try:
        lon, lat, size = (float(fields.get(k) or "nan") for k in ("lon", "lat", "size_km"))
    except ValueError:
        return AOI(**base, problem=(
            f"invalid geometry: lon {fields.get('lon')!r}, lat {fields.get('lat')!r}, size_km "
            f"{fields.get('size_km')!r} are not all numbers; fix row {row} of the AOI file."))
    problem = _point_problem(lon, lat, size)
    return AOI(**base, lon=lon, lat=lat, size_km=size, problem=problem)


def _point_problem(lon: float, lat: float, size: float) -> str | None:
    if not (math.isfinite(lon) and math.isfinite(lat)):
        return "invalid geometry: lon/lat missing; give both in degrees (or a bbox)."
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        return (f"invalid geometry: lon {lon}, lat {lat} is outside -180..180 / -90..90; "
                "check the column order (lon before lat) and that they are degrees.")
    if abs(lat) > 84:
        return (f"invalid geometry: lat {lat} is beyond 84 degrees, outside the UTM grids "
                "fusecube uses; Sentinel tiles there need a polar projection.")
    if not (math.isfinite(size) and size > 0):
        return f"invalid geometry: size_km {size} must be a positive number of kilometres."
    if size > MAX_SIZE_KM:
        return (f"invalid geometry: size_km {size} is larger than {MAX_SIZE_KM:g} km; check the "
                "unit (kilometres) or split the area into several AOIs.")
    return None


def _aoi_from_shape(fields: Mapping[str, str], shape: Any, row: int, where: str) -> AOI:
    overrides, labels = _split_fields(fields)
    base = {"id": fields["id"], "overrides": overrides, "labels": labels, "source_row": row}
    if not shape:
        return AOI(**base, problem="invalid geometry: the feature has no geometry; draw a polygon.")
    try:
        polygon = aoi_geometry(shape)
    except FusecubeError as exc:
        return AOI(**base, problem=f"invalid geometry: {exc}")
    if polygon.is_empty or not polygon.geom.is_valid or polygon.area <= 0:
        return AOI(**base, problem=(
            "invalid geometry: the polygon is empty, self-intersecting or has no area; "
            "repair it (e.g. shapely make_valid) or give a bbox."))
    west, south, east, north = polygon.to_crs("EPSG:4326").boundingbox
    if west < -180 or east > 180 or south < -90 or north > 90:
        return AOI(**base, problem=(f"invalid geometry: bounds {(west, south, east, north)} are "
                                    "outside longitude/latitude; give coordinates in degrees."))
    return _with_centre(AOI(**base, geometry=polygon))


def _with_centre(aoi: AOI) -> AOI:
    from dataclasses import replace

    west, south, east, north = aoi.geometry.to_crs("EPSG:4326").boundingbox  # type: ignore[union-attr]
    return replace(aoi, lon=(west + east) / 2, lat=(south + north) / 2)


@functools.cache
def _zone_crs(epsg: int) -> CRS:
    return normalise_crs(f"EPSG:{epsg}")


def _utm_zone(lon: float, lat: float) -> CRS:
    """The WGS 84 UTM zone of a point (plain 6-degree zones; pyproj's lookup is ~0.1 s a call)."""
    zone = min(int((lon + 180) // 6) + 1, 60)
    return _zone_crs((32600 if lat >= 0 else 32700) + zone)


def aoi_geobox(aoi: AOI, resolution: float) -> GeoBox:
    """The AOI's grid: its UTM zone, ``resolution`` metres, edges on multiples of it.

    A point AOI becomes exactly ``round(size_km * 1000 / resolution)`` pixels a side, centred
    on the point; a bbox/polygon AOI the pixels covering it.

    Raises:
        GridError: The AOI cannot be put on a grid (see :func:`fusecube.grid.geobox.resolve_geobox`).
    """
    if aoi.geometry is not None:
        return resolve_geobox(aoi.geometry, resolution=resolution)
    resolution = check_resolution(resolution)
    centre = geom.point(aoi.lon, aoi.lat, "EPSG:4326")
    crs = _utm_zone(aoi.lon, aoi.lat)
    x, y = centre.to_crs(crs).coords[0]
    n = max(1, round(aoi.size_km * 1000 / resolution))  # type: ignore[operator]
    x0 = round(x / resolution - n / 2) * resolution
    y1 = round(y / resolution + n / 2) * resolution
    return GeoBox((n, n), Affine(resolution, 0, x0, 0, -resolution, y1), crs)
