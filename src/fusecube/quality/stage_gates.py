"""Stage gates: run on each block after gap-fill, smoothing and phenology."""

from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from fusecube.cube import (
    NDVI_FUSED,
    NDVI_SMOOTH,
    PADDY_MASK,
    TIME,
    X,
    Y,
)
from fusecube.kernels.seasons import DATE_METRICS
from fusecube.quality.results import (
    _SEVERITY,
    VALUE_METRICS,
    GateResult,
    GateStatus,
    GateThresholds,
    PeriodScreen,
    Stage,
)

log = logging.getLogger(__name__)



def _pixel_text(da: xr.DataArray, bad: np.ndarray) -> str:
    """Where the first bad value is, in grid coordinates."""
    idx = np.argwhere(bad)
    if not idx.size:
        return ""
    first = dict(zip(da.dims, idx[0], strict=True))
    parts = []
    for dim, i in first.items():
        if dim in da.coords:
            v = da[dim].values[i]
            v = np.datetime_as_string(v, unit="D") if np.issubdtype(np.asarray(v).dtype,
                                                                    np.datetime64) else f"{v:g}"
            parts.append(f"{dim}={v}")
        else:
            parts.append(f"{dim}={i}")
    return " (first at " + ", ".join(parts) + ")"


def _range_gate(ds: xr.Dataset, name: str, stage: Stage, low: float, high: float,
                ) -> tuple[xr.Dataset, GateResult]:
    if name not in ds:
        return ds, GateResult(f"{name}_range", stage, "skip", message=f"no {name} after {stage}.")
    values = ds[name].values
    bad = np.isfinite(values) & ((values < low) | (values > high))
    n_bad = int(bad.sum())
    if not n_bad:
        return ds, GateResult(f"{name}_range", stage, "pass", value=0.0, threshold=0.0,
                              message=f"{name} inside [{low:g}, {high:g}].")
    out = ds.copy()
    out[name] = ds[name].where(~bad)
    return out, GateResult(
        f"{name}_range", stage, "fail", value=float(n_bad), threshold=0.0, pixels=n_bad,
        message=f"{n_bad} {name} values after {stage} lie outside [{low:g}, {high:g}]"
                f"{_pixel_text(ds[name], bad)}.",
        fix=f"lower the smoothing/fit extrapolation or check the {stage} inputs; values outside "
            "the NDVI range are not physical.",
        action="set to NaN")


def _complete_gate(ds: xr.Dataset, name: str, stage: Stage,
                   thresholds: GateThresholds) -> GateResult:
    """Pixels (paddy only when a mask is present) whose series still has gaps after a stage."""
    if name not in ds:
        return GateResult(f"{name}_complete", stage, "skip", message=f"no {name} after {stage}.")
    gaps = np.isnan(ds[name].transpose(TIME, Y, X).values).any(axis=0)
    where = "pixels"
    if PADDY_MASK in ds:
        inside = np.asarray(ds[PADDY_MASK].values) > 0
        gaps &= inside
        n_pixels, where = int(inside.sum()), "paddy pixels"
    else:
        n_pixels = gaps.size
    n_gaps = int(gaps.sum())
    share = n_gaps / max(n_pixels, 1)
    if not n_gaps:
        return GateResult(f"{name}_complete", stage, "pass", value=0.0,
                          threshold=thresholds.max_unfilled_fraction,
                          message=f"every series of {name} is complete after {stage}.")
    first = _pixel_text(ds[name].isel({TIME: 0}), gaps)
    status: GateStatus = "fail" if share > thresholds.max_unfilled_fraction else "warn"
    return GateResult(
        f"{name}_complete", stage, status, value=share,
        threshold=thresholds.max_unfilled_fraction, pixels=n_gaps,
        message=f"{n_gaps} {where} ({100 * share:.2f} %) still have missing {name} after "
                f"{stage}{first}; they get no phenology.",
        fix="these pixels have (almost) no NDVI observation: check the cloud masking, or use "
            "gapfill=fusion, which fills from S1.",
        action="reported: no seasons for those pixels")


