"""Per-pixel features that tell rice paddy from other land, from the time series itself.

A transplanted rice field announces itself twice a year or more: it is flooded before
transplanting (calm water reflects the radar away: very low VV and VH), then the canopy grows
out of the water (VH rises steeply, NDVI greens up), is harvested, and the cycle starts again.
Fish ponds are water all year, other crops green up once a year without flooding, trees and
settlements are bright and stable. The features below measure exactly these differences.

The kernel :func:`features_array` is pure numpy over ``(n_pixels, n_times)`` arrays (loops run
over time steps only); :func:`paddy_features` wraps it for a cube, batch by batch of pixels so
memory stays flat.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from dataclasses import dataclass

import numpy as np
import xarray as xr

from fusecube.cube import DIMS, NDVI, NDVI_FUSED, NDVI_SMOOTH, TIME, VH, VV, X, Y
from fusecube.errors import CubeSchemaError
from fusecube.grid.periods import to_days
from fusecube.kernels.seasons import PEAK, TROUGH, SeasonRules, turning_points
from fusecube.kernels.whittaker import linear_fill, whittaker
from fusecube.units import to_db

log = logging.getLogger(__name__)

FEATURE = "feature"

#: Feature names, in the order of the columns of :func:`features_array`.
FEATURE_NAMES: tuple[str, ...] = (
    "vh_median_db", "vv_median_db", "vh_min_db", "vv_min_db", "vh_range_db",
    "flood_fraction", "flood_dips_per_year", "dip_interval_days", "vh_rise_db",
    "ratio_median_db", "ratio_range_db",
    "ndvi_peak", "ndvi_trough", "ndvi_amplitude", "ndvi_seasons_per_year", "ndvi_season_length",
)

FEATURE_DOCS: dict[str, str] = {
    "vh_median_db": "Median VH backscatter (dB) of the denoised series: the usual state.",
    "vv_median_db": "Median VV backscatter (dB).",
    "vh_min_db": "Lowest VH (dB): depth of the deepest flood dip.",
    "vv_min_db": "Lowest VV (dB).",
    "vh_range_db": "5th-95th percentile range of VH (dB): how much the surface changes.",
    "flood_fraction": "Share of periods that look like open water (VH and VV both low).",
    "flood_dips_per_year": "Separate flooding episodes (onsets of open water) per year.",
    "dip_interval_days": "Mean days between flood onsets (NaN with fewer than two).",
    "vh_rise_db": "Largest VH rise (dB) within the rise window after a period: canopy out of water.",
    "ratio_median_db": "Median VH/VV ratio (dB).",
    "ratio_range_db": "5th-95th percentile range of the VH/VV ratio (dB): vegetation dynamics.",
    "ndvi_peak": "95th percentile of the gap-filled NDVI.",
    "ndvi_trough": "5th percentile of the gap-filled NDVI.",
    "ndvi_amplitude": "ndvi_peak - ndvi_trough.",
    "ndvi_seasons_per_year": "Green-up seasons per year detected on the gap-filled NDVI.",
    "ndvi_season_length": "Median length (days, trough to trough) of those seasons.",
}


@dataclass(frozen=True)
class FeatureConfig:
    """How features are computed (radar denoising, open-water test, NDVI smoothing)."""

    speckle_window: int | None = None
    """Periods averaged (in linear power, centred) before taking dB; None chooses it from the
    speckle level of the data (:func:`speckle_window_for`): with ENL ~4.5 one period's speckle
    is ~±2 dB and three periods bring it near ±1.2 dB while a ~40-day flood still shows."""
    target_looks: float = 10.0
    """Looks wanted after averaging (estimated ENL x window, rounded to whole periods): the
    open-water and rise thresholds assume noise of about ±1.4 dB. The estimate also holds the
    soil-moisture flicker and some real change, so it reads ~3-4 on the synthetic scene
    (speckle ENL 4.5: window 2-3), ~0.95 at ENL 1 (window 4) and ~28 at ENL 50 (window 1)."""
    flood_days: float = 40.0
    """Typical flooding before transplanting (days): the averaging window never exceeds it
    (in periods, rounded up), or the flood dips would be averaged away."""
    water_vh_db: float = -24.0
    """Open water if VH is below this: calm water is a specular reflector (~-27 dB), bare or
    vegetated soil scatters back -22 dB or more."""
    water_vv_db: float = -17.0
    """...and VV is below this (water ~-21 dB, soil ~-13 dB): both must agree."""
    rise_periods: int = 4
    """Window (periods) after a period in which the VH rise is measured (~48 days at 12 days:
    rice canopy closes 4-7 weeks after transplanting)."""
    ndvi_lam: float = 2.0
    """Whittaker strength for the NDVI when the cube has no ``ndvi_smooth``."""
    season_rules: SeasonRules = SeasonRules()
    """Season rules for ``ndvi_seasons_per_year`` (the phenology stage's defaults)."""
    chunk_pixels: int = 32768
    """Pixels per vectorised batch."""


def _moving_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving mean along time (edges use the available neighbours)."""
    if window <= 1:
        return values
    n_t = values.shape[1]
    half = window // 2
    total = np.zeros_like(values)
    count = np.zeros(n_t, dtype=values.dtype)
    for shift in range(-half, window - half):  # a few shifted slices: cheaper than cumsum
        lo, hi = max(0, -shift), min(n_t, n_t - shift)
        total[:, lo:hi] += values[:, lo + shift:hi + shift]
        count[lo:hi] += 1
    return total / count[None, :]


def row_quantiles(values: np.ndarray, quantiles: tuple[float, ...]) -> np.ndarray:
    """NaN-aware quantiles of each row of ``(N, T)``, vectorised.

    ``np.nanpercentile`` loops over rows in Python; this sorts once.

    Returns:
        ``(len(quantiles), N)``, NaN for all-NaN rows.
    """
    ordered = np.sort(values, axis=1)  # NaN sorts last
    n_valid = np.isfinite(ordered).sum(axis=1)
    out = np.full((len(quantiles), values.shape[0]), np.nan)
    has = n_valid > 0
    for i, q in enumerate(quantiles):
        pos = q * np.maximum(n_valid - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(n_valid - 1, 0))
        frac = pos - lo
        v_lo = np.take_along_axis(ordered, lo[:, None], axis=1)[:, 0]
        v_hi = np.take_along_axis(ordered, hi[:, None], axis=1)[:, 0]
        out[i] = np.where(has, v_lo + frac * (v_hi - v_lo), np.nan)
    return out


def _bridge(values: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Linear interpolation through NaN gaps (radar gaps are rare: skip the work without any)."""
    return linear_fill(values, times) if np.isnan(values).any() else values


def ndvi_seasons(values: np.ndarray, times: np.ndarray,
                 rules: SeasonRules | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Green-up seasons of gap-free NDVI: count and median length (trough to trough, days).

    A season is a peak of at least ``rules.min_peak`` between two troughs of the zigzag
    (:func:`fusecube.kernels.seasons.turning_points` with ``rules.min_amplitude``), lasting
    ``rules.min_length``..``rules.max_length`` days. A light version of the phenology stage's
    :func:`~fusecube.kernels.seasons.detect_seasons` (no SOS/EOS interpolation), ten times cheaper.

    Returns:
        ``(count (N,), median length (N,))``; length NaN without a season.
    """
    rules = rules or SeasonRules()
    y = np.asarray(values, dtype=np.float32)
    t = np.asarray(times, dtype=np.float64)
    ev_idx, ev_kind, count = turning_points(y, rules.min_amplitude)
    n, m = ev_idx.shape
    rows = np.arange(n)
    lengths = np.full((n, max(m - 2, 1)), np.nan)
    for j in range(1, m - 1):  # event slots, not pixels
        is_peak = (ev_kind[:, j] == PEAK) & (j + 1 < count)
        if not is_peak.any():
            continue
        left, right = ev_idx[:, j - 1], ev_idx[:, j + 1]
        ok = (is_peak & (ev_kind[:, j - 1] == TROUGH) & (ev_kind[:, j + 1] == TROUGH)
              & (y[rows, ev_idx[:, j]] >= rules.min_peak))
        span = t[right] - t[left]
        ok &= (span >= rules.min_length) & (span <= rules.max_length)
        lengths[:, j - 1] = np.where(ok, span, np.nan)
    n_seasons = np.isfinite(lengths).sum(axis=1).astype(np.float64)
    return n_seasons, row_quantiles(lengths, (0.5,))[0]


#: Quantile of ``|ln(x[t+1] / x[t])|`` matched to pure speckle: low, because real changes only
#: add large steps and leave the small ones to the speckle.
SPREAD_QUANTILE = 0.25


@functools.lru_cache(maxsize=1)
def _enl_table() -> tuple[np.ndarray, np.ndarray]:
    """Median ``|ln(x[t+1] / x[t])|`` of pure gamma speckle on a grid of ENL.

    Monte Carlo with a fixed seed; decreasing in ENL, inverted by interpolation.
    """
    grid = np.geomspace(0.5, 1000.0, 80)
    rng = np.random.default_rng(0)
    draws = rng.gamma(grid[:, None, None], 1.0 / grid[:, None, None], (grid.size, 2, 40000))
    median = np.quantile(np.abs(np.log(draws[:, 0]) - np.log(draws[:, 1])), SPREAD_QUANTILE, axis=1)
    return grid, median


def estimate_enl(*series: np.ndarray) -> float:
    """Equivalent number of looks of the radar speckle, from the series themselves.

    Under gamma speckle of ENL ``L`` the log-ratio of two looks at a stable surface has a known
    spread; the median ``|ln(x[t+1] / x[t])|`` pooled over pixels, times and both polarisations
    is matched to it. Real changes (floods, green-up, harvest) touch few of a pixel's steps, so
    a low quantile is robust to them. The features use VH: VV also flickers with soil moisture.

    Args:
        *series: ``(N, T)`` linear backscatter arrays (pooled).

    Returns:
        The estimated ENL (NaN when there are no two successive valid values).
    """
    steps = []
    for x in series:
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.log(np.asarray(x, dtype=np.float64))
        d = np.abs(np.diff(logs, axis=1)).ravel()
        steps.append(d[np.isfinite(d)])
    pooled = np.concatenate(steps)
    if pooled.size == 0:
        return float("nan")
    grid, median = _enl_table()
    return float(np.interp(np.quantile(pooled, SPREAD_QUANTILE), median[::-1], grid[::-1]))


def speckle_window_for(enl: float, period_days: float, config: FeatureConfig) -> int:
    """Averaging window in periods for speckle of ENL ``enl``.

    About ``config.target_looks`` looks after averaging, never longer than a flood
    (``config.flood_days``): 3 at the synthetic scene's ENL 4.5, 1 for multi-looked 50 m
    composites (ENL in the tens), 4 for single-look data at 12 days.
    """
    longest = max(1, int(math.ceil(config.flood_days / max(period_days, 1e-9) - 1e-9)))
    if not np.isfinite(enl) or enl <= 0:
        return min(3, longest)
    return int(np.clip(round(config.target_looks / enl), 1, longest))


def features_array(vv: np.ndarray, vh: np.ndarray, ndvi_filled: np.ndarray, times_days: np.ndarray,
                   config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Paddy features of ``N`` pixels.

    Args:
        vv: ``(N, T)`` VV sigma0, linear (NaN where missing).
        vh: ``(N, T)`` VH sigma0, linear.
        ndvi_filled: ``(N, T)`` gap-free NDVI (NaN rows where a pixel was never observed).
        times_days: ``(T,)`` period centres in days.
        config: Feature options.

    Returns:
        ``(N, len(FEATURE_NAMES))`` float32; NaN where a feature is undefined for a pixel.
    """
    t = np.asarray(times_days, dtype=np.float64)
    years = max((t[-1] - t[0] + np.median(np.diff(t))) / 365.25, 1e-6) if t.size > 1 else 1.0
    vv_lin, vh_lin = (_bridge(np.asarray(v, np.float32), t) for v in (vv, vh))
    window = config.speckle_window
    if window is None:
        period = float(np.median(np.diff(t))) if t.size > 1 else 12.0
        window = speckle_window_for(estimate_enl(vh_lin), period, config)
    vv_db = to_db(_moving_mean(vv_lin, window))
    vh_db = to_db(_moving_mean(vh_lin, window))
    ratio_db = vh_db - vv_db
    q_vh = row_quantiles(vh_db, (0.05, 0.5, 0.95))
    q_ratio = row_quantiles(ratio_db, (0.05, 0.5, 0.95))
    water = (vh_db < config.water_vh_db) & (vv_db < config.water_vv_db)
    onset = water & ~np.concatenate([np.zeros_like(water[:, :1]), water[:, :-1]], axis=1)
    n_onsets = onset.sum(axis=1)
    tt = np.broadcast_to(t, onset.shape)
    first = np.where(onset, tt, np.inf).min(axis=1)
    last = np.where(onset, tt, -np.inf).max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        interval = np.where(n_onsets >= 2, (last - first) / np.maximum(n_onsets - 1, 1), np.nan)
    # VH rise: for each period, the highest VH in the next `rise_periods` minus VH now
    n_t = vh_db.shape[1]
    ahead = np.full_like(vh_db, -np.inf)
    for k in range(1, min(config.rise_periods, n_t - 1) + 1):
        ahead[:, :-k] = np.maximum(ahead[:, :-k], vh_db[:, k:])
    rise = np.where(np.isfinite(ahead), ahead - vh_db, -np.inf).max(axis=1)
    nd = np.asarray(ndvi_filled, dtype=np.float32)
    observed = np.isfinite(nd).all(axis=1)
    q_nd = row_quantiles(np.where(observed[:, None], nd, np.nan), (0.05, 0.95))
    n_seasons, length = ndvi_seasons(np.where(observed[:, None], nd, 0.0), t, config.season_rules)
    columns = {
        "vh_median_db": q_vh[1], "vv_median_db": row_quantiles(vv_db, (0.5,))[0],
        "vh_min_db": np.min(vh_db, axis=1), "vv_min_db": np.min(vv_db, axis=1),
        "vh_range_db": q_vh[2] - q_vh[0],
        "flood_fraction": water.mean(axis=1), "flood_dips_per_year": n_onsets / years,
        "dip_interval_days": interval, "vh_rise_db": rise,
        "ratio_median_db": q_ratio[1], "ratio_range_db": q_ratio[2] - q_ratio[0],
        "ndvi_peak": q_nd[1], "ndvi_trough": q_nd[0], "ndvi_amplitude": q_nd[1] - q_nd[0],
        "ndvi_seasons_per_year": np.where(observed, n_seasons / years, np.nan),
        "ndvi_season_length": np.where(observed, length, np.nan),
    }
    return np.column_stack([columns[name] for name in FEATURE_NAMES]).astype(np.float32)


def ndvi_source(cube: xr.Dataset) -> str:
    """The cube's best NDVI variable: ``ndvi_smooth``, else ``ndvi_fused``, else raw ``ndvi``."""
    for name in (NDVI_SMOOTH, NDVI_FUSED):
        if name in cube:
            return name
    return NDVI


def fill_ndvi(ndvi: np.ndarray, times_days: np.ndarray, *, lam: float,
              bad_periods: np.ndarray | None = None) -> np.ndarray:
    """Gap-fill raw NDVI ``(N, T)``: linear through gaps, then a light Whittaker smoothing.

    Args:
        ndvi: Observed NDVI, NaN where missing.
        times_days: Period centres in days.
        lam: Whittaker strength.
        bad_periods: ``(T,)`` bool, periods to treat as missing (e.g. all-zero ones).

    Returns:
        ``(N, T)`` float32 gap-free NDVI (NaN rows for pixels never observed).
    """
    values = np.asarray(ndvi, dtype=np.float32)
    if bad_periods is not None and bad_periods.any():
        values = np.where(bad_periods[None, :], np.nan, values)
    filled = linear_fill(values, times_days)
    ok = np.isfinite(filled).all(axis=1)
    out = np.full(filled.shape, np.nan, dtype=np.float32)
    if ok.any():
        out[ok] = whittaker(filled[ok], times_days, lam=lam)
    return out


def zero_periods(ndvi: xr.DataArray) -> np.ndarray:
    """``(T,)`` bool: periods whose observed NDVI is all exactly zero (an export fault)."""
    other = [d for d in ndvi.dims if d != TIME]
    valid = np.isfinite(ndvi)
    n_valid = valid.sum(dim=other)
    nonzero = (valid & (ndvi != 0)).sum(dim=other)
    return np.asarray(((n_valid > 0) & (nonzero == 0)).values)


def paddy_features(cube: xr.Dataset, *, config: FeatureConfig = FeatureConfig()) -> xr.DataArray:
    """Compute the paddy features of every pixel of a cube.

    Uses ``ndvi_smooth`` or ``ndvi_fused`` when the cube has them, otherwise fills ``ndvi``
    itself (all-zero periods treated as missing).

    Args:
        cube: Cube with ``vv``, ``vh`` (linear) and an NDVI variable on ``(time, y, x)``.
        config: Feature options.

    Returns:
        ``(feature, y, x)`` float32 DataArray named ``paddy_features`` with the cube's grid.
    """
    missing = [v for v in (VV, VH) if v not in cube]
    if missing or (NDVI not in cube and NDVI_FUSED not in cube and NDVI_SMOOTH not in cube):
        raise CubeSchemaError(
            f"Paddy features need vv, vh and an NDVI variable; the cube has {sorted(cube.data_vars)}."
            " Load a cube with both Sentinel-1 and Sentinel-2 bands (fusecube synth / fetch)."
        )
    source = ndvi_source(cube)
    times = to_days(cube[TIME].values)
    n_t, ny, nx = cube.sizes[TIME], cube.sizes[Y], cube.sizes[X]
    bad = zero_periods(cube[NDVI]) if source == NDVI else None
    if bad is not None and bad.any():
        log.info("paddy features: NDVI periods %s are all zero, treated as missing",
                 np.flatnonzero(bad).tolist())
    if config.speckle_window is None:  # one window for the whole cube, from its central stripe
        centre = cube[[VV, VH]].isel({Y: slice(max(0, ny // 2 - 32), ny // 2 + 32)})
        centre = centre.transpose(*DIMS)
        enl = estimate_enl(np.asarray(centre[VH].values).reshape(n_t, -1).T)
        period = float(np.median(np.diff(times))) if times.size > 1 else 12.0
        window = speckle_window_for(enl, period, config)
        log.info("paddy features: speckle ENL ~%.2f, averaging %d period(s)", enl, window)
        config = dataclasses.replace(config, speckle_window=window)
    else:
        enl = float("nan")
    out = np.empty((len(FEATURE_NAMES), ny * nx), dtype=np.float32)
    # read whole stripes of on-disk chunks once (a lazy cube), compute in pixel batches
    chunks = cube[VV].chunksizes.get(Y) if cube[VV].chunks is not None else None
    stripe_rows = int(max(chunks)) if chunks else max(1, config.chunk_pixels // max(nx, 1))
    for y0 in range(0, ny, stripe_rows):
        part = cube[[VV, VH, source]].isel({Y: slice(y0, min(y0 + stripe_rows, ny))})
        part = part.transpose(*DIMS)
        flat = {name: np.asarray(part[name].values).reshape(n_t, -1).T for name in (VV, VH, source)}
        base = y0 * nx
        for p0 in range(0, flat[VV].shape[0], config.chunk_pixels):
            sl = slice(p0, min(p0 + config.chunk_pixels, flat[VV].shape[0]))
            nd = flat[source][sl]
            if source == NDVI:
                nd = fill_ndvi(nd, times, lam=config.ndvi_lam, bad_periods=bad)
            out[:, base + sl.start:base + sl.stop] = features_array(
                flat[VV][sl], flat[VH][sl], nd, times, config).T
    return xr.DataArray(
        out.reshape(len(FEATURE_NAMES), ny, nx), dims=(FEATURE, Y, X),
        coords={FEATURE: list(FEATURE_NAMES), Y: cube[Y], X: cube[X]}, name="paddy_features",
        attrs={"long_name": "Paddy detection features", "speckle_window": config.speckle_window,
               "enl_estimate": enl, "description": "; ".join(
            f"{k}: {v}" for k, v in FEATURE_DOCS.items())})
