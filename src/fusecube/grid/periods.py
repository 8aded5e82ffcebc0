"""Time axis helpers: compositing periods, days since epoch, agricultural years."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fusecube.errors import ConfigError, FusecubeError

EPOCH = np.datetime64("1970-01-01T00:00:00", "ns")
#: Sentinel-1A started delivering data in October 2014: nothing in a cube can be older.
SENTINEL_ERA_START = "2014-10-01"


def period_starts(start: str | np.datetime64, n_periods: int, period_days: int) -> np.ndarray:
    """Start dates of ``n_periods`` consecutive periods of ``period_days`` days."""
    first = np.datetime64(pd.Timestamp(start).normalize().to_datetime64(), "ns")
    return first + np.arange(n_periods) * np.timedelta64(period_days, "D")


def check_sentinel_era(dates, *, what: str, fix: str,
                       error: type[FusecubeError] = ConfigError) -> None:
    """Refuse dates before the Sentinel era (:data:`SENTINEL_ERA_START`): no S1/S2 data is older.

    A date in 1970 is almost always a zero (an epoch) read as a date; the message says so.

    Args:
        dates: Dates (anything ``numpy`` turns into datetime64; NaT is ignored).
        what: The input holding them (a file, a flag), named in the message.
        fix: What to do about it, appended to the message.
        error: The :class:`~fusecube.errors.FusecubeError` subclass to raise.

    Raises:
        FusecubeError: ``error``, naming ``what``, the earliest date and ``fix``.
    """
    values = np.asarray(dates, dtype="datetime64[ns]").ravel()
    early = values[~np.isnat(values) & (values < np.datetime64(SENTINEL_ERA_START, "ns"))]
    if early.size:
        first = np.datetime_as_string(early.min(), unit="D")
        epoch = " (a 1970 date is a zero read as a date)" if first.startswith("1970") else ""
        raise error(f"{what} has {early.size} date(s) before the Sentinel era (which starts "
                    f"{SENTINEL_ERA_START}), the earliest {first}{epoch}; {fix}")


def period_centres(start: str | np.datetime64, n_periods: int, period_days: int) -> np.ndarray:
    """Centre dates of the periods (the ``time`` coordinate of a cube)."""
    half = np.timedelta64(period_days * 12, "h")  # period_days / 2 in hours
    return period_starts(start, n_periods, period_days) + half


def to_days(times: np.ndarray) -> np.ndarray:
    """datetime64 → float days since 1970-01-01 (NaT → NaN)."""
    t = np.asarray(times).astype("datetime64[ns]")
    days = (t - EPOCH) / np.timedelta64(1, "D")
    return np.where(np.isnat(t), np.nan, days)


def from_days(days: np.ndarray) -> np.ndarray:
    """Float days since 1970-01-01 → datetime64[ns] (NaN → NaT)."""
    d = np.asarray(days, dtype=np.float64)
    ns = np.where(np.isfinite(d), np.round(d * 86400.0) * 1e9, 0).astype("int64")
    out = EPOCH + ns.astype("timedelta64[ns]")
    return np.where(np.isfinite(d), out, np.datetime64("NaT"))


def day_of_year(days: np.ndarray) -> np.ndarray:
    """Float day of year (1 = 1 January) of float days since epoch; NaN stays NaN."""
    d = np.asarray(days, dtype=np.float64)
    dates = from_days(d)
    years = dates.astype("datetime64[Y]")
    jan1 = to_days(years.astype("datetime64[ns]"))
    return np.where(np.isfinite(d), d - jan1 + 1.0, np.nan)


def agricultural_years(times: np.ndarray, start_month: int, min_cover: float = 0.5) -> list[int]:
    """Agricultural years (labelled by the calendar year they start in) covered by ``times``.

    A year is kept when the series spans at least ``min_cover`` of it, so a few trailing
    weeks do not create a year with no seasons.
    """
    ts = pd.DatetimeIndex(np.asarray(times))
    t0, t1 = ts.min(), ts.max()
    first = t0.year - (1 if t0.month < start_month else 0)
    last = t1.year - (1 if t1.month < start_month else 0)
    years = []
    for year in range(first, last + 1):
        begin = pd.Timestamp(year=year, month=start_month, day=1)
        end = begin + pd.DateOffset(years=1)
        overlap = (min(end, t1) - max(begin, t0)) / (end - begin)
        if overlap >= min_cover:
            years.append(year)
    return years or [first]


def agricultural_year_index(days: np.ndarray, first_year: int, start_month: int) -> np.ndarray:
    """Index (0 = ``first_year``) of the agricultural year holding each float day; NaN → -1."""
    d = np.asarray(days, dtype=np.float64)
    dates = from_days(d)
    valid = np.isfinite(d)
    safe = np.where(valid, dates, np.datetime64("2000-01-01", "ns"))
    year = safe.astype("datetime64[Y]").astype(int) + 1970
    month = safe.astype("datetime64[M]").astype(int) % 12 + 1
    agri = year - (month < start_month)
    return np.where(valid, agri - first_year, -1)


def year_label(year: int, start_month: int) -> str:
    """Label of an agricultural year, e.g. ``2023/24`` (or ``2024`` for calendar years)."""
    return str(year) if start_month == 1 else f"{year}/{(year + 1) % 100:02d}"


def year_start(year: int, start_month: int) -> np.datetime64:
    """First day of agricultural year ``year`` (e.g. 2023-11-01): the reference of season days."""
    return np.datetime64(f"{year:04d}-{start_month:02d}-01", "D")


def season_name(number: int) -> str:
    """Name of season slot ``number`` (1-based) within its year: ``season1``.

    The one naming of season slots (files, labels, tables, API): never ``S1``, which reads as
    Sentinel-1.
    """
    return f"season{int(number)}"


def season_label(year: int, number: int, start_month: int, *, for_file: bool = False) -> str:
    """Label of a season slot: ``2023/24 season1``, or ``2023-24_season1`` for file names."""
    years = year_label(year, start_month)
    if for_file:
        return f"{years.replace('/', '-')}_{season_name(number)}"
    return f"{years} {season_name(number)}"


def cloudy_season(times: np.ndarray, observed_share: np.ndarray) -> np.ndarray:
    """``(T,)`` bool: dates in the scene's cloudy months, derived from the data, not a calendar.

    A month is cloudy when its mean share of observed (clear) NDVI is below the median over
    the months present; in the tropics that is the wet season (Demak: November to March),
    elsewhere whatever season clouds the optical record. The wet/dry groups of accuracy and
    validation tables follow this instead of a fixed list of months.

    Args:
        times: ``(T,)`` dates.
        observed_share: ``(T,)`` share of pixels with an NDVI observation at each date.
    """
    months = pd.DatetimeIndex(np.asarray(times)).month.to_numpy()
    share = np.asarray(observed_share, np.float64)
    present = np.unique(months)
    per_month = np.array([np.nanmean(share[months == m]) for m in present])
    cloudy = present[per_month < np.nanmedian(per_month)]
    return np.isin(months, cloudy)
