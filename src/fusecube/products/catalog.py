"""Reading a finished run's outputs for the API: product list, map overlays, pixel curves."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import xarray as xr

from fusecube.config import CubeSource, RunConfig
from fusecube.cube import NDVI, NDVI_FUSED, NDVI_SMOOTH, PADDY_MASK, VH, VV, read_cube
from fusecube.errors import ApiError

#: Product files of a run folder, by glob, with their kind and media type.
PRODUCT_GLOBS: tuple[tuple[str, str, str], ...] = (
    ("report.html", "report", "text/html"),
    ("run.json", "summary", "application/json"),
    ("phenology.nc", "netcdf", "application/x-netcdf"),
    ("cogs/*.tif", "cog", "image/tiff"),
    ("figures/*.png", "figure", "image/png"),
    ("*.csv", "table", "text/csv"),
)

#: Map layers: phenology dates per season slot, and cropping intensity per year.
DATE_LAYERS = ("planting", "sos", "pos", "eos", "harvest")
MAP_LAYERS = (*DATE_LAYERS, "intensity")
INTENSITY_COLORS = ("#d9d9d9", "#a6d96a", "#1a9641", "#08519c", "#54278f")
DOY_COLORMAP = "twilight"
MONTH_STARTS = (1, 32, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def list_products(out: Path) -> list[dict]:
    """The product files of a run folder (name relative to it, kind, media type, size)."""
    found = []
    for pattern, kind, media in PRODUCT_GLOBS:
        for path in sorted(out.glob(pattern)):
            if path.is_file() and not path.name.startswith("."):
                found.append({"name": path.relative_to(out).as_posix(), "kind": kind,
                              "media_type": media, "size_bytes": path.stat().st_size})
    return found


def product_file(out: Path, name: str) -> tuple[Path, str]:
    """The file of product ``name`` and its media type; only listed products are served.

    Raises:
        ApiError: 404 for any name that is not one of :func:`list_products` (which rules out
            ``..``, absolute paths and links out of the run folder).
    """
    for item in list_products(out):
        if item["name"] == name:
            path = (out / name).resolve()
            if path.is_relative_to(out.resolve()):
                return path, item["media_type"]
    raise ApiError(f"Run has no product {name!r}; GET /runs/{{id}}/products lists them.", 404)


def run_config(record) -> RunConfig:
    """The configuration recorded with a run."""
    return RunConfig.model_validate_json(record.config)


def _result(out: Path) -> xr.Dataset:
    path = out / "result.zarr"
    if not path.exists():
        raise ApiError("This run has no results yet (result.zarr appears once all blocks are "
                       "written); wait for it to finish, or resume it if it stopped.", 409)
    return read_cube(path)


def _input_cube(out: Path, config: RunConfig) -> xr.Dataset | None:
    path = config.source.path if isinstance(config.source, CubeSource) else out / "input" / "cube.zarr"
    return read_cube(path) if Path(path).exists() else None


def _labels(ds: xr.Dataset, start_month: int) -> tuple[list[str], list[str]]:
    from fusecube.grid.periods import year_label
    from fusecube.stages.phenology import season_labels

    seasons = season_labels(ds, start_month) if "season_year" in ds.coords else []
    years = [year_label(int(y), start_month) for y in ds["year"].values] if "year" in ds.dims else []
    return seasons, years


def map_catalog(out: Path, config: RunConfig) -> dict:
    """Layers, seasons, years, legends and extent of a run's phenology maps."""
    with _result(out) as ds:
        seasons, years = _labels(ds, config.phenology.year_start_month)
        geobox = ds.odc.geobox
        bbox = geobox.extent.to_crs("EPSG:4326").boundingbox
        doy_legend = {"kind": "cyclic", "colormap": DOY_COLORMAP, "min": 1, "max": 366,
                      "unit": "day of year",
                      "stops": [_hex(DOY_COLORMAP, (d - 1) / 365) for d in range(1, 367, 15)],
                      "ticks": [{"value": d, "label": m} for d, m in zip(MONTH_STARTS, MONTHS,
                                                                          strict=True)]}
        intensity_legend = {"kind": "categorical", "unit": "rice seasons per year",
                            "classes": [{"value": i, "label": f"{i}", "color": c}
                                        for i, c in enumerate(INTENSITY_COLORS)]}
        return {
            "layers": [{"name": n, "index": "season", "legend": doy_legend} for n in DATE_LAYERS
                       if f"{n}_doy" in ds]
            + ([{"name": "intensity", "index": "year", "legend": intensity_legend}]
               if "season_count" in ds else []),
            "seasons": [{"index": i, "label": s} for i, s in enumerate(seasons)],
            "years": [{"index": i, "label": y} for i, y in enumerate(years)],
            "width": int(geobox.shape.x), "height": int(geobox.shape.y),
            "crs": crs_name(geobox.crs),
            "bounds_lonlat": [round(v, 7) for v in (bbox.left, bbox.bottom, bbox.right, bbox.top)],
        }


