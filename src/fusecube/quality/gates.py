"""Quality gates: screens that run before and after stages and report what they found.

Input gates (:func:`input_gates`, run once on the whole, possibly lazy, cube in one pass over
the data): time axis monotonic, regular, consistent with its periods and in the expected
years; non-finite values and nodata sentinels; NDVI and backscatter ranges; constant and
all-zero periods; per-period valid fraction of S1 and S2 and the longest S2 gap; S1/S2 grid
alignment; paddy coverage. Stage gates (:func:`stage_gates`, run on each block after
gap-fill, smoothing and phenology): NDVI in range, gap-filled series complete, season
lengths positive and plausible, season dates ordered and inside the series. For sources that
load S1 and S2 separately, :func:`grids_gate` checks that they share one grid.

Every gate gives a :class:`GateResult`. In strict mode the first failing gate raises
:class:`~fusecube.errors.GateFailed` naming the gate, the periods/pixels and the fix; by
default what is bad is masked (set to NaN), the run continues and the result is reported.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

from fusecube.cube import (
    DIMS,
    NDVI,
    NDVI_FUSED,
    NDVI_SMOOTH,
    PADDY_MASK,
    SENTINEL_VALUES,
    TIME,
    VH,
    VV,
    X,
    Y,
)
from fusecube.errors import CubeSchemaError, GateFailed, InputFileError

log = logging.getLogger(__name__)

GateStatus = Literal["pass", "warn", "fail", "skip"]
Stage = Literal["input", "mask", "gapfill", "smooth", "phenology"]

#: Sentinel-1A started delivering data in October 2014: nothing in a cube can be older.
SENTINEL_ERA_START = "2014-10-01"
MaskArg = np.ndarray | xr.DataArray | Literal["cube"] | None
DATE_METRICS = ("planting", "sos", "pos", "eos", "harvest")
VALUE_METRICS = ("base_value", "peak_value")


@dataclass(frozen=True)
class GateThresholds:
    """Thresholds of the quality gates (defaults suit 5-12 day S1/S2 composites of rice areas)."""

    s1_min_valid_fraction: float = 0.9
    """Smallest share of pixels with VV and VH in every period (radar sees through clouds)."""
    s2_min_valid_fraction: float = 0.05
    """Smallest share of (pixel, period) pairs with an NDVI observation over the whole series."""
    s2_empty_fraction: float = 0.01
    """A period with less than this share of NDVI observations counts as empty."""
    s2_max_gap_days: float = 96.0
    """Longest run of empty NDVI periods that gap-filling can bridge (days)."""
    ndvi_range: tuple[float, float] = (-1.0, 1.0)
    """Valid NDVI values."""
    backscatter_range: tuple[float, float] = (0.0, 30.0)
    """Valid linear sigma0 (VV, VH); negative values are usually dB."""
    regular_tolerance_days: float = 1.0
    """Allowed deviation of a time step from the period length (days)."""
    expected_years: tuple[int, int] | None = None
    """First and last calendar year the series must lie in; None: the Sentinel era to today."""
    max_alignment_shift: int = 3
    """Largest S1/S2 pixel shift searched by the alignment gate."""
    alignment_margin: float = 0.01
    """Correlation gain a shifted grid needs over the unshifted one to be called misaligned."""
    alignment_window: int = 128
    """Edge of the central window (pixels) searched by the alignment gate."""
    min_paddy_fraction: float = 0.005
    """Smallest share of the area of interest inside the paddy mask."""
    min_paddy_pixels: int = 10
    """Smallest number of paddy pixels."""
    min_season_days: float = 40.0
    """Shortest plausible season (SOS to EOS, days)."""
    max_season_days: float = 200.0
    """Longest plausible season (SOS to EOS, days)."""
    max_unfilled_fraction: float = 0.01
    """Largest share of (paddy) pixels a gap-fill may leave with missing values."""


@dataclass
class GateResult:
    """The outcome of one gate."""

    gate: str
    """Gate name, e.g. ``s2_valid_fraction``."""
    stage: str
    """Where it ran: ``input``, ``mask``, ``gapfill``, ``smooth`` or ``phenology``."""
    status: GateStatus
    """``pass``, ``warn`` (reported, harmless), ``fail`` or ``skip`` (not applicable)."""
    value: float | None = None
    """The measured value."""
    threshold: float | None = None
    """The threshold it was compared with."""
    message: str = ""
    """What was found, naming periods and pixels."""
    fix: str = ""
    """What the user can do about a failure."""
    periods: list[int] = field(default_factory=list)
    """Affected period indices (0-based)."""
    pixels: int = 0
    """Number of affected values/pixels."""
    action: str = ""
    """What the default (non-strict) mode did about it."""

    def to_dict(self) -> dict:
        """JSON-able dictionary."""
        return asdict(self)

    def error(self) -> GateFailed:
        """The :class:`GateFailed` raised for this result in strict mode."""
        text = f"Quality gate {self.gate!r} ({self.stage}) failed: {self.message}"
        if self.fix:
            text += f" Fix: {self.fix}"
        value = float("nan") if self.value is None else float(self.value)
        threshold = float("nan") if self.threshold is None else float(self.threshold)
        return GateFailed(self.gate, value, threshold, text)


@dataclass
class PeriodScreen:
    """Per-period findings of :func:`screen_periods`, applied to blocks by :func:`apply_screen`."""

    valid_fraction: list[float] = field(default_factory=list)
    """Share of pixels with an NDVI observation, per period."""
    zero_periods: list[int] = field(default_factory=list)
    """Periods whose observed NDVI is all exactly 0 (a broken composite): treated as missing."""
    empty_periods: list[int] = field(default_factory=list)
    """Periods with no NDVI observation at all (fully clouded)."""
    s1_valid_fraction: list[float] = field(default_factory=list)
    """Share of pixels with both VV and VH, per period."""
    constant_periods: dict[str, list[int]] = field(default_factory=dict)
    """Per variable, periods whose valid values are all equal: treated as missing."""
    masked_values: dict[str, int] = field(default_factory=dict)
    """Per variable, values out of range, infinite or nodata sentinels: set to NaN."""
    gates: list[dict] = field(default_factory=list)
    """Every input gate result (:meth:`GateResult.to_dict`)."""
    stage_counts: dict[str, int] = field(default_factory=dict)
    """Per stage gate (``stage:gate``), values flagged after a stage, summed over the blocks of
    this process."""
    stage_status: dict[str, str] = field(default_factory=dict)
    """Per stage gate, the worst status seen over the blocks (pass < warn < fail)."""
    ranges: dict[str, list[float]] = field(default_factory=dict)
    """Per variable, the valid ``[low, high]`` range used to mask values."""

    def first_failure(self) -> GateResult | None:
        """The first failing input gate, or None."""
        for gate in self.gates:
            if gate["status"] == "fail":
                return GateResult(**gate)
        return None

    def raise_first_failure(self) -> None:
        """Raise :class:`GateFailed` for the first failing input gate (strict mode)."""
        failure = self.first_failure()
        if failure is not None:
            raise failure.error()


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


# ----------------------------------------------------------------------------- data pass
def _block_stats(values: np.ndarray, low: float, high: float, step: int = 0,
                 origin: tuple[int, int] = (0, 0)) -> dict:
    """Statistics of one ``(time, y, x)`` numpy block, summable across blocks.

    ``step`` > 0 adds the temporal mean on every ``step``-th row and column of the whole grid
    (``origin`` is the block's offset in it), so the composite stays small for big cubes.
    """
    n_t = values.shape[0]
    finite = np.isfinite(values)
    sentinel = np.zeros(values.shape, bool)
    if values.dtype.kind == "f":
        for value in SENTINEL_VALUES:
            sentinel |= values == values.dtype.type(value)
    usable = finite & ~sentinel
    in_range = usable & (values >= low) & (values <= high)
    kept = np.where(in_range, values, np.nan).reshape(n_t, -1)
    stats = {
        "row_count": in_range.sum(axis=2),
        "n_valid": in_range.reshape(n_t, -1).sum(axis=1),
        "vmin": np.fmin.reduce(kept, axis=1), "vmax": np.fmax.reduce(kept, axis=1),
        "n_inf": int(np.isinf(values).sum()), "n_sentinel": int(sentinel.sum()),
        "n_out": int((usable & ~in_range).sum()), "n_negative": int((usable & (values < 0)).sum()),
        "n_usable": int(usable.sum()),
    }
    if step:  # mean of the valid values, zeros left out (they are broken composites)
        rows = slice((-origin[0]) % step, None, step)
        cols = slice((-origin[1]) % step, None, step)
        sub = values[:, rows, cols]
        nonzero = in_range[:, rows, cols] & (sub != 0)
        stats["composite_sum"] = np.where(nonzero, sub, 0.0).sum(axis=0, dtype=np.float64)
        stats["composite_n"] = nonzero.sum(axis=0)
    return stats


def _stat_tasks(var: xr.DataArray, low: float, high: float, step: int) -> list:
    """One delayed :func:`_block_stats` per spatial chunk (all times) with its offsets."""
    import dask
    import dask.array as da

    data = var.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(-1, 256, 256))
    data = data.rechunk({0: -1})  # whole series per block
    y_edges = np.cumsum((0, *data.chunks[1]))
    x_edges = np.cumsum((0, *data.chunks[2]))
    tasks = []
    for (_, iy, ix), block in zip(np.ndindex(*data.numblocks), data.to_delayed().ravel(),
                                  strict=True):
        origin = (int(y_edges[iy]), int(x_edges[ix]))
        stats = dask.delayed(_block_stats)(block, low, high, step, origin)
        tasks.append(((y_edges[iy], y_edges[iy + 1], x_edges[ix], x_edges[ix + 1]), stats))
    return tasks


def _combine(tasks: list, results: list, shape: tuple[int, int, int], step: int) -> dict:
    """Sum the block statistics of :func:`_stat_tasks` into whole-cube ones."""
    n_t, ny, nx = shape
    rows = np.zeros((n_t, ny))
    out = {"n_valid": np.zeros(n_t, np.int64), "vmin": np.full(n_t, np.nan),
           "vmax": np.full(n_t, np.nan)}
    out.update({k: 0 for k in ("n_inf", "n_sentinel", "n_out", "n_negative", "n_usable")})
    sub_shape = (-(-ny // step), -(-nx // step)) if step else (0, 0)
    comp_sum, comp_n = np.zeros(sub_shape), np.zeros(sub_shape)
    for ((y0, y1, x0, _), _), block in zip(tasks, results, strict=True):
        rows[:, y0:y1] += block["row_count"]
        out["n_valid"] += block["n_valid"]
        out["vmin"] = np.fmin(out["vmin"], block["vmin"])
        out["vmax"] = np.fmax(out["vmax"], block["vmax"])
        for key in ("n_inf", "n_sentinel", "n_out", "n_negative", "n_usable"):
            out[key] += block[key]
        if step:
            r0, c0 = -(-y0 // step), -(-x0 // step)
            h, w = block["composite_sum"].shape
            comp_sum[r0:r0 + h, c0:c0 + w] = block["composite_sum"]
            comp_n[r0:r0 + h, c0:c0 + w] = block["composite_n"]
    out["row_valid"] = rows / max(nx, 1)
    if step:
        with np.errstate(invalid="ignore", divide="ignore"):
            out["composite"] = np.where(comp_n > 0, comp_sum / np.maximum(comp_n, 1), np.nan)
    return out


#: Largest edge (pixels) of the mean-NDVI composite kept for the figures.
COMPOSITE_EDGE = 1024


def composite_step(ny: int, nx: int, edge: int | None = None) -> int:
    """Subsampling step that keeps a ``(ny, nx)`` composite within ``edge`` pixels a side."""
    return max(1, -(-max(ny, nx) // (edge or COMPOSITE_EDGE)))


def variable_stats(variables: dict[str, tuple[xr.DataArray, float, float, bool]],
                   extra: dict[str, xr.DataArray] | None = None) -> dict[str, dict]:
    """Per-period statistics of ``(time, y, x)`` variables in one parallel pass over the chunks.

    Args:
        variables: ``{name: (variable, low, high, composite)}``: values outside ``[low, high]``
            are counted as out of range; ``composite`` adds the temporal mean (zeros left out)
            on every :func:`composite_step`-th pixel (every pixel up to 1024 x 1024).
        extra: Further (small) arrays to compute in the same pass, returned under ``"extra"``.

    Returns:
        Per name: ``row_valid`` ``(time, y)`` valid share per row, ``n_valid``, ``vmin``,
        ``vmax`` per period, counts ``n_inf``, ``n_sentinel``, ``n_out``, ``n_negative``,
        ``n_usable`` and, if asked, ``composite`` and its ``composite_step``.
    """
    import dask

    steps = {name: composite_step(var.sizes[Y], var.sizes[X]) if comp else 0
             for name, (var, _, _, comp) in variables.items()}
    tasks = {name: _stat_tasks(var.transpose(*DIMS), low, high, steps[name])
             for name, (var, low, high, _) in variables.items()}
    flat = [stats for name in tasks for _, stats in tasks[name]]
    extra = extra or {}
    results = dask.compute(*flat, *[v.data for v in extra.values()])
    out: dict[str, dict] = {}
    start = 0
    for name, (var, _, _, _) in variables.items():
        n = len(tasks[name])
        shape = tuple(var.sizes[d] for d in DIMS)
        out[name] = _combine(tasks[name], list(results[start:start + n]), shape, steps[name])
        out[name]["composite_step"] = steps[name]
        start += n
    out["extra"] = {k: np.asarray(v) for k, v in zip(extra, results[start:], strict=True)}
    return out


def _standardise(series: np.ndarray) -> np.ndarray:
    """Per-pixel z-score over time of a ``(time, y, x)`` array (NaN kept, constant → NaN)."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        mean = np.nanmean(series, axis=0)
        std = np.nanstd(series, axis=0)
        return (series - mean) / np.where(std > 0, std, np.nan)


def shift_correlation(ndvi: np.ndarray, vh: np.ndarray,
                      max_shift: int) -> dict[tuple[int, int], float]:
    """Mean per-pixel temporal correlation of NDVI with VH shifted by (dy, dx) pixels.

    Args:
        ndvi: ``(time, y, x)`` NDVI (NaN where not observed).
        vh: ``(time, y, x)`` VH backscatter, linear.
        max_shift: Largest shift searched along each axis.

    Returns:
        ``{(dy, dx): correlation}`` for every shift with enough overlapping pixels.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        vh_db = 10 * np.log10(np.where(vh > 0, vh, np.nan))
    z_ndvi, z_vh = _standardise(ndvi), _standardise(vh_db)
    ny, nx = z_ndvi.shape[1:]
    out = {}
    for dy in range(-max_shift, max_shift + 1):  # a few dozen shifts, each vectorised
        for dx in range(-max_shift, max_shift + 1):
            a = z_ndvi[:, max(dy, 0):ny + min(dy, 0), max(dx, 0):nx + min(dx, 0)]
            b = z_vh[:, max(-dy, 0):ny + min(-dy, 0), max(-dx, 0):nx + min(-dx, 0)]
            product = a * b
            n = np.isfinite(product).sum(axis=0)
            usable = n >= 5
            if usable.sum() < 16:
                continue
            r = np.nansum(product, axis=0)[usable] / n[usable]
            out[(dy, dx)] = float(r.mean())
    return out


def alignment_gate(ndvi: np.ndarray, vh: np.ndarray,
                   thresholds: GateThresholds = GateThresholds()) -> GateResult:
    """S1/S2 co-registration: NDVI and VH time series must correlate best at the same pixel.

    VH tracks the canopy, and neighbouring fields follow different calendars, so the mean
    per-pixel temporal correlation of NDVI with VH peaks at shift (0, 0) when the grids are
    aligned and moves with any offset between the S1 and S2 grids.

    Args:
        ndvi: ``(time, y, x)`` NDVI window (screened periods NaN).
        vh: ``(time, y, x)`` VH window, linear.
        thresholds: Gate thresholds (``max_alignment_shift``, ``alignment_margin``).
    """
    corr = shift_correlation(ndvi, vh, thresholds.max_alignment_shift)
    if (0, 0) not in corr:
        return GateResult("s1_s2_alignment", "input", "skip",
                          message="too few pixels with both NDVI and VH to test the alignment.")
    zero = corr[(0, 0)]
    best = max(corr, key=corr.get)
    gain = corr[best] - zero
    if best != (0, 0) and gain > thresholds.alignment_margin:
        return GateResult(
            "s1_s2_alignment", "input", "fail", value=float(gain),
            threshold=thresholds.alignment_margin,
            message=f"NDVI at (y + dy, x + dx) follows VH at (y, x) best for (dy, dx) = {best} "
                    f"(r {corr[best]:.3f} vs {zero:.3f} unshifted): the S1 and S2 grids are "
                    "not aligned.",
            fix="load S1 and S2 onto one GeoBox (same CRS, transform and shape), e.g. with "
                "fusecube.load(..., like=...); check pixel-corner vs pixel-centre coordinates.",
            action="reported: gap-filling from S1 would use the wrong pixels")
    return GateResult("s1_s2_alignment", "input", "pass", value=float(max(gain, 0.0)),
                      threshold=thresholds.alignment_margin,
                      message=f"NDVI and VH correlate best at the same pixel (r {zero:.3f}).")


def grids_gate(s1: xr.Dataset | xr.DataArray, s2: xr.Dataset | xr.DataArray, *,
               strict: bool = False) -> GateResult:
    """S1 and S2 loaded separately must share one grid (CRS, pixel size, origin, shape) and times.

    Args:
        s1: The radar data (``vv``/``vh``) on its grid.
        s2: The optical data (``ndvi``) on its grid.
        strict: Raise :class:`GateFailed` when the grids differ.

    Returns:
        The gate result; its message says what differs (CRS, resolution, offset in pixels,
        shape, time steps).
    """
    a, b = s1.odc.geobox, s2.odc.geobox
    problems = []
    if a.crs != b.crs:
        problems.append(f"CRS {a.crs} vs {b.crs}")
    else:
        ra, rb = (a.affine.a, a.affine.e), (b.affine.a, b.affine.e)
        if not np.allclose(ra, rb, rtol=1e-9):
            problems.append(f"pixel size {ra} vs {rb}")
        else:
            dx = (b.affine.c - a.affine.c) / a.affine.a
            dy = (b.affine.f - a.affine.f) / a.affine.e
            if abs(dx) > 1e-6 or abs(dy) > 1e-6:
                problems.append(f"origin offset by (dy, dx) = ({dy + 0.0:.3g}, {dx + 0.0:.3g}) "
                                "pixels")  # + 0.0: no "-0"
        if a.shape != b.shape:
            problems.append(f"shape {tuple(a.shape)} vs {tuple(b.shape)}")
    if TIME in s1.coords and TIME in s2.coords:
        t1, t2 = np.asarray(s1[TIME].values), np.asarray(s2[TIME].values)
        if t1.shape != t2.shape or not np.array_equal(t1, t2):
            problems.append(f"time axes differ ({t1.size} vs {t2.size} periods)")
    if not problems:
        return GateResult("s1_s2_grids", "input", "pass", value=0.0, threshold=0.0,
                          message="S1 and S2 share one grid and one time axis.")
    result = GateResult(
        "s1_s2_grids", "input", "fail", value=float(len(problems)), threshold=0.0,
        message="S1 and S2 grids differ: " + "; ".join(problems) + ".",
        fix="load both onto one GeoBox and one set of periods (fusecube.load(..., like=...), "
            "or s2.odc.reproject(s1.odc.geobox, resampling='nearest')).",
        action="none: S1 and S2 cannot be stacked into one cube")
    if strict:
        raise result.error()
    return result


def coverage_gate(mask: np.ndarray | None, thresholds: GateThresholds = GateThresholds(),
                  source: str = "paddy_mask") -> GateResult:
    """Paddy coverage: the mask must cover enough of the area of interest to be meaningful."""
    if mask is None:
        return GateResult("paddy_coverage", "mask", "skip",
                          message="no paddy mask: every pixel is processed.")
    mask = np.asarray(mask)
    pixels = int((mask > 0).sum())
    fraction = pixels / max(mask.size, 1)
    ok = fraction >= thresholds.min_paddy_fraction and pixels >= thresholds.min_paddy_pixels
    text = f"mask {source} covers {pixels} of {mask.size} pixels ({100 * fraction:.2f} %)"
    if ok:
        return GateResult("paddy_coverage", "mask", "pass", value=fraction,
                          threshold=thresholds.min_paddy_fraction, pixels=pixels,
                          message=text + ".")
    return GateResult(
        "paddy_coverage", "mask", "fail", value=fraction, threshold=thresholds.min_paddy_fraction,
        pixels=pixels,
        message=text + f", below {100 * thresholds.min_paddy_fraction:.2f} % or "
                       f"{thresholds.min_paddy_pixels} pixels.",
        fix="check that the mask is the paddy area of this AOI (and its CRS), or use --mask none.",
        action="reported: phenology runs on the few paddy pixels there are")


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
                   for name in (NDVI, VH)})
    except Exception as exc:  # zarr/codec errors of a truncated or corrupt store
        source = cube.attrs.get("fusecube_source") or cube.encoding.get("source") or "the cube"
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
    # value ranges
    for name in (NDVI, VV, VH):
        s = stats[name]
        low, high = ranges[name]
        n_out = int(s["n_out"])
        screen.masked_values[name] = n_out + int(s["n_inf"]) + int(s["n_sentinel"])
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
        GateFailed: In strict mode, the first failing gate.
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
                   strict: bool = False) -> PeriodScreen:
    """Run the input gates on a (possibly lazy) cube; see :func:`input_gates`.

    Returns:
        The :class:`PeriodScreen` that :func:`apply_screen` applies to each block.
    """
    screen, _ = input_gates(cube, mask=mask, thresholds=thresholds, strict=strict)
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


# ----------------------------------------------------------------------------- stage gates
def thresholds_for(config) -> GateThresholds:
    """Gate thresholds of a :class:`~fusecube.config.RunConfig` (season lengths from phenology)."""
    return GateThresholds(min_season_days=config.phenology.min_length,
                          max_season_days=config.phenology.max_length)


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


_SEVERITY = {"skip": 0, "pass": 1, "warn": 2, "fail": 3}


def stage_results(screen: PeriodScreen | dict) -> list[GateResult]:
    """Gate results of the stage gates of a run, from the counts they left in the screen."""
    data = screen.__dict__ if isinstance(screen, PeriodScreen) else screen
    counts, worst = data.get("stage_counts", {}), data.get("stage_status", {})
    out = []
    for key, n_bad in counts.items():
        stage, gate = key.split(":", 1)
        status = worst.get(key, "fail" if n_bad else "pass")
        out.append(GateResult(
            gate, stage, status, value=float(n_bad), threshold=0.0, pixels=int(n_bad),
            message=(f"{n_bad} values, pixels or seasons flagged after {stage} over all blocks"
                     if n_bad else f"every block passed after {stage}."),
            action=("masked (NaN), seasons removed or reported, see the gate table in "
                    "docs/quality.md" if n_bad else "")))
    return out


# ----------------------------------------------------------------------------- report
@dataclass
class QualityReport:
    """Every gate and its result for one cube (and mask), written as ``quality.json``."""

    cube: str
    """The cube checked (path or description)."""
    strict: bool
    """Whether the gates ran in strict mode."""
    times: list[str]
    """Period dates (ISO days)."""
    screen: PeriodScreen
    """Per-period findings and the input gate results."""
    mask: dict | None = None
    """The mask report (:class:`fusecube.masks.files.MaskReport` as a dict), if a mask was used."""
    stage_results: list[dict] = field(default_factory=list)
    """Results of gates run after stages (when a run recorded them)."""

    @property
    def gates(self) -> list[GateResult]:
        """All gate results, input gates first."""
        return [GateResult(**g) for g in self.screen.gates + self.stage_results]

    @property
    def failed(self) -> list[GateResult]:
        """The failing gates."""
        return [g for g in self.gates if g.status == "fail"]

    def to_dict(self) -> dict:
        """JSON-able dictionary."""
        counts: dict[str, int] = {}
        for g in self.gates:
            counts[g.status] = counts.get(g.status, 0) + 1
        return {"cube": self.cube, "strict": self.strict, "summary": counts,
                "times": self.times, "screen": asdict(self.screen), "mask": self.mask,
                "gates": [g.to_dict() for g in self.gates]}

    def write_json(self, path: str | Path) -> Path:
        """Write ``quality.json`` atomically (temporary name, then rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str))
        tmp.replace(path)
        return path

    def to_markdown(self) -> str:
        """A markdown table of every gate (for terminals and docs)."""
        lines = ["| gate | stage | status | value | threshold | finding |",
                 "|---|---|---|---|---|---|"]
        for g in self.gates:
            value = "" if g.value is None else f"{g.value:.4g}"
            threshold = "" if g.threshold is None else f"{g.threshold:.4g}"
            finding = g.message + (f" → {g.action}" if g.status == "fail" and g.action else "")
            lines.append(f"| {g.gate} | {g.stage} | {g.status} | {value} | {threshold} | "
                         f"{finding.replace('|', '/')} |")
        return "\n".join(lines)


