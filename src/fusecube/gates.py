"""Quality gates: screens that run before and after stages and report what they found."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from fusecube.cube import DIMS, NDVI, TIME

log = logging.getLogger(__name__)


@dataclass
class PeriodScreen:
    """Per-period findings of :func:`screen_periods`."""

    valid_fraction: list[float] = field(default_factory=list)
    """Share of pixels with an NDVI observation, per period."""
    zero_periods: list[int] = field(default_factory=list)
    """Periods whose observed NDVI is all exactly 0 (a broken composite): treated as missing."""
    empty_periods: list[int] = field(default_factory=list)
    """Periods with no NDVI observation at all (fully clouded)."""


def period_stats(ndvi: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """Per period: fraction of valid values and whether all valid values are exactly 0."""
    valid = np.isfinite(ndvi)
    frac = valid.mean(dim=[d for d in ndvi.dims if d != TIME])
    nonzero = (valid & (ndvi != 0)).sum(dim=[d for d in ndvi.dims if d != TIME])
    n_valid = valid.sum(dim=[d for d in ndvi.dims if d != TIME])
    all_zero = (n_valid > 0) & (nonzero == 0)
    return np.asarray(frac.values), np.asarray(all_zero.values)


def screen_periods(cube: xr.Dataset) -> PeriodScreen:
    """Find all-zero and empty NDVI periods of a (possibly lazy) cube."""
    frac, all_zero = period_stats(cube[NDVI].transpose(*DIMS))
    screen = PeriodScreen(
        valid_fraction=[float(f) for f in frac],
        zero_periods=[int(i) for i in np.flatnonzero(all_zero)],
        empty_periods=[int(i) for i in np.flatnonzero(frac == 0)],
    )
    for i in screen.zero_periods:
        log.warning("NDVI period %d (%s) is all zeros: treated as missing",
                    i, np.datetime_as_string(cube[TIME].values[i], unit="D"))
    return screen


def apply_screen(cube: xr.Dataset, screen: PeriodScreen) -> xr.Dataset:
    """Set the NDVI of screened-out periods to NaN."""
    if not screen.zero_periods:
        return cube
    bad = np.zeros(cube.sizes[TIME], bool)
    bad[screen.zero_periods] = True
    out = cube.copy()
    out[NDVI] = cube[NDVI].where(~xr.DataArray(bad, dims=TIME))
    return out
