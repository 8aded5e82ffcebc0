"""Season detection kernel: turning points with an amplitude threshold, then SOS/POS/EOS.

Pure numpy over ``(n_pixels, n_times)`` arrays; the loops run over time steps or season
slots, never over pixels. The same kernel defines the synthetic scene's true seasons (on
the noise-free daily curve), so truth and detection share one definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PEAK, TROUGH = 1, -1

#: Per-season metrics returned by :func:`detect_seasons`.
SEASON_METRICS = (
    "planting", "sos", "pos", "eos", "harvest", "length", "base_value", "peak_value", "amplitude",
    "integral", "greenup_rate", "senescence_rate",
)


@dataclass(frozen=True)
class SeasonRules:
    """Rules a season must pass; defaults suit transplanted rice on a 5-12 day series."""

    min_amplitude: float = 0.15
    """Smallest rise and fall (NDVI) that separates two seasons (zigzag threshold)."""
    sos_fraction: float = 0.2
    """Start of season where the curve has risen by this fraction of the seasonal amplitude
    above the left minimum (TIMESAT's seasonal-amplitude method)."""
    eos_fraction: float = 0.2
    """End of season where the curve has fallen to this fraction above the right minimum."""
    min_length: float = 40.0
    """Shortest plausible season (days, SOS to EOS)."""
    max_length: float = 200.0
    """Longest plausible season (days)."""
    min_peak: float = 0.3
    """Smallest plausible peak NDVI of a crop season."""
    tail_days: float = 20.0
    """The right base is the lowest value within this many days after the curve fell halfway
    from the peak: the post-harvest level, not the next flooding months later."""


def turning_points(values: np.ndarray, min_amplitude: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alternating troughs and peaks that differ by at least ``min_amplitude`` (a zigzag).

    A peak is confirmed once the curve falls ``min_amplitude`` below it, a trough once the
    curve rises ``min_amplitude`` above it. A trough still pending at the end of the series
    is kept (the curve already fell enough); a pending peak is not (it may still be rising).

    Args:
        values: ``(N, T)`` gap-free series (NaN rows give no events).
        min_amplitude: The zigzag threshold.

    Returns:
        ``(index (N, M), kind (N, M), count (N,))``: time index and kind (+1 peak, -1 trough)
        of each event in time order; slots beyond ``count`` hold -1 / 0.
    """
    yt = np.ascontiguousarray(np.asarray(values, dtype=np.float32).T)
    n_t, n = yt.shape
    m = n_t // 2 + 2
    ev_idx = np.full((n, m), -1, dtype=np.int32)
    ev_kind = np.zeros((n, m), dtype=np.int8)
    count = np.zeros(n, dtype=np.int32)
    state = np.zeros(n, dtype=np.int8)
    cmax, cmin = yt[0].copy(), yt[0].copy()
    imax = np.zeros(n, dtype=np.int32)
    imin = np.zeros(n, dtype=np.int32)

    def record(mask: np.ndarray, index: np.ndarray, kind: int) -> None:
        rows = np.flatnonzero(mask & (count < m))
        ev_idx[rows, count[rows]] = index[rows]
        ev_kind[rows, count[rows]] = kind
        count[rows] += 1

    for i in range(1, n_t):
        v = yt[i]
        track_max = (state >= 0) & (v > cmax)
        track_min = (state <= 0) & (v < cmin)
        cmax = np.where(track_max, v, cmax)
        imax = np.where(track_max, i, imax)
        cmin = np.where(track_min, v, cmin)
        imin = np.where(track_min, i, imin)
        peak_done = (state >= 0) & (cmax - v >= min_amplitude) & (imax < i)
        trough_done = (state <= 0) & ~peak_done & (v - cmin >= min_amplitude) & (imin < i)
        record(peak_done, imax, PEAK)
        record(trough_done, imin, TROUGH)
        state = np.where(peak_done, -1, np.where(trough_done, 1, state)).astype(np.int8)
        cmin = np.where(peak_done, v, cmin)
        imin = np.where(peak_done, i, imin)
        cmax = np.where(trough_done, v, cmax)
        imax = np.where(trough_done, i, imax)
    record(state == -1, imin, TROUGH)
    return ev_idx, ev_kind, count


def _crossing(values, times, lo, hi, level, rising: bool) -> np.ndarray:
    """Time where the curve crosses ``level`` between indices lo..hi, linearly interpolated."""
    n, n_t = values.shape
    tidx = np.arange(n_t)[None, :]
    window = (tidx >= lo[:, None]) & (tidx <= hi[:, None]) & (values >= level[:, None])
    if rising:
        k = np.argmax(window, axis=1)  # first index at/above level (> lo since y[lo] < level)
        a, b = np.maximum(k - 1, 0), k
    else:
        k = n_t - 1 - np.argmax(window[:, ::-1], axis=1)  # last index at/above level
        a, b = k, np.minimum(k + 1, n_t - 1)
    rows = np.arange(n)
    ya, yb = values[rows, a], values[rows, b]
    dy = yb - ya
    frac = np.where(np.abs(dy) > 1e-12, (level - ya) / np.where(np.abs(dy) > 1e-12, dy, 1.0), 0.0)
    return times[a] + np.clip(frac, 0.0, 1.0) * (times[b] - times[a])


def detect_seasons(values: np.ndarray, times: np.ndarray, rules: SeasonRules = SeasonRules()) -> dict[str, np.ndarray]:
    """Detect growing seasons and their metrics on gap-free curves.

    Args:
        values: ``(N, T)`` smoothed, gap-free NDVI.
        times: ``(T,)`` sample times in days since an epoch.
        rules: Thresholds and plausibility rules.

    Returns:
        A dict of ``(N, S)`` float arrays, one per name in :data:`SEASON_METRICS` (times in the
        same days as ``times``, rates in NDVI/day, integral in NDVI·days), NaN where a slot has
        no season; seasons are in time order and left-packed.
    """
    y = np.asarray(values, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    n, n_t = y.shape
    ev_idx, ev_kind, count = turning_points(y, rules.min_amplitude)
    first_peak = np.where(ev_kind[:, 0] == TROUGH, 1, 2)
    n_slots = max(int(((count - first_peak) // 2).max(initial=0)), 0)
    rows = np.arange(n)
    out = {name: np.full((n, n_slots), np.nan) for name in SEASON_METRICS}
    slope = np.diff(y, axis=1) / np.diff(t)[None, :]
    tidx = np.arange(n_t)[None, :]
    for s in range(n_slots):
        p = first_peak + 2 * s
        ok = p + 1 < count
        if not ok.any():
            continue
        pc = np.minimum(p, ev_idx.shape[1] - 2)
        left, peak, right = (ev_idx[rows, pc - 1], ev_idx[rows, pc], ev_idx[rows, pc + 1])
        left, peak, right = (np.where(ok, v, 0) for v in (left, peak, right))
        y_left, y_peak = y[rows, left], y[rows, peak]
        # the right base is where the decline flattens (post-harvest stubble), not the next
        # flooded trough months later, so a long fallow does not stretch the season
        halfway = y_peak - 0.5 * (y_peak - y[rows, right])
        after = (tidx >= peak[:, None]) & (tidx <= right[:, None])
        t_half = t[np.argmax(after & (y <= halfway[:, None]), axis=1)]
        tail = after & (t[None, :] <= t_half[:, None] + rules.tail_days)
        right = np.argmin(np.where(tail, y, np.inf), axis=1)
        y_right = y[rows, right]
        base = 0.5 * (y_left + y_right)
        amp = y_peak - base
        sos = _crossing(y, t, left, peak, y_left + rules.sos_fraction * (y_peak - y_left), True)
        eos = _crossing(y, t, peak, right, y_right + rules.eos_fraction * (y_peak - y_right), False)
        in_season = (t[None, :] >= sos[:, None]) & (t[None, :] <= eos[:, None])
        above = np.where(in_season, np.maximum(y - base[:, None], 0.0), 0.0)
        integral = np.trapezoid(above, t, axis=1)
        up = (tidx[:, :-1] >= left[:, None]) & (tidx[:, :-1] < peak[:, None])
        down = (tidx[:, :-1] >= peak[:, None]) & (tidx[:, :-1] < right[:, None])
        greenup = np.where(up, slope, -np.inf).max(axis=1)
        senescence = np.where(down, -slope, -np.inf).max(axis=1)
        length = eos - sos
        plausible = (
            ok & (length >= rules.min_length) & (length <= rules.max_length)
            & (y_peak >= rules.min_peak) & (y_peak <= 1.0) & (amp >= rules.min_amplitude)
            & np.isfinite(sos) & np.isfinite(eos)
        )
        planting = _vertex(y, t, left)
        steepest = np.where(down, slope, np.inf).argmin(axis=1)
        harvest = 0.5 * (t[steepest] + t[np.minimum(steepest + 1, n_t - 1)])
        metrics = {
            "planting": planting, "sos": sos, "pos": t[peak], "eos": eos, "harvest": harvest, "length": length, "base_value": base,
            "peak_value": y_peak, "amplitude": amp, "integral": integral,
            "greenup_rate": greenup, "senescence_rate": senescence,
        }
        for name, value in metrics.items():
            out[name][:, s] = np.where(plausible, value, np.nan)
    return _left_pack(out)


def _vertex(values: np.ndarray, times: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Time of the extreme near ``index`` refined by a parabola through its two neighbours.

    For rice the trough before green-up is the flooded field: its time marks transplanting.
    """
    n, n_t = values.shape
    rows = np.arange(n)
    i = np.clip(index, 1, n_t - 2)
    y0, y1, y2 = values[rows, i - 1], values[rows, i], values[rows, i + 1]
    curvature = y0 - 2 * y1 + y2
    shift = np.where(np.abs(curvature) > 1e-12, 0.5 * (y0 - y2) / np.where(
        np.abs(curvature) > 1e-12, curvature, 1.0), 0.0)
    shift = np.clip(shift, -0.5, 0.5)
    step = np.where(shift >= 0, times[i + 1] - times[i], times[i] - times[i - 1])
    refined = times[i] + shift * step
    return np.where((index >= 1) & (index <= n_t - 2), refined, times[index])


def _left_pack(metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Move valid seasons to the first slots (dropping implausible ones), keep time order."""
    valid = np.isfinite(metrics["pos"])
    if valid.size == 0:
        return metrics
    order = np.argsort(~valid, axis=1, kind="stable")
    n_keep = max(int(valid.sum(axis=1).max(initial=0)), 0)
    return {k: np.take_along_axis(v, order, axis=1)[:, :n_keep] for k, v in metrics.items()}
