"""Baseline gap-fill methods: linear interpolation in time and Whittaker-only."""

from __future__ import annotations

from typing import Literal

import numpy as np
import xarray as xr

from fusecube.cube import CF_ATTRS, DIMS, NDVI, NDVI_FUSED, TIME
from fusecube.kernels.whittaker import linear_fill, whittaker
from fusecube.grid.periods import to_days

BaselineMethod = Literal["linear", "whittaker"]


def fill_array(values: np.ndarray, times_days: np.ndarray, method: BaselineMethod,
               lam: float = 2.0, chunk_pixels: int = 32768) -> np.ndarray:
    """Gap-fill ``(N, T)`` series with a baseline method; returns float32 ``(N, T)``.

    Observed values are kept as they are; only NaN positions are filled.
    """
    out = np.empty(values.shape, dtype=np.float32)
    for start in range(0, values.shape[0], chunk_pixels):
        sl = slice(start, start + chunk_pixels)
        v = values[sl]
        if method == "linear":
            filled = linear_fill(v, times_days)
        elif method == "whittaker":
            filled = np.where(np.isfinite(v), v, whittaker(v, times_days, lam=lam))
        else:
            raise ValueError(f"unknown gap-fill method {method!r}; use 'linear' or 'whittaker'")
        out[sl] = filled
    return out


def gapfill(cube: xr.Dataset, *, method: BaselineMethod = "linear", lam: float = 2.0) -> xr.Dataset:
    """Add ``ndvi_fused``: ``ndvi`` with gaps filled by a baseline method.

    Args:
        cube: Cube with ``ndvi`` (NaN where not observed).
        method: ``linear`` (interpolation in time) or ``whittaker`` (Whittaker fit through gaps).
        lam: Whittaker smoothing strength for ``method="whittaker"``.

    Returns:
        The cube with ``ndvi_fused`` added.
    """
    values = cube[NDVI].transpose(*DIMS).values
    t, ny, nx = values.shape
    filled = fill_array(values.reshape(t, -1).T, to_days(cube[TIME].values), method, lam)
    out = cube.copy()
    out[NDVI_FUSED] = (DIMS, filled.T.reshape(t, ny, nx),
                       {**CF_ATTRS[NDVI_FUSED], "gapfill_method": method})
    return out
