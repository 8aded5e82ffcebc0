"""Input gates: run once on the whole cube before any stage; :func:`apply_screen` masks what they found."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import xarray as xr

from fusecube.cube import (
    DIMS,
    NDVI,
    PADDY_MASK,
    SENTINEL_VALUES,
    TIME,
    VH,
    VV,
    X,
    Y,
)
from fusecube.errors import CubeSchemaError, InputFileError
from fusecube.quality.alignment import alignment_gate, coverage_gate
from fusecube.quality.results import GateResult, GateStatus, GateThresholds, MaskArg, PeriodScreen
from fusecube.quality.scales import backscatter_problem, ndvi_problem
from fusecube.quality.stats import variable_stats
from fusecube.quality.time_axis import _dates, _runs, period_days_of, time_gates
from fusecube.storage.chunks import raise_if_bad_chunk

log = logging.getLogger(__name__)



# ----------------------------------------------------------------------------- input gates
def _ranges(thresholds: GateThresholds) -> dict[str, tuple[float, float]]:
    return {NDVI: thresholds.ndvi_range, VV: thresholds.backscatter_range,
            VH: thresholds.backscatter_range}


def _check_structure(cube: xr.Dataset) -> None:
    """Variables, dims and CRS the gates need; raise :class:`CubeSchemaError` otherwise."""
    missing = [v for v in (VV, VH, NDVI) if v not in cube.data_vars]
    if missing:
        raise CubeSchemaError(f"Cube is missing variable(s) {missing}; it has "
                              f"{sorted(cube.data_vars)}. Rename the bands to vv, vh, ndvi.")
    for name in (VV, VH, NDVI):
        if set(cube[name].dims) != set(DIMS):
            raise CubeSchemaError(f"Variable {name!r} has dims {cube[name].dims}; fusecube "
                                  f"expects {DIMS}.")
    try:
        geobox = cube.odc.geobox
    except Exception as exc:  # odc raises various errors for odd coordinates
        raise CubeSchemaError(f"Cube grid cannot be read as a GeoBox ({exc}); it needs regular "
                              "y/x coordinates and a CRS.") from exc
    if geobox is None or geobox.crs is None:
        raise CubeSchemaError("Cube has no CRS, so masks and S1/S2 grids cannot be matched; "
                              "attach one with ds.odc.assign_crs('EPSG:32749') (or the CRS of "
                              "your data) and write the cube again.")


def _read_stats(cube: xr.Dataset, ranges: dict[str, tuple[float, float]],
                thresholds: GateThresholds) -> dict[str, dict]:
    """The one pass over the pixels: :func:`variable_stats` plus the alignment window."""
    ny, nx = cube.sizes[Y], cube.sizes[X]
    edge = thresholds.alignment_window
    window = {Y: slice(max((ny - edge) // 2, 0), max((ny - edge) // 2, 0) + edge),
              X: slice(max((nx - edge) // 2, 0), max((nx - edge) // 2, 0) + edge)}
    try:
        stats = variable_stats(
            {name: (cube[name], *ranges[name], name == NDVI) for name in ranges},
            extra={f"{name}_window": cube[name].transpose(*DIMS).isel(window)
                   for name in (NDVI, VV, VH)})
    except Exception as exc:  # zarr/codec errors of a truncated or corrupt store
        source = cube.attrs.get("fusecube_source") or cube.encoding.get("source") or "the cube"
        raise_if_bad_chunk(cube.encoding.get("source"), exc)  # names the variable and chunk
        raise InputFileError(
            f"Pixels of {source} cannot be decoded ({type(exc).__name__}: {exc}); a chunk is "
            "truncated or corrupt: write the cube again."
        ) from exc
    return stats


def _value_gates(stats: dict, ranges: dict[str, tuple[float, float]], screen: PeriodScreen,
                 add: Callable[[GateResult], None]) -> None:
    """Infinite values, nodata sentinels and values out of range (set to NaN by apply_screen)."""
    # non-finite values and sentinels
    for name in (NDVI, VV, VH):
        s = stats[name]
        n_bad = int(s["n_inf"]) + int(s["n_sentinel"])
        if n_bad:
            add(GateResult(
                f"{name}_finite", "input", "fail", value=float(n_bad), threshold=0.0, pixels=n_bad,
                message=f"{name} has {int(s['n_inf'])} infinite values and {int(s['n_sentinel'])} "
                        f"nodata sentinels (e.g. -9999).",
                fix="mask nodata to NaN when reading (rioxarray masked=True, "
                    "ds.where(np.isfinite(ds))).",
                action="set to NaN"))
        else:
            add(GateResult(f"{name}_finite", "input", "pass", value=0.0, threshold=0.0,
                           message=f"{name}: no infinite values or nodata sentinels."))
    # value ranges; a wrong unit or scale (most values out) fails in every mode: masking
    # would delete the band (quality/scales.py)
    for name in (NDVI, VV, VH):
        s = stats[name]
        low, high = ranges[name]
        n_out = int(s["n_out"])
        screen.masked_values[name] = n_out + int(s["n_inf"]) + int(s["n_sentinel"])
        problem = (ndvi_problem(n_out, int(s["n_usable"])) if name == NDVI else
                   backscatter_problem(name, stats["extra"][f"{name}_window"], int(s["n_negative"]),
                                       int(s["n_usable"])))
        if problem is not None:
            result = GateResult(f"{name}_range", "input", "fail",
                                value=float(n_out) / max(int(s["n_usable"]), 1), threshold=0.0,
                                pixels=n_out, message=problem[0], fix=problem[1], action="refused")
            add(result)
            raise result.error()
        if n_out:
            hint = ""
            if name in (VV, VH) and int(s["n_negative"]) > 0.5 * max(int(s["n_usable"]), 1):
                hint = " Most values are negative: this looks like dB, fusecube expects linear."
            add(GateResult(
                f"{name}_range", "input", "fail", value=float(n_out) / max(int(s["n_usable"]), 1),
                threshold=0.0, pixels=n_out,
                message=f"{n_out} {name} values ({100 * n_out / max(int(s['n_usable']), 1):.2f} "
                        f"%) lie outside [{low:g}, {high:g}].{hint}",
                fix=("convert dB to linear with 10 ** (db / 10)" if hint else
                     f"check the scale/offset of {name} (e.g. NDVI stored x10000)."),
                action="set to NaN"))
        else:
            add(GateResult(f"{name}_range", "input", "pass", value=0.0, threshold=0.0,
                           message=f"all {name} values inside [{low:g}, {high:g}]."))


def _period_gates(stats: dict, times: np.ndarray, screen: PeriodScreen,
                  add: Callable[[GateResult], None]) -> None:
    """All-zero and constant periods (treated as missing by apply_screen)."""
    # constant and all-zero periods (a broken composite): treated as missing
    for name in (NDVI, VV, VH):
        s = stats[name]
        observed = s["n_valid"] > 1
        constant = observed & (s["vmin"] == s["vmax"])
        idx = [int(i) for i in np.flatnonzero(constant)]
        if name == NDVI:
            screen.zero_periods = [i for i in idx if s["vmin"][i] == 0]
            idx = [i for i in idx if i not in screen.zero_periods]
            if screen.zero_periods:
                add(GateResult(
                    "ndvi_zero_periods", "input", "fail", value=float(len(screen.zero_periods)),
                    threshold=0.0, periods=screen.zero_periods,
                    pixels=int(s["n_valid"][screen.zero_periods].sum()),
                    message=f"NDVI period(s) {_dates(times, screen.zero_periods)} are all exactly "
                            "0 (a broken composite, not bare soil).",
                    fix="re-export those periods with NaN for unobserved pixels instead of 0.",
                    action="treated as missing (NaN) and gap-filled"))
            else:
                add(GateResult("ndvi_zero_periods", "input", "pass", value=0.0, threshold=0.0,
                               message="no all-zero NDVI period."))
        if idx:
            screen.constant_periods[name] = idx
        gate = f"{name}_constant_periods"
        if idx:
            add(GateResult(
                gate, "input", "fail", value=float(len(idx)), threshold=0.0, periods=idx,
                pixels=int(s["n_valid"][idx].sum()),
                message=f"{name} period(s) {_dates(times, idx)} hold one constant value "
                        f"({float(s['vmin'][idx[0]]):g}) over every observed pixel.",
                fix=f"re-export those periods of {name}: a constant layer is a fill value, "
                    "not a measurement.",
                action="treated as missing (NaN)"))
        else:
            add(GateResult(gate, "input", "pass", value=0.0, threshold=0.0,
                           message=f"no constant {name} period."))


def _coverage_gates(stats: dict, times: np.ndarray, n_pix: int, period: float,
                    thresholds: GateThresholds, screen: PeriodScreen,
                    add: Callable[[GateResult], None]) -> None:
    """Per-period valid fraction of S1 and S2 and the longest S2 gap."""
    # per-period valid fractions
    bad_s2 = set(screen.zero_periods) | set(screen.constant_periods.get(NDVI, []))
    s2_frac = stats[NDVI]["n_valid"] / max(n_pix, 1)
    s2_frac = np.where(np.isin(np.arange(s2_frac.size), sorted(bad_s2)), 0.0, s2_frac)
    screen.valid_fraction = [float(f) for f in s2_frac]
    bad_s1 = set(screen.constant_periods.get(VV, [])) | set(screen.constant_periods.get(VH, []))
    s1_frac = np.minimum(stats[VV]["n_valid"], stats[VH]["n_valid"]) / max(n_pix, 1)
    s1_frac = np.where(np.isin(np.arange(s1_frac.size), sorted(bad_s1)), 0.0, s1_frac)
    screen.s1_valid_fraction = [float(f) for f in s1_frac]
    low_s1 = [int(i) for i in np.flatnonzero(s1_frac < thresholds.s1_min_valid_fraction)]
    if low_s1:
        add(GateResult(
            "s1_valid_fraction", "input", "fail", value=float(s1_frac.min()),
            threshold=thresholds.s1_min_valid_fraction, periods=low_s1,
            message=f"S1 (VV and VH) covers less than {100 * thresholds.s1_min_valid_fraction:.0f} "
                    f"% of the pixels in period(s) {_dates(times, low_s1)} (lowest "
                    f"{100 * s1_frac.min():.1f} %).",
            fix="check the S1 acquisitions of those periods (missing orbit, border noise); "
                "widen the compositing period.",
            action="reported: those periods have fewer S1 values for gap-filling"))
    else:
        add(GateResult("s1_valid_fraction", "input", "pass", value=float(s1_frac.min()),
                       threshold=thresholds.s1_min_valid_fraction,
                       message=f"S1 covers at least {100 * s1_frac.min():.1f} % of the pixels "
                               "in every period."))
    screen.empty_periods = [int(i) for i in np.flatnonzero(s2_frac == 0)]
    overall = float(s2_frac.mean()) if s2_frac.size else 0.0
    if overall < thresholds.s2_min_valid_fraction:
        add(GateResult(
            "s2_valid_fraction", "input", "fail", value=overall,
            threshold=thresholds.s2_min_valid_fraction,
            message=f"only {100 * overall:.2f} % of pixel-periods have an NDVI observation "
                    f"(needs {100 * thresholds.s2_min_valid_fraction:.0f} %).",
            fix="check the S2 cloud masking (SCL classes kept) or use a longer series.",
            action="reported: gap-filled NDVI rests on very few observations"))
    else:
        status: GateStatus = "warn" if screen.empty_periods else "pass"
        add(GateResult(
            "s2_valid_fraction", "input", status, value=overall,
            threshold=thresholds.s2_min_valid_fraction, periods=screen.empty_periods,
            message=f"{100 * overall:.1f} % of pixel-periods observed"
                    + (f"; no observation in period(s) {_dates(times, screen.empty_periods)}"
                       if screen.empty_periods else "") + "."))
    empty = s2_frac < thresholds.s2_empty_fraction
    run, start = _runs(empty)
    gap_days = run * period
    if gap_days > thresholds.s2_max_gap_days:
        periods = list(range(start, start + run))
        add(GateResult(
            "s2_longest_gap", "input", "fail", value=gap_days, threshold=thresholds.s2_max_gap_days,
            periods=periods,
            message=f"{run} consecutive periods ({gap_days:.0f} days) without NDVI, from "
                    f"{_dates(times, periods[:1])}: a whole season can hide in that gap.",
            fix="add S2 scenes (more cloud-masking tolerance, L1C fallback) or rely on the "
                "fusion gap-fill (gapfill=fusion) that uses S1.",
            action="reported: gap-filled NDVI in that gap is an interpolation"))
    else:
        add(GateResult("s2_longest_gap", "input", "pass", value=gap_days,
                       threshold=thresholds.s2_max_gap_days,
                       message=f"longest run without NDVI: {run} period(s), {gap_days:.0f} days."))


def input_gates(cube: xr.Dataset, *, mask: MaskArg = "cube",
                thresholds: GateThresholds = GateThresholds(), strict: bool = False,
                mask_source: str = "paddy_mask") -> tuple[PeriodScreen, dict[str, np.ndarray]]:
    """Run every input gate on a (possibly lazy) cube in one pass over its pixels.

    Args:
        cube: The cube (``vv``, ``vh``, ``ndvi`` with dims ``(time, y, x)``).
        mask: Paddy mask ``(y, x)``; ``"cube"`` (default) for the cube's ``paddy_mask`` when
            present; None for no mask (the coverage gate is skipped).
        thresholds: Gate thresholds.
        strict: Raise :class:`GateFailed` at the first failing gate.
        mask_source: Name of the mask in messages (its file).

    Returns:
        ``(screen, arrays)``: the screen (gate results in ``screen.gates``) and arrays for the
        diagnostics plots: ``{var}_rows`` ``(time, y)`` valid fraction per period and row,
        ``ndvi_composite`` temporal mean of the valid NDVI on every ``composite_step``-th pixel.

    Raises:
        CubeSchemaError: A required variable is missing or has other dims.
        GateFailed: In strict mode, the first failing gate; in every mode, a range gate that
            finds a band in the wrong unit or scale (dB backscatter, NDVI x 10000: see
            :mod:`fusecube.quality.scales`).
    """
    _check_structure(cube)
    results: list[GateResult] = []

    def add(result: GateResult) -> None:
        results.append(result)
        if result.status == "fail":
            log.warning("gate %s failed: %s", result.gate, result.message)
            if strict:
                raise result.error()

    for result in time_gates(cube, thresholds):
        add(result)
    ranges = _ranges(thresholds)
    stats = _read_stats(cube, ranges, thresholds)
    times = cube[TIME].values
    screen = PeriodScreen(ranges={k: list(v) for k, v in ranges.items()})
    _value_gates(stats, ranges, screen, add)
    _period_gates(stats, times, screen, add)
    _coverage_gates(stats, times, cube.sizes[Y] * cube.sizes[X], period_days_of(cube) or 0.0,
                    thresholds, screen, add)
    bad_s2 = set(screen.zero_periods) | set(screen.constant_periods.get(NDVI, []))
    ndvi_window = stats["extra"]["ndvi_window"].astype(np.float64)
    ndvi_window[sorted(bad_s2)] = np.nan
    add(alignment_gate(ndvi_window, stats["extra"]["vh_window"], thresholds))
    if isinstance(mask, str):
        mask = cube[PADDY_MASK] if PADDY_MASK in cube else None
    mask_values = None if mask is None else np.asarray(getattr(mask, "values", mask))
    add(coverage_gate(mask_values, thresholds, mask_source))
    screen.gates = [r.to_dict() for r in results]
    arrays = {f"{name}_rows": stats[name]["row_valid"] for name in ranges}
    arrays["ndvi_composite"] = stats[NDVI]["composite"]
    arrays["composite_step"] = np.asarray(stats[NDVI]["composite_step"])
    return screen, arrays


def screen_periods(cube: xr.Dataset, *, mask: MaskArg = "cube",
                   thresholds: GateThresholds = GateThresholds(),
                   strict: bool = False, mask_source: str = "paddy_mask") -> PeriodScreen:
    """Run the input gates on a (possibly lazy) cube; see :func:`input_gates`.

    Returns:
        The :class:`PeriodScreen` that :func:`apply_screen` applies to each block.
    """
    screen, _ = input_gates(cube, mask=mask, thresholds=thresholds, strict=strict,
                            mask_source=mask_source)
    return screen


def apply_screen(cube: xr.Dataset, screen: PeriodScreen) -> xr.Dataset:
    """Mask what the input gates found bad: screened periods and out-of-range values → NaN."""
    out = cube.copy()
    n_time = cube.sizes[TIME]
    bad_periods = {NDVI: list(screen.zero_periods)}
    for name, idx in screen.constant_periods.items():
        bad_periods.setdefault(name, []).extend(idx)
    for name in (NDVI, VV, VH):
        if name not in cube:
            continue
        var = cube[name]
        keep = None
        if screen.masked_values.get(name) and name in screen.ranges:
            low, high = screen.ranges[name]
            sentinels = np.asarray(SENTINEL_VALUES, dtype=var.dtype)
            keep = np.isfinite(var) & (var >= low) & (var <= high) & ~var.isin(sentinels)
        if bad_periods.get(name):
            flags = np.zeros(n_time, bool)
            flags[bad_periods[name]] = True
            period_ok = xr.DataArray(~flags, dims=TIME, coords={TIME: cube[TIME]})
            keep = period_ok if keep is None else keep & period_ok
        if keep is not None:
            out[name] = var.where(keep)
    return out