def crs_name(crs) -> str:
    """``EPSG:32749`` where the CRS has an EPSG code, else its WKT."""
    return f"EPSG:{crs.epsg}" if crs.epsg else crs.to_wkt()


def _hex(cmap_name: str, value: float) -> str:
    import matplotlib

    r, g, b, _ = matplotlib.colormaps[cmap_name](value)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def _rgba(values: np.ndarray, layer: str) -> np.ndarray:
    """Colour a 2-D array: cyclic colours for day of year, classes for intensity; NaN clear."""
    import matplotlib

    finite = np.isfinite(values)
    if layer == "intensity":
        table = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] + [255] for c in INTENSITY_COLORS],
                         np.uint8)
        classes = np.clip(np.nan_to_num(values, nan=0), 0, len(INTENSITY_COLORS) - 1).astype(int)
        rgba = table[classes]
    else:
        scaled = (np.nan_to_num(values, nan=1.0) - 1.0) / 365.0
        rgba = (matplotlib.colormaps[DOY_COLORMAP](np.clip(scaled, 0, 1)) * 255).astype(np.uint8)
    rgba[~finite] = 0
    return rgba


def render_map(out: Path, layer: str, index: int) -> bytes:
    """PNG (RGBA, one pixel per grid cell, transparent where no value) of a phenology map.

    Args:
        out: The run folder.
        layer: One of :data:`MAP_LAYERS`.
        index: Season slot (date layers) or year (intensity).

    Raises:
        ApiError: 404 for an unknown layer or an index out of range.
    """
    from PIL import Image

    if layer not in MAP_LAYERS:
        raise ApiError(f"Unknown map layer {layer!r}; choose one of {', '.join(MAP_LAYERS)}.", 404)
    name, dim = ("season_count", "year") if layer == "intensity" else (f"{layer}_doy", "season")
    with _result(out) as ds:
        if name not in ds:
            raise ApiError(f"This run has no {layer} map.", 404)
        size = ds.sizes[dim]
        if not 0 <= index < size:
            raise ApiError(f"{dim} index {index} is out of range; this run has {size} "
                           f"{dim}s (0..{size - 1}).", 404)
        values = np.asarray(ds[name].isel({dim: index}).values, np.float32)
    buffer = io.BytesIO()
    Image.fromarray(_rgba(values, layer), "RGBA").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def locate(geobox, *, lon: float | None = None, lat: float | None = None, x: float | None = None,
           y: float | None = None, row: int | None = None, col: int | None = None) -> tuple[int, int]:
    """Row and column of the pixel at lon/lat (WGS84), x/y (grid CRS), or row/col itself.

    Raises:
        ApiError: 400 without exactly one complete pair, 404 outside the grid.
    """
    pairs = {"lon/lat": (lon, lat), "x/y": (x, y), "row/col": (row, col)}
    given = [k for k, (a, b) in pairs.items() if a is not None or b is not None]
    if len(given) != 1 or None in pairs[given[0]]:
        raise ApiError("Give exactly one location: lon and lat (WGS84 degrees), x and y (in the "
                       "run's grid CRS), or row and col (pixel indices).", 400)
    ny, nx = geobox.shape
    if given[0] == "row/col":
        r, c = int(row), int(col)
    else:
        if given[0] == "lon/lat":
            from odc.geo.geom import point

            px, py = point(lon, lat, "EPSG:4326").to_crs(geobox.crs).coords[0]
        else:
            px, py = x, y
        fc, fr = ~geobox.affine * (px, py)
        if not (math.isfinite(fc) and math.isfinite(fr)):
            raise ApiError(f"Location {given[0]} = {pairs[given[0]]} cannot be placed on the "
                           f"grid ({geobox.crs}).", 404)
        r, c = math.floor(fr), math.floor(fc)
    if not (0 <= r < ny and 0 <= c < nx):
        bbox = geobox.extent.to_crs("EPSG:4326").boundingbox
        raise ApiError(f"Location {given[0]} = {pairs[given[0]]} is outside the run's grid "
                       f"({ny} x {nx} px, lon {bbox.left:.5f}..{bbox.right:.5f}, "
                       f"lat {bbox.bottom:.5f}..{bbox.top:.5f}).", 404)
    return r, c


