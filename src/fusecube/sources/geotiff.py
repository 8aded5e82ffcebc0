"""GeoTIFF stack source: a folder of per-period (or per-date) GeoTIFFs → one cube.

Two layouts are understood:

* per-period exports such as Google Earth Engine's ``period_01.tif`` … ``period_62.tif``
  (1-based period number in the name), with bands VV (dB), VH (dB), NDVI; the period dates
  come from a dates file or from ``start`` + ``period_days``;
* per-date files with an 8-digit date in the name (``S2A_20200109_..._NDVI.tif``), composited
  into ``period_days`` periods (median of valid values).

Each file is read window by window: only the part covering the target GeoBox, which is then
reprojected onto it (bilinear, NaN-aware). Masked pixels (-inf, +inf, the nodata value) become
NaN, decibels become linear sigma0, and period dates are computed with calendar arithmetic
from the period number, so a series crossing New Year never lands a year off.

Nothing is taken on the label alone: the unit of each Sentinel-1 band is decided from its values
(:func:`fusecube.sources.bands.backscatter_units`) and a ``--bands`` role that contradicts it is
refused, a byte NDVI needs ``ndvi_scale``, and every date (dates file, file names, ``start``)
must lie in the Sentinel era.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
import xarray as xr
from odc.geo import geom
from odc.geo.geobox import GeoBox
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window, from_bounds

from fusecube.cube import NDVI, NDVI_QUALITY, VH, VV, X, Y, write_cube
from fusecube.errors import ConfigError, CubeSchemaError, FusecubeWarning, GridError, InputFileError
from fusecube.grid.geobox import normalise_crs, resolve_geobox
from fusecube.grid.periods import SENTINEL_ERA_START, check_sentinel_era, period_starts
from fusecube.sources.bands import backscatter_units
from fusecube.sources.compose import median_composite, period_index, to_naive_utc
from fusecube.sources.stac.composite import build_cube
from fusecube.units import from_db

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]

#: Band roles a file can hold; ``_db`` roles are converted to linear.
ROLES = ("vv_db", "vh_db", "vv", "vh", "ndvi")
S1_ROLES = ("vv_db", "vh_db", "vv", "vh")
DEFAULT_BANDS = ("vv_db", "vh_db", "ndvi")
_PERIOD = re.compile(r"period[_-]?(\d+)", re.IGNORECASE)
_DATE = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)")
METRES_PER_DEGREE = 111_320.0


@dataclass(frozen=True)
class StackFile:
    """One file of the stack and where it goes in time."""

    path: Path
    """The GeoTIFF."""
    period: int
    """0-based period index."""
    when: np.datetime64 | None = None
    """Acquisition date for per-date files (None for per-period files)."""


Listed = list[tuple[Path, int | None, np.datetime64 | None]]


def list_stack(folder: str | os.PathLike, *, pattern: str = "*.tif") -> Listed:
    """Files of a stack with their period number (1-based) or date parsed from the name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"GeoTIFF folder {folder} does not exist or is not a folder.")
    files = sorted(p for p in folder.glob(pattern) if p.is_file())
    files += sorted(p for p in folder.glob(pattern.replace(".tif", ".tiff")) if p.is_file()
                    and p not in files)
    if not files:
        raise InputFileError(f"No GeoTIFFs matching {pattern!r} in {folder}; check the folder "
                             "or pass --pattern.")
    out = []
    for path in files:
        period, date = _PERIOD.search(path.stem), _DATE.search(path.stem)
        if period:
            out.append((path, int(period.group(1)), None))
        elif date:
            out.append((path, None, np.datetime64("-".join(date.groups()), "ns")))
        else:
            raise InputFileError(
                f"Cannot tell the period or date of {path.name}: name files period_01.tif, "
                "period_02.tif, ... or put the date in the name as YYYYMMDD."
            )
    kinds = {p is None for _, p, _ in out}
    if len(kinds) > 1:
        raise InputFileError(f"{folder} mixes period-numbered and dated file names; keep one "
                             "layout per folder.")
    return out


