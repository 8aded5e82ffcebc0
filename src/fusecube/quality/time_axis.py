"""Time-axis gates: monotonic, regular, consistent with the periods, inside the expected years."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import xarray as xr

from fusecube.cube import (
    TIME,
)
from fusecube.errors import CubeSchemaError
from fusecube.quality.results import SENTINEL_ERA_START, GateResult, GateThresholds


# ----------------------------------------------------------------------------- helpers
def _dates(times: np.ndarray, index: Iterable[int]) -> str:
    idx = list(index)
    text = ", ".join(f"{i} ({np.datetime_as_string(times[i], unit='D')})" for i in idx[:5])
    return text + (f" and {len(idx) - 5} more" if len(idx) > 5 else "")


def _runs(flags: np.ndarray) -> tuple[int, int]:
    """Longest run of True in a 1-D bool array: ``(length, start)``."""
    if not flags.any():
        return 0, -1
    padded = np.concatenate([[0], flags.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    starts, ends = edges[::2], edges[1::2]
    k = int(np.argmax(ends - starts))
    return int(ends[k] - starts[k]), int(starts[k])


def period_days_of(cube: xr.Dataset) -> float | None:
    """Nominal period length: ``attrs['period_days']`` or the median time step (days)."""
    if "period_days" in cube.attrs:
        return float(cube.attrs["period_days"])
    times = cube[TIME].values
    if times.size < 2:
        return None
    return float(np.median(np.diff(times) / np.timedelta64(1, "D")))


def _expected_window(cube: xr.Dataset,
                     thresholds: GateThresholds) -> tuple[np.datetime64, np.datetime64, str]:
    if thresholds.expected_years is not None:
        first, last = thresholds.expected_years
        return (np.datetime64(f"{first}-01-01", "ns"), np.datetime64(f"{last + 1}-01-01", "ns"),
                f"the expected years {first}-{last}")
    start, end = cube.attrs.get("time_coverage_start"), cube.attrs.get("time_coverage_end")
    if start and end:
        return (np.datetime64(pd.Timestamp(start).tz_localize(None), "ns"),
                np.datetime64(pd.Timestamp(end).tz_localize(None), "ns"),
                f"the cube's time_coverage {start}..{end}")
    today = np.datetime64(pd.Timestamp.now("UTC").tz_localize(None).normalize(), "ns")
    return (np.datetime64(SENTINEL_ERA_START, "ns"), today + np.timedelta64(1, "D"),
            f"the Sentinel era ({SENTINEL_ERA_START} to today)")


# ----------------------------------------------------------------------------- time gates
def time_gates(cube: xr.Dataset, thresholds: GateThresholds = GateThresholds()) -> list[GateResult]:
    """Gates on the time axis alone (no pixel is read): monotonic, regular, periods, years."""
    times = np.asarray(cube[TIME].values)
    out: list[GateResult] = []
    if not np.issubdtype(times.dtype, np.datetime64):
        raise CubeSchemaError(f"Cube time coordinate has dtype {times.dtype}, not datetime64; "
                              "assign the period centres as datetime64.")
    step = np.diff(times) / np.timedelta64(1, "D")
    bad = np.flatnonzero(~(step > 0))
    if bad.size:
        out.append(GateResult(
            "time_monotonic", "input", "fail", value=float(bad.size), threshold=0.0,
            periods=[int(i) + 1 for i in bad],
            message=f"time is not strictly increasing at period(s) "
                    f"{_dates(times, [int(i) + 1 for i in bad])} (after "
                    f"{np.datetime_as_string(times[bad[0]], unit='D')}).",
            fix="sort the cube with ds.sortby('time') and drop duplicated dates; check the "
                "dates in the input file names.",
            action="none: the time axis cannot be repaired automatically"))
    else:
        out.append(GateResult("time_monotonic", "input", "pass", value=0.0, threshold=0.0,
                              message=f"{times.size} periods, strictly increasing."))
    period = period_days_of(cube)
    if period is not None and step.size:
        off = np.flatnonzero(np.abs(step - period) > thresholds.regular_tolerance_days)
        worst = float(np.max(np.abs(step - period))) if step.size else 0.0
        if off.size:
            out.append(GateResult(
                "time_regular", "input", "fail", value=worst,
                threshold=thresholds.regular_tolerance_days, periods=[int(i) + 1 for i in off],
                message=f"time steps differ from the {period:g}-day period by up to {worst:.1f} "
                        f"days at period(s) {_dates(times, [int(i) + 1 for i in off])}.",
                fix="composite the series to regular periods (missing periods as all-NaN "
                    "layers, not skipped).",
                action="reported: gap-filling uses the actual dates"))
        else:
            out.append(GateResult("time_regular", "input", "pass", value=worst,
                                  threshold=thresholds.regular_tolerance_days,
                                  message=f"every step is {period:g} ± "
                                          f"{thresholds.regular_tolerance_days:g} days."))
    if "period_start" in cube.coords and period is not None:
        starts = np.asarray(cube["period_start"].values)
        offset = (times - starts) / np.timedelta64(1, "D")
        outside = np.flatnonzero((offset < 0) | (offset > period))
        if outside.size:
            out.append(GateResult(
                "time_in_periods", "input", "fail", value=float(np.max(np.abs(offset))),
                threshold=period, periods=[int(i) for i in outside],
                message=f"the time of period(s) {_dates(times, outside)} lies outside its "
                        f"compositing period (time - period_start = {offset[outside[0]]:.0f} "
                        "days): the time axis looks shifted.",
                fix="recompute time as the period centre (period_start + period_days / 2).",
                action="none: dates of seasons would be shifted"))
        else:
            out.append(GateResult("time_in_periods", "input", "pass", value=0.0, threshold=period,
                                  message="every time lies inside its compositing period."))
    lo, hi, what = _expected_window(cube, thresholds)
    outside = np.flatnonzero((times < lo) | (times >= hi))
    if outside.size:
        years = pd.DatetimeIndex(times).year
        out.append(GateResult(
            "time_expected_years", "input", "fail", value=float(outside.size), threshold=0.0,
            periods=[int(i) for i in outside],
            message=f"{outside.size} of {times.size} periods lie outside {what}: "
                    f"{_dates(times, outside)} (series spans {years.min()}-{years.max()}).",
            fix="check the year in the input dates (a shifted or 2-digit year, a wrong epoch) "
                "or pass the right --years.",
            action="none: dates of seasons would be wrong"))
    else:
        out.append(GateResult("time_expected_years", "input", "pass", value=0.0, threshold=0.0,
                              message=f"all periods inside {what}."))
    return out