def _floats(values: np.ndarray, ndigits: int = 4) -> list[float | None]:
    return [round(float(v), ndigits) if np.isfinite(v) else None for v in np.asarray(values, float)]


def _db(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, 10 * np.log10(np.where(values > 0, values, 1.0)), np.nan)


def _date(value) -> str | None:
    return None if np.isnat(value) else str(np.datetime_as_string(value, unit="D"))


def pixel(out: Path, config: RunConfig, **where) -> dict:
    """Time series (S1 in dB, observed, fused and smoothed NDVI) and seasons of one pixel.

    Args:
        out: The run folder.
        config: The run's configuration (to find its input cube and calendar).
        **where: ``lon``/``lat``, ``x``/``y`` or ``row``/``col`` (see :func:`locate`).
    """
    with _result(out) as ds:
        geobox = ds.odc.geobox
        r, c = locate(geobox, **where)
        at = ds.isel(y=r, x=c)
        px, py = geobox.affine * (c + 0.5, r + 0.5)
        from odc.geo.geom import point

        lon, lat = point(px, py, geobox.crs).to_crs("EPSG:4326").coords[0]
        series = {name: _floats(at[name].values) for name in (NDVI_FUSED, NDVI_SMOOTH) if name in at}
        seasons_labels, year_labels = _labels(ds, config.phenology.year_start_month)
        seasons = []
        for i, label in enumerate(seasons_labels):
            slot = at.isel(season=i)
            if "sos" not in slot or np.isnat(slot["sos"].values):
                continue
            item = {"index": i, "label": label}
            for name in DATE_LAYERS:
                if name in slot:
                    item[name] = _date(slot[name].values)
            for name in ("length", "amplitude", "peak_value"):
                if name in slot:
                    item[name] = _floats([slot[name].values], 3)[0]
            seasons.append(item)
        counts = ([{"year": y, "count": _floats([v], 0)[0]}
                   for y, v in zip(year_labels, at["season_count"].values, strict=True)]
                  if "season_count" in at else [])
        paddy = bool(at[PADDY_MASK].values) if PADDY_MASK in at else None
        times = [_date(t) for t in ds["time"].values]
    cube = _input_cube(out, config)
    if cube is not None:
        with cube:
            point_in = cube.isel(y=r, x=c)
            if NDVI in point_in:
                series["ndvi"] = _floats(point_in[NDVI].values)
            for name in (VV, VH):
                if name in point_in:
                    series[f"{name}_db"] = _floats(_db(point_in[name].values), 2)
    return {"row": r, "col": c, "x": round(px, 3), "y": round(py, 3), "lon": round(lon, 7),
            "lat": round(lat, 7), "crs": crs_name(geobox.crs), "paddy": paddy, "time": times,
            "series": series, "seasons": seasons, "season_count": counts}
