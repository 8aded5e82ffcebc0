"""Baseline gap-fill methods: linear interpolation in time and Whittaker-only."""

from __future__ import annotations

from typing import Literal

import numpy as np
import xarray as xr

from fusecube.cube import CF_ATTRS, DIMS, NDVI, NDVI_FUSED, TIME
from fusecube.grid.periods import to_days
from fusecube.kernels.gaps import neighbour_observations
from fusecube.kernels.whittaker import linear_fill, whittaker

BaselineMethod = Literal["linear", "whittaker"]


def gap_lengths(values: np.ndarray) -> np.ndarray:
    """``(N, T)`` int: length (in dates) of the run of NaN each value belongs to; 0 if observed.

    Runs touching either end of the series count to that end.
    """
    missing = ~np.isfinite(values)
    previous, following = neighbour_observations(~missing)
    return np.where(missing, following - previous - 1, 0)


def fill_array(values: np.ndarray, times_days: np.ndarray, method: BaselineMethod,
               lam: float = 2.0, chunk_pixels: int = 32768, *, linear_below: int = 0) -> np.ndarray:
    """Gap-fill ``(N, T)`` series with a baseline method; returns float32 ``(N, T)``.

    Observed values are kept as they are; only NaN positions are filled. With ``whittaker``,
    gaps of at most ``linear_below`` dates are filled linearly (a short gap between two
    observations is often better joined by a straight line than by the smoother's curve; the
    run's validation picks this from held-out data).
    """
    out = np.empty(values.shape, dtype=np.float32)
    for start in range(0, values.shape[0], chunk_pixels):
        sl = slice(start, start + chunk_pixels)
        v = values[sl]
        if method == "linear":
            filled = linear_fill(v, times_days)
        elif method == "whittaker":
            filled = np.where(np.isfinite(v), v, whittaker(v, times_days, lam=lam))
            if linear_below > 0:
                short = gap_lengths(v) <= linear_below
                filled = np.where(short, linear_fill(v, times_days), filled)
        else:
            raise ValueError(f"unknown gap-fill method {method!r}; use 'linear' or 'whittaker'")
        out[sl] = filled
    return out


def _fill_kernel(values: np.ndarray, *, times_days: np.ndarray, method: BaselineMethod,
                 lam: float, linear_below: int) -> np.ndarray:
    """``(..., T)`` series → gap-filled ``(..., T)``: :func:`fill_array` on row-major pixels."""
    return fill_array(values.reshape(-1, values.shape[-1]), times_days, method,
                      lam, linear_below=linear_below).reshape(values.shape)


def gapfill(cube: xr.Dataset, *, method: BaselineMethod = "linear", lam: float = 2.0,
            linear_below: int = 0) -> xr.Dataset:
    """Add ``ndvi_fused``: ``ndvi`` with gaps filled by a baseline method.

    On a dask-backed cube the result stays lazy (one task per spatial chunk, all time steps).

    Args:
        cube: Cube with ``ndvi`` (NaN where not observed).
        method: ``linear`` (interpolation in time) or ``whittaker`` (Whittaker fit through gaps).
        lam: Whittaker smoothing strength for ``method="whittaker"``.
        linear_below: With ``whittaker``, gaps of at most this many dates are filled linearly.

    Returns:
        The cube with ``ndvi_fused`` added.
    """
    if method not in ("linear", "whittaker"):  # before any (lazy) work
        raise ValueError(f"unknown gap-fill method {method!r}; use 'linear' or 'whittaker'")
    ndvi = cube[NDVI].transpose(*DIMS)
    if ndvi.chunks:  # a task holds whole series: chunked in space only
        ndvi = ndvi.chunk({TIME: -1})
    filled = xr.apply_ufunc(
        _fill_kernel, ndvi,
        input_core_dims=[[TIME]], output_core_dims=[[TIME]],
        kwargs={"times_days": to_days(cube[TIME].values), "method": method, "lam": lam,
                "linear_below": int(linear_below)},
        dask="parallelized", output_dtypes=[np.float32])
    out = cube.copy()
    out[NDVI_FUSED] = (DIMS, filled.transpose(*DIMS).data,
                       {**CF_ATTRS[NDVI_FUSED], "gapfill_method": method,
                        **({"linear_below": int(linear_below)}
                           if method == "whittaker" and linear_below else {})})
    return out