def quality_report(cube: xr.Dataset, *, mask_spec: str = "cube", source: str = "",
                   thresholds: GateThresholds = GateThresholds(), strict: bool = False,
                   ) -> tuple[QualityReport, dict[str, np.ndarray], xr.DataArray | None]:
    """Resolve the mask and run every input gate on a cube.

    Args:
        cube: The cube.
        mask_spec: ``"cube"``, ``"none"`` or a mask file (see :func:`fusecube.masks.files.resolve_mask`).
        source: Name of the cube for the report (e.g. its path).
        thresholds: Gate thresholds.
        strict: Raise :class:`GateFailed` at the first failing gate.

    Returns:
        ``(report, arrays for the diagnostics plots, mask or None)``.
    """
    from fusecube.masks.files import mask_with_report

    if source:
        cube = cube.assign_attrs(fusecube_source=source)  # named in decoding errors
    if mask_spec == "cube" and PADDY_MASK not in cube:
        mask_spec = "none"  # a cube without its own mask is checked without one
    mask, mask_report = mask_with_report(mask_spec, cube)
    screen, arrays = input_gates(cube, mask=mask, thresholds=thresholds, strict=strict,
                                 mask_source=mask_spec)
    times = [np.datetime_as_string(t, unit="D") for t in cube[TIME].values]
    report = QualityReport(cube=source, strict=strict, times=times, screen=screen,
                           mask=mask_report.to_dict() if mask is not None else None)
    return report, arrays, mask
