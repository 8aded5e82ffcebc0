"""Sentinel-1 and Sentinel-2 on their own dates → one cube on common periods.

openEO, Planetary Computer and Earth Search hand out acquisitions, not periods: S1 every few
days, S2 on other days, either in separate files or in one file whose time axis is the union
of both (each band NaN on the other sensor's dates). :func:`needs_compositing` tells that case
from a cube whose sensors share their periods, and :func:`composite_onto_periods` takes the
per-pixel median of each period's finite values with the compositing kernel of
:mod:`fusecube.sources.compose` (the one a STAC fetch and a GeoTIFF stack use), lazily per
spatial block. The cube's ``time`` is then the period centres, with ``period_start`` and the
number of S1 and S2 dates per period as coordinates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import xarray as xr

from fusecube.cube import DIMS, NDVI, TIME, VH, VV, X, Y
from fusecube.errors import ConfigError
from fusecube.grid.periods import period_starts
from fusecube.sources.compose import median_composite, period_index, to_naive_utc

log = logging.getLogger(__name__)

DEFAULT_PERIOD_DAYS = 12
"""Period length when the input does not say (the pipeline's default)."""
SHARED_DATES_MIN = 0.5
"""S1 and S2 sharing fewer than this share of the sparser sensor's dates are on their own axes."""


def observed_dates(ds: xr.Dataset, names: Sequence[str]) -> np.ndarray:
    """``(T,)`` bool: the dates where any of ``names`` has a finite value (one dask pass)."""
    import dask

    present = [n for n in names if n in ds.data_vars and TIME in ds[n].dims]
    if not present:
        return np.zeros(ds.sizes[TIME], bool)
    flags = [np.isfinite(ds[n]).any(dim=[d for d in ds[n].dims if d != TIME]).data for n in present]
    return np.logical_or.reduce([np.asarray(f) for f in dask.compute(*flags)])


def needs_compositing(ds: xr.Dataset) -> bool:
    """True when S1 and S2 of ``ds`` sit on their own dates of one (NaN-padded) time axis.

    A cube with cloud-free gaps keeps S2 on a subset of the S1 periods (shared dates = all S2
    dates); acquisitions from two sensors share few dates. Fewer shared dates than
    :data:`SHARED_DATES_MIN` of the sparser sensor's means the latter.
    """
    if NDVI not in ds.data_vars or not ({VV, VH} & set(ds.data_vars)):
        return False
    s1, s2 = observed_dates(ds, (VV, VH)), observed_dates(ds, (NDVI,))
    fewer = min(int(s1.sum()), int(s2.sum()))
    return fewer > 0 and int((s1 & s2).sum()) < SHARED_DATES_MIN * fewer


def common_starts(times: Sequence[np.ndarray], *, period_days: int = DEFAULT_PERIOD_DAYS,
                  start: str | None = None) -> np.ndarray:
    """Period starts from ``start`` (default: the first date) covering the last of ``times``.

    Args:
        times: The time coordinates of the inputs.
        period_days: Period length in days.
        start: First day of the first period (ISO date).

    Returns:
        datetime64[ns] period starts.
    """
    if period_days < 1:
        raise ConfigError(f"Period length {period_days} days must be at least 1.")
    dates = np.concatenate([np.asarray([to_naive_utc(t) for t in tt], "datetime64[ns]") for tt in times])
    first = to_naive_utc(start) if start is not None else dates.min()
    last = dates.max()
    if last < first:
        raise ConfigError(f"Every date of the input is before start {start}; give an earlier --start.")
    n_periods = int((last - first) // np.timedelta64(period_days, "D")) + 1
    return period_starts(first, n_periods, period_days)


def _composite_block(values: np.ndarray, *, index: np.ndarray, n_periods: int) -> np.ndarray:
    """``(..., T)`` → ``(..., P)``: the median of each period's finite values."""
    stack = np.moveaxis(values, -1, 0)
    out = np.stack([median_composite(stack[index == p]) for p in range(n_periods)])
    return np.moveaxis(out, 0, -1)


def composite_onto_periods(ds: xr.Dataset, starts: np.ndarray, period_days: int) -> xr.Dataset:
    """Every ``(time, y, x)`` variable of ``ds`` as per-period medians over ``starts``.

    Dates outside the periods are left out (logged). Lazy on a dask dataset: each spatial
    block is composited on its own, all dates at once.

    Args:
        ds: Variables over ``(time, y, x)`` on any dates (NaN where not observed).
        starts: Period starts (:func:`common_starts`).
        period_days: Period length in days.

    Returns:
        The cube: ``time`` = period centres, ``period_start``, ``n_s1_dates`` and
        ``n_s2_dates`` (source dates with S1 and S2 values per period) as coordinates.
    """
    index = period_index(ds[TIME].values, starts, period_days)
    outside = int((index < 0).sum())
    if outside:
        log.info("%d of %d dates lie outside the periods and are left out", outside, index.size)
    n_periods = len(starts)
    counts = {f"n_{sensor}_dates": np.bincount(index[(index >= 0) & observed_dates(ds, names)],
                                              minlength=n_periods).astype(np.int16)
              for sensor, names in (("s1", (VV, VH)), ("s2", (NDVI,)))}
    names = [n for n, v in ds.data_vars.items() if set(v.dims) == set(DIMS)]
    cube = ds[names].transpose(*DIMS)
    if any(v.chunks for v in cube.data_vars.values()):
        cube = cube.chunk({TIME: -1})
    composited = xr.apply_ufunc(
        _composite_block, cube, input_core_dims=[[TIME]], output_core_dims=[["period"]],
        exclude_dims={TIME}, dask="parallelized", output_dtypes=[np.float32],
        dask_gufunc_kwargs={"output_sizes": {"period": n_periods}},
        kwargs={"index": index, "n_periods": n_periods}, keep_attrs=True)
    half = np.timedelta64(period_days * 12, "h")
    composited = composited.rename({"period": TIME}).assign_coords(
        {TIME: starts + half, "period_start": (TIME, starts),
         **{name: (TIME, value) for name, value in counts.items()}}).transpose(*DIMS)
    still = {n: v for n, v in ds.data_vars.items() if TIME not in v.dims and {Y, X} <= set(v.dims)}
    out = composited.assign(still)
    out.attrs = {**ds.attrs, "period_days": period_days}
    return out
