"""Temporal compositing of per-acquisition rasters into N-day periods (pure numpy)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fusecube.errors import ConfigError
from fusecube.grid.periods import check_sentinel_era, period_starts


def periods_between(start: str, end: str, period_days: int) -> np.ndarray:
    """Start dates of the ``period_days`` periods from ``start`` covering ``end`` (inclusive).

    Args:
        start: First day of the first period (ISO date).
        end: Last day to cover (ISO date).
        period_days: Period length in days.

    Returns:
        datetime64[ns] period starts.
    """
    first, last = pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize()
    if last < first:
        raise ConfigError(f"end {end} is before start {start}; swap them.")
    check_sentinel_era([first.to_datetime64(), last.to_datetime64()], what=f"start {start}/end {end}",
                       fix="give --start/--end (start/end) as YYYY-MM-DD dates inside the Sentinel era.")
    if period_days < 1:
        raise ConfigError(f"period length {period_days} days must be at least 1.")
    n_periods = (last - first).days // period_days + 1
    return period_starts(first, n_periods, period_days)


def period_index(times: Sequence, starts: np.ndarray, period_days: int) -> np.ndarray:
    """Index of the period holding each time (-1 when outside all periods)."""
    t = np.array([to_naive_utc(v) for v in times], dtype="datetime64[ns]")
    offset = (t - starts[0]) // np.timedelta64(period_days, "D")
    offset = offset.astype(np.int64)
    return np.where((t >= starts[0]) & (offset < len(starts)), offset, -1)


def to_naive_utc(value) -> np.datetime64:
    """A datetime, string or datetime64 as naive UTC datetime64[ns] (naive input = UTC)."""
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_datetime64().astype("datetime64[ns]")


def median_composite(stack: np.ndarray) -> np.ndarray:
    """Median over axis 0 of the finite values; NaN where a pixel has none.

    Args:
        stack: ``(n_obs, y, x)`` float array, NaN where not observed.

    Returns:
        ``(y, x)`` float32 composite.
    """
    if stack.shape[0] == 0:
        return np.full(stack.shape[1:], np.nan, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels → NaN, as wanted
        return np.nanmedian(stack, axis=0).astype(np.float32)


def valid_fraction(valid: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Share of observed acquisitions that were valid, per pixel (0 where never observed).

    Args:
        valid: ``(n_obs, y, x)`` bool, clear observation.
        observed: ``(n_obs, y, x)`` bool, the pixel had data (cloudy or not).

    Returns:
        ``(y, x)`` float32 in 0..1.
    """
    if valid.shape[0] == 0:
        return np.zeros(valid.shape[1:], np.float32)
    n_obs = observed.sum(axis=0)
    return np.where(n_obs > 0, valid.sum(axis=0) / np.maximum(n_obs, 1), 0).astype(np.float32)
