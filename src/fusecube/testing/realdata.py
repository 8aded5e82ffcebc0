"""The real datasets in ``../shared/data/real`` as fusecube cubes (tests and benchmarks only).

Each function returns an ``xarray.Dataset`` that passes :func:`fusecube.cube.validate_cube`:
dims ``(time, y, x)``, float32 ``vv``/``vh`` (linear sigma0) and ``ndvi`` (NaN where not
observed or clouded), ``time`` as datetime64[ns], the CRS attached with odc-geo. Cubes without
radar carry all-NaN ``vv``/``vh`` (``validate_cube`` checks dims, dtype and sentinels, not
coverage) and ``attrs['radar'] = False``. Read ``SOURCES.md`` in the data folder for origins and
licences (sen2rts is GPL-3: fixtures only).

- ``worldcereal_cube``: two 640 m patches of Flemish cropland, S1 GRD ascending (VV/VH dB, 20 m)
  and S2 L2A (10 m B04/B08, 20 m SCL). The cube is on the S1 20 m grid: NDVI is computed at
  10 m, masked with the SCL (clear = 4 vegetation, 5 bare soil, 6 water; 7 unclassified is
  left out as it mostly marks haze and cloud edges here, 11 snow because it hides the canopy),
  then averaged over each 2 x 2 block of clear 10 m pixels. The SCL is 20 m, so a block is
  all clear or all masked. Time axis: the S2 dates with at least one clear pixel, S1 the mean
  (linear) of the acquisitions within ±6 days (NaN if none); or, with ``period_days``, regular
  periods from the patch start (median of clear NDVI, mean of linear S1, ``time`` = centre).
  ``crop_type`` (y, x) is the mode of the 10 m ``CT`` labels in each block (0 = unlabelled, or
  no single most frequent label: a mixed edge pixel), with CF ``flag_values``/``flag_meanings``.
- ``fusets_field_cube``: the FuseTS BIDS field (Spain, 2019), NDVI only (already cloud-masked
  by openEO), 33 irregular dates, 10 m, EPSG:32630.
- ``sen2rts_cube``: the sen2rts Po-valley sample, 60 dates of 10 m NDVI (int16 x 1e4), clouds
  masked with the 20 m SCL (0 no data, 1 saturated, 3 cloud shadow, 8/9 cloud, 10 cirrus,
  11 snow), EPSG:32632.
- ``mogpr_series``: the FuseTS field-mean NDVI/RVI table on a regular grid.

Measured with this module (``correlation_summary``: per-pixel Pearson r of NDVI with VH in dB
over the dates where both are observed, pixels with at least 10 such dates, median over pixels;
crop classes from ``crop_type``: maize 1200, winter wheat 1110, permanent grass 9120):

========================  ============  ========  =====  ============  ============  ============
cube                      shape t,y,x   observed  r all  r maize (px)  r w. wheat    r grass (px)
========================  ============  ========  =====  ============  ============  ============
worldcereal_31UDS         71, 32, 32    66.0 %    0.23   0.71 (294)    (no pixel)    0.13 (189)
worldcereal_31UES         46, 32, 32    71.1 %    0.24   0.49 (94)     0.27 (317)    0.02 (318)
31UDS, period_days=30     17, 32, 32    79.8 %    0.30   0.67          (no pixel)    0.10
31UES, period_days=30     17, 32, 32    86.0 %    0.30   0.47          0.26          0.19
31UES, period_days=10     49, 32, 32    53.7 %    0.24   0.49          0.30          -0.00
fusets_field (no radar)   33, 57, 56    68.0 %
sen2rts_po (no radar)     60, 7, 25     57.7 %
========================  ============  ========  =====  ============  ============  ============

``dates``: 71 of the 118 S2 dates of 31UDS and 46 of 72 of 31UES have a clear pixel. VH follows
maize (r 0.5-0.7) and hardly grass (r about 0-0.2); over the whole mixed patch the median pixel
has r about 0.25, i.e. radar explains about 6 % of the NDVI variance of a typical pixel.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import pandas as pd
import rasterio
import xarray as xr
from odc.geo.geobox import GeoBox

from fusecube.cube import NDVI, VH, VV, with_geobox
from fusecube.errors import GridError, InputFileError
from fusecube.grid.periods import period_centres
from fusecube.units import from_db, to_db

ENV_VAR = "FUSECUBE_REAL_DATA"
"""Environment variable that points at the real-data folder."""

WORLDCEREAL_PATCHES: dict[str, str] = {"31UDS": "00002806639B424A", "31UES": "0000280849BAC91C"}
"""Sentinel-2 tile → WorldCereal location id of the two patches."""

CLEAR_SCL = (4, 5, 6)
"""SCL classes taken as a clear view of the surface (worldcereal)."""

SEN2RTS_MASKED_SCL = (0, 1, 3, 8, 9, 10, 11)
"""SCL classes masked in the sen2rts sample."""

S1_WINDOW_DAYS = 6
"""S1 acquisitions within this many days of an S2 date are averaged onto it."""

MAIN_CROPS: dict[str, int] = {"maize": 1200, "winter_wheat": 1110, "grassland": 9120}
"""WorldCereal crop-type codes of the main classes in the two patches."""

MOGPR = "fusets_bids/mogpr_input.csv"


def real_data_root() -> Path | None:
    """The real-data folder: ``$FUSECUBE_REAL_DATA``, else ``../shared/data/real`` beside the repo.

    Returns:
        The folder, or None when none of the candidates exists.
    """
    env = os.environ.get(ENV_VAR)
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "real",
                   Path.cwd() / ".." / "shared" / "data" / "real"]
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    return None


def _root() -> Path:
    root = real_data_root()
    if root is None:
        raise InputFileError(
            f"Real test data not found: set ${ENV_VAR} to the folder, or put shared/data/real "
            "beside the repository checkout."
        )
    return root


def _one(folder: Path, prefix: str) -> Path:
    found = sorted(folder.glob(f"{prefix}_*.nc"))
    if len(found) != 1:
        raise InputFileError(f"Expected one {prefix}_*.nc in {folder}, found {len(found)}; "
                             "check the real-data folder against SHA256SUMS.")
    return found[0]


def _days(times) -> np.ndarray:
    return np.asarray(times).astype("datetime64[D]")


def ndvi_from_bands(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """``(nir - red) / (nir + red)`` as float32, NaN where the sum is not positive or missing."""
    red, nir = np.asarray(red, np.float32), np.asarray(nir, np.float32)
    total = nir + red
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = (nir - red) / total
    return np.where(total > 0, ndvi, np.nan).astype(np.float32)


def aggregate_2x2(values: np.ndarray) -> np.ndarray:
    """Mean of the finite values in each 2 x 2 block of the last two axes (NaN if none).

    Args:
        values: ``(..., 2h, 2w)`` array, NaN where not observed.

    Returns:
        float32 ``(..., h, w)``.
    """
    *lead, h2, w2 = values.shape
    if h2 % 2 or w2 % 2:
        raise GridError(f"aggregate_2x2 needs even y/x sizes, got {h2} x {w2}.")
    blocks = np.asarray(values, np.float32).reshape(*lead, h2 // 2, 2, w2 // 2, 2)
    finite = np.isfinite(blocks)
    count = finite.sum(axis=(-3, -1))
    total = np.where(finite, blocks, 0).sum(axis=(-3, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


def mode_2x2(labels: np.ndarray) -> np.ndarray:
    """Most frequent label of each 2 x 2 block; 0 where no label is the single most frequent.

    Args:
        labels: ``(2h, 2w)`` integer labels.

    Returns:
        int32 ``(h, w)``.
    """
    h2, w2 = labels.shape
    blocks = np.asarray(labels).reshape(h2 // 2, 2, w2 // 2, 2).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(h2 // 2, w2 // 2, 4)
    counts = (blocks[..., :, None] == blocks[..., None, :]).sum(axis=-1)  # (h, w, 4)
    best = counts.argmax(axis=-1)
    winner = np.take_along_axis(blocks, best[..., None], axis=-1)[..., 0]
    top = counts.max(axis=-1)
    tie = (top == 1) | ((top == 2) & ((counts == 2) & (blocks != winner[..., None])).any(axis=-1))
    return np.where(tie, 0, winner).astype(np.int32)


def crop_names(root: Path | None = None) -> dict[int, str]:
    """WorldCereal crop-type code → name, from ``worldcereal_be/wc2eurocrops_map.csv``."""
    table = pd.read_csv((root or _root()) / "worldcereal_be" / "wc2eurocrops_map.csv")
    return dict(zip(table["croptype"].astype(int), table["name"].astype(str), strict=True))


def _patch_folder(patch: str) -> tuple[str, Path]:
    location = WORLDCEREAL_PATCHES.get(patch, patch)
    if location not in WORLDCEREAL_PATCHES.values():
        raise InputFileError(f"Unknown WorldCereal patch {patch!r}; use one of "
                             f"{sorted(WORLDCEREAL_PATCHES)} or {sorted(WORLDCEREAL_PATCHES.values())}.")
    tile = next(t for t, loc in WORLDCEREAL_PATCHES.items() if loc == location)
    return tile, _root() / "worldcereal_be" / location


def _check_grids(s1: xr.Dataset, s2_10: xr.Dataset, s2_20: xr.Dataset, name: str) -> None:
    """S2 20 m and the 2 x 2 means of the S2 10 m coordinates must equal the S1 grid."""
    for axis in ("x", "y"):
        ref = s1[axis].values
        fine = s2_10[axis].values.reshape(-1, 2).mean(axis=1)
        if not (np.allclose(s2_20[axis].values, ref) and np.allclose(fine, ref)):
            raise GridError(f"{name}: the S2 {axis} coordinates do not nest in the S1 20 m grid; "
                            "the files are not the WorldCereal patch layout this reader expects.")


def _s1_on_dates(lin: np.ndarray, s1_days: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Mean of the S1 acquisitions within ``S1_WINDOW_DAYS`` of each day (NaN if none)."""
    gap = np.abs((days[:, None] - s1_days[None, :]).astype(np.int64))
    weight = (gap <= S1_WINDOW_DAYS).astype(np.float64)
    finite = np.isfinite(lin)
    total = np.tensordot(weight, np.where(finite, lin, 0.0), axes=(1, 0))
    count = np.tensordot(weight, finite.astype(np.float64), axes=(1, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


def _composite(values: np.ndarray, period: np.ndarray, n: int, how: str) -> np.ndarray:
    """Per-period median or mean along axis 0 (one step per period, vectorised over pixels)."""
    out = np.full((n, *values.shape[1:]), np.nan, np.float32)
    reduce = np.nanmedian if how == "median" else np.nanmean
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "All-NaN slice|Mean of empty slice", RuntimeWarning)
        for p in np.unique(period):
            out[p] = reduce(values[period == p], axis=0)
    return out


def worldcereal_cube(patch: str, *, period_days: int | None = None) -> xr.Dataset:
    """One WorldCereal patch (S1 + S2 + crop labels) as a cube on the S1 20 m grid.

    Args:
        patch: ``"31UDS"`` or ``"31UES"`` (or the location id).
        period_days: None for one step per S2 date with any clear pixel; else regular periods
            of this many days from the patch start date (e.g. 10, 30).

    Returns:
        The cube: ``vv``, ``vh``, ``ndvi`` (time, y, x) and ``crop_type`` (y, x), EPSG:32631.
    """
    tile, folder = _patch_folder(patch)
    s1 = xr.open_dataset(_one(folder, "S1_GRD-ASCENDING_20m"))
    s2_10 = xr.open_dataset(_one(folder, "S2_L2A_10m"))
    s2_20 = xr.open_dataset(_one(folder, "S2_L2A_20m"), mask_and_scale=False)
    labels = xr.open_dataset(_one(folder, "OUTPUT_POLY-110_10m"), mask_and_scale=False)
    _check_grids(s1, s2_10, s2_20, folder.name)
    if not np.array_equal(s2_10["timestamp"].values, s2_20["timestamp"].values):
        raise InputFileError(f"{folder.name}: the S2 10 m and 20 m files have different dates.")
    clear = np.isin(s2_20["SCL"].values, CLEAR_SCL)  # (t, 32, 32)
    ndvi10 = ndvi_from_bands(s2_10["B04"].values, s2_10["B08"].values)
    ndvi10[~clear.repeat(2, axis=1).repeat(2, axis=2)] = np.nan
    ndvi = aggregate_2x2(ndvi10)
    s2_days, s1_days = _days(s2_10["timestamp"].values), _days(s1["timestamp"].values)
    radar = {VV: from_db(s1["VV"].values.astype(np.float32)),
             VH: from_db(s1["VH"].values.astype(np.float32))}
    if period_days is None:
        keep = clear.any(axis=(1, 2))
        days, ndvi = s2_days[keep], ndvi[keep]
        radar = {k: _s1_on_dates(v, s1_days, days) for k, v in radar.items()}
        times = days.astype("datetime64[ns]")
    else:
        if period_days < 1:
            raise InputFileError(f"period_days must be a positive number of days, got {period_days}.")
        start, end = np.datetime64(s1.attrs["start_date"], "D"), np.datetime64(s1.attrs["end_date"], "D")
        n = int((end - start).astype(int)) // period_days + 1
        ndvi = _composite(ndvi, (s2_days - start).astype(int) // period_days, n, "median")
        s1_period = (s1_days - start).astype(int) // period_days
        radar = {k: _composite(v, s1_period, n, "mean") for k, v in radar.items()}
        times = period_centres(str(start), n, period_days)
    crop = mode_2x2(labels["CT"].values)
    names = crop_names(folder.parents[1])
    present = np.unique(crop[crop > 0])
    crop_attrs = {"long_name": "WorldCereal crop type (mode of the 10 m labels; 0 unlabelled or mixed)",
                  "flag_values": present.astype(np.int32),
                  "flag_meanings": " ".join(re.sub(r"\W+", "_", names.get(int(c), str(c))).strip("_")
                                            for c in present)}
    dims = ("time", "y", "x")
    ds = xr.Dataset(
        {VV: (dims, radar[VV]), VH: (dims, radar[VH]), NDVI: (dims, ndvi.astype(np.float32)),
         "crop_type": (("y", "x"), crop, crop_attrs)},
        coords={"time": times.astype("datetime64[ns]"), "y": s1["y"].values, "x": s1["x"].values},
        attrs={"source": f"worldcereal_be/{folder.name}", "tile": tile, "radar": True,
               "clear_scl": list(CLEAR_SCL), "s1_window_days": S1_WINDOW_DAYS,
               **({"period_days": period_days} if period_days else {})},
    )  # S2 dates are irregular: no nominal period then (the gates use the median step)
    return ds.odc.assign_crs(f"EPSG:{s1.attrs['epsg']}")


def _no_radar(ndvi: np.ndarray, times: np.ndarray, source: str) -> xr.Dataset:
    dims = ("time", "y", "x")
    empty = np.full(ndvi.shape, np.nan, np.float32)
    return xr.Dataset({VV: (dims, empty), VH: (dims, empty.copy()),
                       NDVI: (dims, ndvi.astype(np.float32))},
                      coords={"time": np.asarray(times).astype("datetime64[ns]")},
                      attrs={"source": source, "radar": False})


def fusets_field_cube() -> xr.Dataset:
    """The FuseTS BIDS field (raw S2 NDVI, 33 dates, 57 x 56 px, EPSG:32630), without radar.

    ``vv``/``vh`` are all NaN (the file has no S1) and ``attrs['radar']`` is False;
    ``validate_cube`` accepts such a cube.
    """
    path = _root() / "fusets_bids" / "raw_s2_ndvi_field.nc"
    src = xr.open_dataset(path)
    ds = _no_radar(src["NDVI"].transpose("t", "y", "x").values, src["t"].values,
                   "fusets_bids/raw_s2_ndvi_field.nc")
    ds = ds.assign_coords(y=src["y"].values, x=src["x"].values)
    return ds.odc.assign_crs(src["crs"].attrs["crs_wkt"])


def _scl_on_grid(scl_path: Path, geobox: GeoBox) -> np.ndarray:
    """SCL values at the centres of ``geobox``'s pixels (nearest 20 m pixel; 0 outside)."""
    with rasterio.open(scl_path) as src:
        scl, inverse = src.read(1), ~src.transform
    ys, xs = np.meshgrid(np.arange(geobox.shape.y) + 0.5, np.arange(geobox.shape.x) + 0.5,
                         indexing="ij")
    wx, wy = geobox.affine * (xs, ys)
    cols, rows = (np.floor(v).astype(int) for v in inverse * (wx, wy))
    inside = (rows >= 0) & (rows < scl.shape[0]) & (cols >= 0) & (cols < scl.shape[1])
    return np.where(inside, scl[rows.clip(0, scl.shape[0] - 1), cols.clip(0, scl.shape[1] - 1)], 0)


def sen2rts_cube() -> xr.Dataset:
    """The sen2rts Po-valley sample (60 dates, 7 x 25 px at 10 m, EPSG:32632), without radar.

    NDVI is the stored int16 x 1e-4, masked where nodata or where the SCL says
    :data:`SEN2RTS_MASKED_SCL`. ``vv``/``vh`` are all NaN, ``attrs['radar']`` is False.
    """
    folder = _root() / "sen2rts" / "extdata" / "sampleroi"
    files = sorted((folder / "NDVI").glob("*_NDVI_10.tif"),
                   key=lambda p: re.search(r"_(\d{8})_", p.name).group(1))
    if not files:
        raise InputFileError(f"No *_NDVI_10.tif in {folder / 'NDVI'}; check the real-data folder.")
    with rasterio.open(files[0]) as src:
        geobox = GeoBox(src.shape, src.transform, src.crs.to_string())
    stack, clouds = [], []
    for path in files:  # one step per file; the pixels are handled as whole arrays
        with rasterio.open(path) as src:
            if src.shape != geobox.shape.yx or src.transform != geobox.affine:
                raise GridError(f"{path.name} is not on the grid of {files[0].name}.")
            raw, nodata = src.read(1), src.nodata
        stack.append(np.where(raw == nodata, np.nan, raw * np.float32(1e-4)))
        scl = folder / "SCL" / path.name.replace("_NDVI_", "_SCL_")
        if not scl.exists():
            raise InputFileError(f"{scl} is missing: every NDVI file needs its SCL file.")
        clouds.append(np.isin(_scl_on_grid(scl, geobox), SEN2RTS_MASKED_SCL))
    ndvi = np.where(np.stack(clouds), np.nan, np.stack(stack)).astype(np.float32)
    ndvi[np.abs(ndvi) > 1] = np.nan
    times = [np.datetime64(pd.Timestamp(re.search(r"_(\d{8})_", p.name).group(1)), "ns")
             for p in files]
    ds = _no_radar(ndvi, np.array(times), "sen2rts/extdata/sampleroi")
    return with_geobox(ds, geobox)


def mogpr_series(root: Path | None = None, step: int = 5):
    """Field-mean NDVI and RVI (desc/asc) of the FuseTS BIDS demo on a regular ``step``-day grid.

    Args:
        root: The real-data folder (default :func:`real_data_root`).
        step: Period length in days from 2019-01-01.

    Returns:
        ``ndvi`` float32 ``(1, T)`` (NaN where no S2), ``radar`` dict ``{"RVI_DESC",
        "RVI_ASC"}`` → float32 ``(T, 1, 1)`` (gaps interpolated), ``times`` datetime64[ns]
        ``(T,)`` (period centres).
    """
    table = pd.read_csv((root or _root()) / MOGPR, parse_dates=["date"])
    table["date"] = table["date"].dt.tz_localize(None)
    start = pd.Timestamp("2019-01-01")
    n = 365 // step
    table["period"] = (table["date"] - start).dt.days // step
    grid = table.groupby("period").mean(numeric_only=True).reindex(range(n))
    times = (start + pd.to_timedelta(np.arange(n) * step + step / 2, unit="D")).values
    radar = {k: grid[k].interpolate(limit_direction="both").to_numpy(np.float32)[:, None, None]
             for k in ("RVI_DESC", "RVI_ASC")}
    return grid["NDVI"].to_numpy(np.float32)[None], radar, times.astype("datetime64[ns]")


def ndvi_radar_correlation(ds: xr.Dataset, *, band: str = VH, min_pairs: int = 10) -> xr.DataArray:
    """Per-pixel Pearson r of NDVI with ``band`` in dB over the dates where both are observed.

    Args:
        ds: A cube with ``ndvi`` and ``band``.
        band: ``"vh"`` or ``"vv"`` (linear in the cube; converted to dB here).
        min_pairs: Pixels with fewer common dates get NaN.

    Returns:
        float32 ``(y, x)`` correlation.
    """
    ndvi = ds[NDVI].values.astype(np.float64)
    radar = to_db(ds[band].values.astype(np.float64))
    both = np.isfinite(ndvi) & np.isfinite(radar)
    n = both.sum(axis=0)
    a, b = np.where(both, ndvi, 0.0), np.where(both, radar, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ma, mb = a.sum(0) / n, b.sum(0) / n
        da, db = np.where(both, a - ma, 0.0), np.where(both, b - mb, 0.0)
        r = (da * db).sum(0) / np.sqrt((da**2).sum(0) * (db**2).sum(0))
    r = np.where(n >= min_pairs, r, np.nan).astype(np.float32)
    return xr.DataArray(r, dims=("y", "x"), coords={"y": ds["y"], "x": ds["x"]})


def correlation_summary(ds: xr.Dataset, *, band: str = VH, min_pairs: int = 10) -> dict:
    """Shape, observed NDVI share and median NDVI-radar correlation (all and per main crop).

    Returns:
        ``{"shape", "dates", "observed", "r_all", "r_<crop>", "n_<crop>"}``; a median over no
        pixel is NaN.
    """
    r = ndvi_radar_correlation(ds, band=band, min_pairs=min_pairs).values
    out = {"shape": tuple(int(s) for s in ds[NDVI].shape), "dates": int(ds.sizes["time"]),
           "observed": float(np.isfinite(ds[NDVI].values).mean())}

    def median(sel: np.ndarray) -> float:
        values = r[sel & np.isfinite(r)]
        return float(np.median(values)) if values.size else float("nan")

    out["r_all"] = median(np.ones(r.shape, bool))
    if "crop_type" in ds:
        crop = ds["crop_type"].values
        for name, code in MAIN_CROPS.items():
            out[f"r_{name}"], out[f"n_{name}"] = median(crop == code), int((crop == code).sum())
    return out


REAL_CUBES: dict[str, Callable[[], xr.Dataset]] = {
    "worldcereal_31UDS": partial(worldcereal_cube, "31UDS"),
    "worldcereal_31UES": partial(worldcereal_cube, "31UES"),
    "worldcereal_31UES_monthly": partial(worldcereal_cube, "31UES", period_days=30),
    "fusets_field": fusets_field_cube,
    "sen2rts_po": sen2rts_cube,
}
"""Every real cube by name (each call reads the files again)."""