def read_dates_file(path: str | os.PathLike) -> list[np.datetime64]:
    """Period start dates from a text/CSV file: one date per line, or ``name,date`` rows.

    A header row is skipped; the last column holding a date is used. A date before the
    Sentinel era (a zero or a day number read as a date) is an :class:`InputFileError`
    naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"Dates file {path} does not exist.")
    dates, lines = [], []
    with open(path, newline="") as fh:
        for row_no, row in enumerate(csv.reader(fh), start=1):
            cells = [c.strip() for c in row if c.strip()]
            if not cells:
                continue
            try:
                dates.append(np.datetime64(pd.Timestamp(cells[-1]).normalize().to_datetime64(),
                                           "ns"))
                lines.append(row_no)
            except ValueError as exc:
                if row_no == 1 and not dates:
                    continue  # header
                raise InputFileError(f"Dates file {path} line {row_no}: {cells[-1]!r} is not a "
                                     "date (use YYYY-MM-DD).") from exc
    if not dates:
        raise InputFileError(f"Dates file {path} has no dates.")
    early = np.flatnonzero(np.array(dates) < np.datetime64(SENTINEL_ERA_START, "ns"))
    if early.size:
        check_sentinel_era(dates, what=f"Dates file {path} (from line {lines[early[0]]})",
                           error=InputFileError,
                           fix="write the period start dates as YYYY-MM-DD (zeros or day numbers are "
                               "not dates).")
    if np.any(np.diff(np.array(dates)) <= np.timedelta64(0, "ns")):
        raise InputFileError(f"Dates in {path} are not increasing; list one period start per "
                             "line, in order.")
    return dates


def _native_geobox(path: Path) -> GeoBox:
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise GridError(f"{path.name} has no CRS; set it (gdal_edit -a_srs EPSG:4326 "
                                f"{path.name}) or re-export with a CRS.")
            return GeoBox(src.shape, src.transform, normalise_crs(src.crs))
    except rasterio.errors.RasterioIOError as exc:
        raise InputFileError(f"{path} cannot be opened as a GeoTIFF ({exc}); it may be truncated "
                             "or corrupt: export it again, or delete it to treat the period as "
                             "missing.") from exc


def default_geobox(paths: Sequence[Path], resolution: float | None) -> GeoBox:
    """Grid covering all files: UTM of their centre at ``resolution`` (default: native)."""
    native = [_native_geobox(p) for p in paths]
    extent = geom.unary_union(g.extent.to_crs(native[0].crs) for g in native)
    if resolution is None:
        res = abs(native[0].resolution.x)
        resolution = float(round(res * METRES_PER_DEGREE)) if native[0].crs.geographic else res
    return resolve_geobox(extent, resolution=resolution)


def _band_roles(src, bands: Sequence[str]) -> list[str]:
    described = [(d or "").strip().lower() for d in src.descriptions]
    names = {"vv": "vv_db", "vh": "vh_db", "ndvi": "ndvi", "vv_db": "vv_db", "vh_db": "vh_db",
             "vv_lin": "vv", "vh_lin": "vh"}
    if all(d in names for d in described) and len(described) == len(bands):
        from_desc = [names[d] for d in described]
        # descriptions say which band is which; the unit (dB/linear) comes from ``bands``
        unit = {r.replace("_db", ""): r for r in bands}
        return [unit.get(r.replace("_db", ""), r) for r in from_desc]
    if src.count != len(bands):
        raise InputFileError(f"{Path(src.name).name} has {src.count} band(s) but bands="
                             f"{list(bands)}; pass the band layout (e.g. --bands ndvi).")
    return list(bands)


def read_file(path: str | os.PathLike, geobox: GeoBox, bands: Sequence[str], *,
              ndvi_scale: float | None = None,
              resampling: str = "bilinear") -> dict[str, np.ndarray]:
    """Read the part of one file covering ``geobox`` and reproject it onto ``geobox``.

    ``path`` may also be an ``http(s)://`` URL (read with range requests, window only).

    Returns:
        Role (``vv``, ``vh``, ``ndvi``) → float32 ``(y, x)``, linear, NaN where masked.
    """
    url = str(path).startswith(("http://", "https://"))
    name = str(path).rsplit("/", 1)[-1] if url else Path(path).name
    env = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_TIMEOUT": "60",
           "GDAL_HTTP_MAX_RETRY": "3", "GDAL_HTTP_RETRY_DELAY": "0.5"} if url else {}
    try:
        with rasterio.Env(**env), rasterio.open(f"/vsicurl/{path}" if url else path) as src:
            if src.crs is None:
                raise GridError(f"{name} has no CRS; set it (gdal_edit -a_srs EPSG:4326 "
                                f"{name}) or re-export with a CRS.")
            roles = _band_roles(src, bands)
            src_crs = normalise_crs(src.crs)
            try:
                footprint = geobox.extent.to_crs(src_crs)
            except Exception as exc:  # pyproj errors on impossible transforms
                raise GridError(f"{name}: the grid cannot be expressed in its CRS "
                                f"{src_crs} ({exc}); check the file's CRS.") from exc
            file_box = geom.box(*src.bounds, src_crs)
            if footprint.is_empty or not footprint.intersects(file_box):
                raise GridError(
                    f"{name} (bounds {tuple(round(b, 4) for b in src.bounds)} in {src_crs})"
                    " does not overlap the output grid; its CRS is probably wrong (swapped "
                    "lon/lat, or projected numbers labelled EPSG:4326): fix it with "
                    "gdal_edit -a_srs, or choose another --aoi."
                )
            left, bottom, right, top = footprint.boundingbox
            window = from_bounds(left, bottom, right, top, transform=src.transform)
            window = _pad(window, 2, src.width, src.height)
            data = src.read(window=window).astype(np.float32)
            transform = src.window_transform(window)
            nodata, dtype, file_crs = src.nodata, src.dtypes[0], src.crs
    except rasterio.errors.RasterioIOError as exc:
        raise InputFileError(f"{path} cannot be read ({exc}); it may be truncated or corrupt: "
                             "export it again, or delete it to treat the period as missing."
                             ) from exc
    missing = ~np.isfinite(data)
    if nodata is not None and np.isfinite(nodata):
        missing |= data == np.float32(nodata)
    data[missing] = np.nan
    out: dict[str, np.ndarray] = {}
    for index, (band, role) in enumerate(zip(data, roles, strict=True), start=1):
        if role in S1_ROLES:
            check_s1_units(band, role, name=name, band_index=index, roles=roles)
        if role.endswith("_db"):
            band = from_db(band)
        elif role == "ndvi":
            band = band * np.float32(_ndvi_scale(ndvi_scale, dtype, name, index))
        target = np.full(geobox.shape.yx, np.nan, np.float32)
        reproject(band, target, src_transform=transform, src_crs=file_crs,
                  dst_transform=geobox.affine, dst_crs=str(geobox.crs), src_nodata=np.nan,
                  dst_nodata=np.nan, resampling=Resampling[resampling])
        out[role.replace("_db", "")] = target
    if NDVI in out:
        ndvi = out[NDVI]
        bad = np.abs(ndvi) > 1.0001
        if bad.mean() > 0.01:
            raise InputFileError(f"{name}: {100 * bad.mean():.0f}% of NDVI values are "
                                 "outside -1..1; the band is scaled: pass ndvi_scale "
                                 "(e.g. --ndvi-scale 0.0001).")
        out[NDVI] = np.where(bad, np.nan, ndvi).astype(np.float32)
    return out


def check_s1_units(band: np.ndarray, role: str, *, name: str, band_index: int,
                   roles: Sequence[str]) -> None:
    """Refuse a Sentinel-1 band whose values contradict its role (``vv_db`` holding linear, ...).

    The unit is decided from the values by :func:`fusecube.sources.bands.backscatter_units`
    (dB mostly negative, linear positive and mostly below 1), never from the role alone:
    linear sigma0 read as dB would become ``10 ** (0.05 / 10)`` ≈ 1.0 everywhere.

    Raises:
        CubeSchemaError: The values are the other unit (the message gives the ``--bands`` that
            fits), or neither unit.
    """
    band = np.where(band == 0, np.nan, band)  # 0: fill outside the footprint, not a measurement
    if not np.isfinite(band).any():
        return
    found = backscatter_units(xr.DataArray(band, dims=(Y, X)), name=f"band {band_index} ({role})",
                              source=name)
    given = "db" if role.endswith("_db") else "linear"
    if found == given:
        return
    toggled = [r.replace("_db", "") if found == "linear" else f"{r}_db" if r in ("vv", "vh") else r
               for r in roles]
    values = band[np.isfinite(band)]
    described = ("linear sigma0 (positive, mostly below 1)" if found == "linear"
                 else "dB (mostly negative)")
    raise CubeSchemaError(
        f"{name}: band {band_index} is given as {role!r} ({'dB' if given == 'db' else 'linear'}) but "
        f"its values are {described}: median {float(np.median(values)):.4g}, "
        f"{float(np.mean(values < 0)):.0%} negative. Pass --bands {','.join(toggled)} (roles vv/vh "
        "for linear sigma0, vv_db/vh_db for dB).")


def _ndvi_scale(ndvi_scale: float | None, dtype: str, name: str, band_index: int) -> float:
    """The factor that turns the stored NDVI into NDVI: given, 1e-4 for 16/32-bit integers, else 1.

    A byte (8-bit) NDVI has no common scale (x 250, (NDVI + 1) x 127.5, ...), so it is refused
    unless ``ndvi_scale`` says how to read it.
    """
    if ndvi_scale is not None:
        return ndvi_scale
    kind = np.dtype(dtype)
    if kind.kind not in "iu":
        return 1.0
    if kind.itemsize == 1:
        raise InputFileError(
            f"{name}: band {band_index} (ndvi) is {kind} (0-255), whose NDVI scale is not a common "
            "convention; pass --ndvi-scale (e.g. 0.004 for NDVI x 250) or export float NDVI.")
    return 1e-4


def _pad(window: Window, pad: int, width: int, height: int) -> Window:
    col0 = max(int(np.floor(window.col_off)) - pad, 0)
    row0 = max(int(np.floor(window.row_off)) - pad, 0)
    col1 = min(int(np.ceil(window.col_off + window.width)) + pad, width)
    row1 = min(int(np.ceil(window.row_off + window.height)) + pad, height)
    return Window(col0, row0, max(col1 - col0, 1), max(row1 - row0, 1))


def read_geotiff_stack(
    folder: str | os.PathLike,
    *,
    start: str | None = None,
    period_days: int = 12,
    dates_file: str | os.PathLike | None = None,
    aoi: Any = None,
    geobox: GeoBox | None = None,
    resolution: float | None = None,
    bands: Sequence[str] = DEFAULT_BANDS,
    pattern: str = "*.tif",
    ndvi_scale: float | None = None,
    resampling: str = "bilinear",
    progress: Progress | None = None,
) -> xr.Dataset:
    """Read a folder of per-period or per-date GeoTIFFs into a cube on one GeoBox.

    Args:
        folder: The folder.
        start: First day of period 1 (per-period files without a dates file), or of the first
            period (per-date files; default the first date).
        period_days: Period length in days.
        dates_file: Period start dates, one per line (per-period files), instead of ``start``.
        aoi: Crop to this AOI (see :func:`fusecube.grid.geobox.resolve_geobox`).
        geobox: Output grid (instead of ``aoi``).
        resolution: Pixel size in metres of the automatic UTM grid (default: native size).
        bands: Role of each band in file order: ``vv_db``, ``vh_db``, ``vv``, ``vh``, ``ndvi``.
        pattern: Glob for the files.
        ndvi_scale: Multiply NDVI by this (default 1e-4 for integer bands, else 1).
        resampling: Rasterio resampling name used to reproject.
        progress: ``(stage, done, total)`` callback (stage ``files``).

    Returns:
        The cube (vv, vh linear; ndvi; ndvi_quality 1 where NDVI is observed, else 0).
    """
    unknown = [b for b in bands if b not in ROLES]
    if unknown:
        raise ConfigError(f"Unknown band role(s) {unknown}; use {list(ROLES)}.")
    progress = progress or (lambda stage, done, total: None)
    listed = list_stack(folder, pattern=pattern)
    files, starts = place_in_time(listed, start, period_days, dates_file)
    if geobox is None:
        geobox = resolve_geobox(aoi, resolution=resolution) if aoi is not None else \
            default_geobox([f.path for f in files], resolution)
    n = len(starts)
    roles = {r.replace("_db", "") for r in bands}
    stacks: dict[int, list[dict[str, np.ndarray]]] = {}
    for done, item in enumerate(files, start=1):
        stacks.setdefault(item.period, []).append(read_file(item.path, geobox, bands,
                                                            ndvi_scale=ndvi_scale,
                                                            resampling=resampling))
        log.info("read %s → period %d", item.path.name, item.period + 1)
        progress("files", done, len(files))
    shape = (n, *geobox.shape.yx)
    cube = {name: np.full(shape, np.nan, np.float32) for name in (VV, VH, NDVI)}
    for p, observations in stacks.items():
        for role in roles:
            cube[role][p] = median_composite(np.stack([o[role] for o in observations]))
    missing = sorted(set(range(n)) - set(stacks))
    if missing:
        warnings.warn(
            f"No file for period(s) {[m + 1 for m in missing]} in {folder}; they are NaN "
            "(missing data), which gap-filling will treat as cloud.", FusecubeWarning,
            stacklevel=2)
    for role in {VV, VH, NDVI} - roles:
        log.warning("no %s band in %s: the cube's %s is all NaN", role, folder, role)
    cube[NDVI_QUALITY] = np.isfinite(cube[NDVI]).astype(np.float32)
    ds = build_cube(cube, starts, geobox, period_days,
                    extra_coords={"n_files": np.bincount([f.period for f in files],
                                                         minlength=n).astype(np.int16)})
    ds.attrs.update({"source": "geotiff", "folder": str(folder), "period_days": period_days,
                     "missing_periods": str([m + 1 for m in missing])})
    return ds


def place_in_time(listed, start: str | None, period_days: int,
                  dates_file: str | os.PathLike | None) -> tuple[list[StackFile], np.ndarray]:
    """The period of each listed file and the period start dates (from names, start or dates file).

    Every date (dates file, file name, ``start``) must lie in the Sentinel era.
    """
    if listed[0][1] is not None:  # period_NN files
        numbers = [p for _, p, _ in listed]
        if min(numbers) < 1 or len(set(numbers)) != len(numbers):
            raise InputFileError("Period numbers must start at 1 and be unique; found "
                                 f"{sorted(numbers)[:10]}...")
        if dates_file is not None:
            starts = np.array(read_dates_file(dates_file), dtype="datetime64[ns]")
            if max(numbers) > len(starts):
                raise InputFileError(f"Dates file {dates_file} lists {len(starts)} periods but "
                                     f"there is a file for period {max(numbers)}.")
        elif start is not None:
            check_sentinel_era([to_naive_utc(start)], what=f"--start {start}",
                               fix="give the first day of period 1 as YYYY-MM-DD.")
            starts = period_starts(start, max(numbers), period_days)
        else:
            raise ConfigError("Per-period files need the dates: pass --start (first day of "
                              "period 1) or --dates FILE.")
        files = [StackFile(path, p - 1) for path, p, _ in listed]
        return files, starts
    dates = np.array([d for _, _, d in listed], dtype="datetime64[ns]")
    oldest = int(np.argmin(dates))
    check_sentinel_era(dates, what=f"GeoTIFF {listed[oldest][0]} (date {str(dates[oldest])[:10]} read "
                                   "from the name as YYYYMMDD)", error=InputFileError,
                       fix="rename the files with their acquisition dates (YYYYMMDD) or move the "
                           "others out of the folder.")
    if start is not None:
        check_sentinel_era([to_naive_utc(start)], what=f"--start {start}",
                           fix="give the first day of the first period as YYYY-MM-DD.")
    first = to_naive_utc(start) if start is not None else dates.min()
    last = dates.max()
    n = int((last - first) // np.timedelta64(period_days, "D")) + 1
    starts = period_starts(first, n, period_days)
    index = period_index(list(dates), starts, period_days)
    files = [StackFile(path, int(i), d) for (path, _, d), i in zip(listed, index, strict=True)
             if i >= 0]
    if not files:
        raise ConfigError(f"All files are dated before start {start}.")
    return files, starts


def import_geotiff(folder: str | os.PathLike, out: str | os.PathLike, **kwargs) -> Path:
    """Read a GeoTIFF stack (see :func:`read_geotiff_stack`) and write it as a zarr cube."""
    from fusecube.storage.atomic import prepare_output

    prepare_output(out, kind="store")  # the output rule, before any file is read
    return write_cube(read_geotiff_stack(folder, **kwargs), out)