def _season_gates(seasons: xr.Dataset, times: np.ndarray, thresholds: GateThresholds,
                  period_days: float) -> tuple[xr.Dataset, list[GateResult]]:
    """Season lengths plausible, dates ordered and inside the series, NDVI values in range."""
    results = []
    if "length" not in seasons:
        return seasons, [GateResult("season_length", "phenology", "skip",
                                    message="no season metrics.")]
    present = np.isfinite(seasons["length"].values)
    length = seasons["length"].values
    short = present & ((length <= 0) | (length < thresholds.min_season_days)
                       | (length > thresholds.max_season_days))
    checks = [("season_length", short,
               f"season length outside ({thresholds.min_season_days:g}, "
               f"{thresholds.max_season_days:g}) days or not positive",
               "check the phenology min_length/max_length and the smoothing (lambda).")]
    half = np.timedelta64(int(period_days * 12), "h")
    lo, hi = times.min() - half, times.max() + half
    outside = np.zeros_like(present)
    for name in DATE_METRICS:
        if name in seasons:
            d = seasons[name].values.astype("datetime64[ns]")
            outside |= ~np.isnat(d) & ((d < lo) | (d > hi))
    checks.append(("season_dates_in_series", outside,
                   f"season dates outside the series {np.datetime_as_string(lo, unit='D')}.."
                   f"{np.datetime_as_string(hi, unit='D')}",
                   "check the time axis (shifted years) and the phenology stage."))
    disorder = np.zeros_like(present)
    if all(n in seasons for n in ("sos", "pos", "eos")):
        sos, pos, eos = (seasons[n].values.astype("datetime64[ns]") for n in ("sos", "pos", "eos"))
        known = ~np.isnat(sos) & ~np.isnat(pos) & ~np.isnat(eos)
        disorder = known & ~((sos <= pos) & (pos <= eos))
    checks.append(("season_dates_ordered", disorder, "seasons whose SOS <= POS <= EOS is broken",
                   "check the season detection rules (sos/eos fractions)."))
    bad_value = np.zeros_like(present)
    for name in VALUE_METRICS:
        if name in seasons:
            v = seasons[name].values
            bad_value |= np.isfinite(v) & ((v < thresholds.ndvi_range[0])
                                           | (v > thresholds.ndvi_range[1]))
    checks.append(("season_ndvi_range", bad_value, "seasons with base/peak NDVI outside [-1, 1]",
                   "check the smoothing stage: NDVI outside [-1, 1] is not physical."))
    drop = np.zeros_like(present)
    da = seasons["length"]
    for gate, bad, what, fix in checks:
        n_bad = int(bad.sum())
        if n_bad:
            results.append(GateResult(
                gate, "phenology", "fail", value=float(n_bad), threshold=0.0, pixels=n_bad,
                message=f"{n_bad} {what}{_pixel_text(da, bad)}.", fix=fix,
                action="those seasons removed and season_count lowered"))
            drop |= bad
        else:
            results.append(GateResult(gate, "phenology", "pass", value=0.0, threshold=0.0,
                                      message=f"no {what}."))
    if not drop.any():
        return seasons, results
    out = seasons.copy()
    keep = xr.DataArray(~drop, dims=da.dims, coords={d: da[d] for d in da.dims if d in da.coords})
    for name, var in seasons.data_vars.items():
        if var.dims == da.dims:
            out[name] = var.where(keep)
    if "season_count" in seasons and "season_year" in seasons.coords:
        removed = xr.DataArray(drop.astype(np.float32), dims=da.dims,
                               coords={"season_year": seasons["season_year"]})
        per_year = removed.groupby("season_year").sum().rename(season_year="year")
        count = seasons["season_count"]
        per_year = per_year.reindex(year=count["year"].values, fill_value=0)
        out["season_count"] = (count - per_year.transpose(*count.dims).values).clip(min=0)
        out["season_count"].attrs = count.attrs
    return out, results


def stage_gates(stage: Stage, ds: xr.Dataset, *, thresholds: GateThresholds = GateThresholds(),
                strict: bool = False, screen: PeriodScreen | None = None,
                times: np.ndarray | None = None,
                period_days: float | None = None) -> tuple[xr.Dataset, list[GateResult]]:
    """Gates after a stage on one in-memory block; masks what fails unless ``strict``.

    Args:
        stage: ``gapfill`` (checks ``ndvi_fused``), ``smooth`` (``ndvi_smooth``) or
            ``phenology`` (the seasons dataset).
        ds: The stage output.
        thresholds: Gate thresholds.
        strict: Raise :class:`GateFailed` at the first failing gate.
        screen: Where to add the counts of masked values (``screen.stage_counts``).
        times: The series times (phenology: the dates must lie inside them).
        period_days: Period length (phenology: the series extends half a period each side).

    Returns:
        ``(dataset with failures masked, results)``.
    """
    low, high = thresholds.ndvi_range
    if stage == "gapfill":
        ds, result = _range_gate(ds, NDVI_FUSED, stage, low, high)
        results = [result, _complete_gate(ds, NDVI_FUSED, stage, thresholds)]
    elif stage == "smooth":
        ds, result = _range_gate(ds, NDVI_SMOOTH, stage, low, high)
        results = [result]
    elif stage == "phenology":
        if times is None:
            raise ValueError("stage_gates('phenology', ...) needs the series times")
        ds, results = _season_gates(ds, np.asarray(times), thresholds, period_days or 0.0)
    else:
        raise ValueError(f"unknown stage {stage!r}; use gapfill, smooth or phenology")
    for result in results:
        if result.status == "fail":
            if strict:
                raise result.error()
            log.warning("gate %s failed: %s", result.gate, result.message)
        if screen is not None and result.status != "skip":
            key = f"{stage}:{result.gate}"  # every gate that ran, so passes are reported too
            screen.stage_counts[key] = screen.stage_counts.get(key, 0) + result.pixels
            worst = screen.stage_status.get(key, "pass")
            if _SEVERITY[result.status] > _SEVERITY[worst]:
                worst = result.status
            screen.stage_status[key] = worst
    return ds, results


