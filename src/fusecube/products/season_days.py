"""Season dates a GIS can average: days since the start of each season's agricultural year.

Day of year (``sos_doy``) restarts on 1 January, so a season planted around New Year mixes
values near 360 with values near 5 and their mean is meaningless. ``sos_days`` counts from the
first day of the season's agricultural year (``season_start``, e.g. 2023-11-01 for 2023/24),
which no season of that year crosses.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from fusecube.cube import SEASON
from fusecube.grid.periods import year_start
from fusecube.kernels.seasons import DATE_METRICS
from fusecube.stages.phenology import SEASON_ATTRS

SEASON_START = "season_start"
#: How day-of-year layers count, for their attributes and COG tags.
DOY_REFERENCE = ("1 January of each date's own calendar year: a season crossing 1 January mixes "
                 "values near 365 and near 1; average the *_days layers instead")


def days_name(metric: str) -> str:
    """Name of the days-since-year-start layer of a date metric: ``sos`` → ``sos_days``."""
    return f"{metric}_days"


def season_starts(season_years: np.ndarray, start_month: int) -> np.ndarray:
    """First day of the agricultural year of each season slot (datetime64[ns])."""
    return np.array([year_start(int(y), start_month) for y in season_years], dtype="datetime64[ns]")


def with_season_days(ds: xr.Dataset, start_month: int) -> xr.Dataset:
    """``ds`` with a ``season_start`` coordinate and ``<metric>_days`` beside every date metric.

    Args:
        ds: Phenology outputs with datetime metrics on ``season`` and a ``season_year`` coordinate.
        start_month: First month of the agricultural year.

    Returns:
        The dataset with float32 ``<metric>_days`` (NaN where the date is NaT), each naming
        its reference in ``reference_date`` (the ``season_start`` coordinate).
    """
    if "season_year" not in ds.coords:
        return ds
    ds = ds.assign_coords({SEASON_START: (SEASON, season_starts(ds["season_year"].values, start_month),
                                          {"long_name": "first day of the season's agricultural year "
                                                        "(the reference of the *_days layers)"})})
    for metric in DATE_METRICS:
        if metric not in ds or not np.issubdtype(ds[metric].dtype, np.datetime64):
            continue
        days = (ds[metric] - ds[SEASON_START]) / np.timedelta64(1, "D")
        ds[days_name(metric)] = days.astype(np.float32).assign_attrs(
            long_name=f"{SEASON_ATTRS[metric]}, days since the start of the agricultural year",
            units="day", reference_date=SEASON_START,
            comment="0 = the first day of the season's agricultural year (coordinate season_start); "
                    "unlike day of year it never wraps within a season, so it can be averaged")
    for name in [n for n in ds.data_vars if str(n).endswith("_doy")]:
        ds[name] = ds[name].assign_attrs({"comment": f"day of year counts from {DOY_REFERENCE}",
                                          **ds[name].attrs})
    return ds
