"""Season detection kernel: turning points with an amplitude threshold, then SOS/POS/EOS.

This module holds the rules and the definitions, as a numpy kernel over ``(n_pixels,
n_times)`` arrays (its loops run over time steps or groups of candidate seasons, never over
pixels): the readable reference. :func:`detect_seasons` runs the compiled kernel of
:mod:`fusecube.kernels.seasons_compiled` by default, which computes the same values ~10x faster.
In the numpy kernel every candidate season (any pixel, any slot) is measured on a window
gathered from its left trough to its right trough (a dozen steps instead of the whole
series), all candidates of similar span at once. The same detection defines the synthetic
scene's true seasons (on the noise-free 2-day curve), so truth and detection share one
definition.

Every value returned is physically plausible or NaN: a season whose peak is above 1, whose
length is outside the rules, or whose dates are out of order is dropped as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from fusecube.errors import ConfigError

PEAK, TROUGH = 1, -1

#: Per-season metrics returned by :func:`detect_seasons`.
SEASON_METRICS = (
    "planting", "sos", "pos", "eos", "harvest", "length", "base_value", "peak_value", "amplitude",
    "integral", "greenup_rate", "senescence_rate",
)
#: The metrics of :data:`SEASON_METRICS` that are dates.
DATE_METRICS = SEASON_METRICS[:5]

SosMethod = Literal["amplitude", "derivative"]
Engine = Literal["compiled", "numpy"]


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
    method: SosMethod = "amplitude"
    """How SOS/EOS are placed: ``amplitude`` (crossing of ``sos_fraction``/``eos_fraction`` of
    the amplitude) or ``derivative`` (steepest green-up / steepest senescence)."""

    def __post_init__(self) -> None:
        if self.method not in ("amplitude", "derivative"):
            raise ConfigError(
                f"Unknown SOS/EOS method {self.method!r}; use amplitude or derivative.")
        for name in ("sos_fraction", "eos_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"{name} must be within (0, 1); got {getattr(self, name)}.")
        if not 0 < self.min_length < self.max_length:
            raise ConfigError(f"Need 0 < min_length < max_length; got {self.min_length}, "
                              f"{self.max_length}.")
        if not self.min_amplitude > 0:
            raise ConfigError(f"min_amplitude must be > 0; got {self.min_amplitude}.")


def turning_points(
    values: np.ndarray, min_amplitude: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    """Time where the curve crosses ``level`` between indices lo..hi, linearly interpolated.

    ``values`` and ``times`` are ``(N, W)`` (a window per pixel); ``lo``/``hi`` are ``(N,)``.
    """
    n, n_w = values.shape
    widx = np.arange(n_w)[None, :]
    window = (widx >= lo[:, None]) & (widx <= hi[:, None]) & (values >= level[:, None])
    if rising:
        k = np.argmax(window, axis=1)  # first index at/above level (> lo since y[lo] < level)
        a, b = np.maximum(k - 1, 0), k
    else:
        k = n_w - 1 - np.argmax(window[:, ::-1], axis=1)  # last index at/above level
        a, b = k, np.minimum(k + 1, n_w - 1)
    rows = np.arange(n)
    ya, yb = values[rows, a], values[rows, b]
    ta, tb = times[rows, a], times[rows, b]
    dy = yb - ya
    frac = np.where(np.abs(dy) > 1e-12, (level - ya) / np.where(np.abs(dy) > 1e-12, dy, 1.0), 0.0)
    return ta + np.clip(frac, 0.0, 1.0) * (tb - ta)


def _steepest(
    slope: np.ndarray, mid: np.ndarray, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Largest ``slope`` among ``allowed`` segments and its time, refined by a parabola.

    Args:
        slope: ``(N, W-1)`` segment slopes.
        mid: ``(N, W-1)`` segment mid times.
        allowed: ``(N, W-1)`` segments to consider.

    Returns:
        ``(largest slope, its time)`` per pixel (``-inf``/NaN where nothing is allowed).
    """
    n, n_s = slope.shape
    masked = np.where(allowed, slope, -np.inf)
    k = np.argmax(masked, axis=1)
    rows = np.arange(n)
    best = masked[rows, k]
    km, kp = np.maximum(k - 1, 0), np.minimum(k + 1, n_s - 1)
    s1 = np.where(np.isfinite(best), best, 0.0)
    s0, s2 = masked[rows, km], masked[rows, kp]
    inner = (k > 0) & (k < n_s - 1) & np.isfinite(s0) & np.isfinite(s2) & np.isfinite(best)
    s0, s2 = np.where(inner, s0, s1), np.where(inner, s2, s1)
    curv = s0 - 2 * s1 + s2
    shift = np.where(curv < -1e-15, 0.5 * (s0 - s2) / np.where(curv < -1e-15, curv, -1.0), 0.0)
    shift = np.clip(shift, -0.5, 0.5)
    t1 = mid[rows, k]
    step = np.where(shift >= 0, mid[rows, kp] - t1, t1 - mid[rows, km])
    when = np.where(np.isfinite(best), t1 + shift * step, np.nan)
    return best, when


def detect_seasons(
    values: np.ndarray, times: np.ndarray, rules: SeasonRules = SeasonRules(),
    *, engine: Engine = "compiled", dropped: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Detect growing seasons and their metrics on gap-free curves.

    Args:
        values: ``(N, T)`` smoothed, gap-free NDVI.
        times: ``(T,)`` sample times in days since an epoch.
        rules: Thresholds and plausibility rules.
        engine: ``compiled`` (default: :mod:`fusecube.kernels.seasons_compiled`, about 1 µs per
            62-step pixel) or ``numpy`` (this module's array kernel, the readable reference
            the compiled one is tested against).
        dropped: Optional ``(N, D)`` float64 array (compiled engine only): filled with the
            peak times of the candidates the plausibility rules rejected, NaN-padded.

    Returns:
        A dict of ``(N, S)`` float arrays, one per name in :data:`SEASON_METRICS` (times in the
        same days as ``times``, rates in NDVI/day, integral in NDVI·days), NaN where a slot has
        no season; seasons are in time order and left-packed.
    """
    y = np.asarray(values, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    if engine == "compiled":
        return _detect_compiled(y, t, rules, dropped)
    if dropped is not None:
        raise ConfigError("dropped= needs the compiled season engine.")
    if engine != "numpy":
        raise ConfigError(f"Unknown season engine {engine!r}; use compiled or numpy.")
    n, n_t = y.shape
    ev_idx, ev_kind, count = turning_points(y, rules.min_amplitude)
    first_peak = np.where(ev_kind[:, 0] == TROUGH, 1, 2)
    n_slots = max(int(((count - first_peak) // 2).max(initial=0)), 0)
    out = {name: np.full((n, n_slots), np.nan) for name in SEASON_METRICS}
    # every (pixel, slot) with a complete trough-peak-trough, all handled in one pass
    peak_event = first_peak[:, None] + 2 * np.arange(n_slots)[None, :]
    pix, slot = np.nonzero(peak_event + 1 < count[:, None])
    if pix.size:
        event = peak_event[pix, slot]
        left, peak, right = (ev_idx[pix, event + k].astype(np.int64) for k in (-1, 0, 1))
        # windows are as wide as their longest member: group seasons of similar span so a
        # few long fallows do not widen every window
        span = right - left
        edges = np.unique(np.quantile(span, [0.0, 0.5, 0.9, 1.0]).astype(np.int64))
        group = np.searchsorted(edges[1:-1], span, side="left")
        for g in np.unique(group):
            sel = np.flatnonzero(group == g)
            metrics, plausible = _season_metrics(y, t, pix[sel], left[sel], peak[sel],
                                                 right[sel], rules)
            keep = sel[plausible]
            for name, value in metrics.items():
                out[name][pix[keep], slot[keep]] = value[plausible]
    return _left_pack(out)


def _detect_compiled(y: np.ndarray, t: np.ndarray, rules: SeasonRules,
                     dropped: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """:func:`detect_seasons` through the compiled kernel (same definitions, same output)."""
    from fusecube.kernels.seasons_compiled import detect_rows

    if y.ndim != 2 or t.shape != (y.shape[1],):
        raise ConfigError(f"Season detection needs (pixels, times) values and (times,) times; "
                          f"got {y.shape} and {t.shape}.")
    table = detect_rows(np.ascontiguousarray(y), np.ascontiguousarray(t),
                        min_amp=rules.min_amplitude, sos_fraction=rules.sos_fraction,
                        eos_fraction=rules.eos_fraction, tail_days=rules.tail_days,
                        derivative=rules.method == "derivative", min_length=rules.min_length,
                        max_length=rules.max_length, min_peak=rules.min_peak, dropped=dropped)
    return {name: table[:, :, k] for k, name in enumerate(SEASON_METRICS)}


def _season_metrics(
    y: np.ndarray, t: np.ndarray, pix: np.ndarray, left: np.ndarray, peak: np.ndarray,
    right: np.ndarray, rules: SeasonRules,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Metrics of M candidate seasons (pixel ``pix``, trough/peak/trough time indices).

    Returns:
        ``(metrics, plausible)``: ``(M,)`` arrays per name of :data:`SEASON_METRICS`, and
        which candidates pass the rules.
    """
    n_t = y.shape[1]
    m = pix.size
    rows = np.arange(m)
    # gather the window left trough .. right trough: all later work is (M, W), W << T
    span = right - left
    n_w = int(span.max()) + 1
    widx = np.arange(n_w)[None, :]
    gidx = np.minimum(left[:, None] + widx, n_t - 1)
    inside = widx <= span[:, None]
    yw = y[pix[:, None], gidx]
    tw = t[gidx]
    pk = peak - left
    y_left, y_peak = yw[:, 0], yw[rows, pk]
    # the right base is where the decline flattens (post-harvest stubble), not the next
    # flooded trough months later, so a long fallow does not stretch the season
    halfway = y_peak - 0.5 * (y_peak - yw[rows, span])
    after = (widx >= pk[:, None]) & inside
    t_half = tw[rows, np.argmax(after & (yw <= halfway[:, None]), axis=1)]
    tail = after & (tw <= t_half[:, None] + rules.tail_days)
    right_w = np.argmin(np.where(tail, yw, np.inf), axis=1)
    y_right = yw[rows, right_w]
    base = 0.5 * (y_left + y_right)
    amp = y_peak - base
    dt = np.diff(tw, axis=1)
    seg_ok = dt > 0
    slope = np.diff(yw, axis=1) / np.where(seg_ok, dt, np.inf)  # 0 on padding segments
    mid = 0.5 * (tw[:, 1:] + tw[:, :-1])
    up = (widx[:, :-1] < pk[:, None]) & seg_ok
    down = (widx[:, :-1] >= pk[:, None]) & (widx[:, :-1] < right_w[:, None]) & seg_ok
    greenup, t_greenup = _steepest(slope, mid, up)
    senescence, t_senescence = _steepest(-slope, mid, down)
    if rules.method == "derivative":
        sos, eos = t_greenup, t_senescence
    else:
        zero = np.zeros(m, dtype=np.int64)
        sos = _crossing(yw, tw, zero, pk, y_left + rules.sos_fraction * (y_peak - y_left), True)
        eos = _crossing(yw, tw, pk, right_w, y_right + rules.eos_fraction * (y_peak - y_right),
                        False)
    integral = _integral_above(yw, tw, sos, eos, base, t, left)
    length = eos - sos
    planting = _vertex(y, t, left, pix)
    harvest = np.where(np.isfinite(senescence), t_senescence, np.nan)
    t_peak = t[peak]
    plausible = (
        (length >= rules.min_length) & (length <= rules.max_length)
        & (y_peak >= rules.min_peak) & (y_peak <= 1.0) & (base >= -1.0)
        & (amp >= rules.min_amplitude) & np.isfinite(sos) & np.isfinite(eos)
        & (sos < t_peak) & (t_peak < eos) & (greenup > 0) & (senescence > 0)
    )
    metrics = {
        "planting": np.where(planting <= sos, planting, np.nan),
        "sos": sos, "pos": t_peak, "eos": eos,
        "harvest": np.where(harvest >= t_peak, harvest, np.nan),
        "length": length, "base_value": base, "peak_value": y_peak, "amplitude": amp,
        "integral": integral, "greenup_rate": greenup, "senescence_rate": senescence,
    }
    return metrics, plausible


def _integral_above(yw: np.ndarray, tw: np.ndarray, start: np.ndarray, end: np.ndarray,
                    base: np.ndarray, times: np.ndarray, left: np.ndarray) -> np.ndarray:
    """∫ max(y - base, 0) dt from ``start`` to ``end`` on the piecewise-linear curve.

    A cumulative trapezoid along the window, read at ``start`` and ``end`` with the partial
    segment interpolated, so the partial segments at SOS and EOS count exactly. ``times`` is
    the series' time axis and ``left`` each window's first index into it.
    """
    m, n_w = yw.shape
    rows = np.arange(m)
    above = np.maximum(yw - base[:, None], 0.0)
    dt = np.diff(tw, axis=1)
    cumulative = np.zeros((m, n_w))
    np.cumsum(0.5 * (above[:, 1:] + above[:, :-1]) * dt, axis=1, out=cumulative[:, 1:])

    def area_to(x: np.ndarray) -> np.ndarray:
        # the segment holding x: one search on the series' time axis, shifted to the window
        # (a row-wise comparison over (M, W) costs far more)
        k = np.clip(np.searchsorted(times, x, side="right") - 1 - left, 0, n_w - 2)
        t0, g0, g1, step = tw[rows, k], above[rows, k], above[rows, k + 1], dt[rows, k]
        part = np.clip(x - t0, 0.0, None)
        g_x = g0 + (g1 - g0) * part / np.where(step > 0, step, np.inf)
        return cumulative[rows, k] + 0.5 * (g0 + g_x) * part

    if n_w < 2:
        return np.zeros(m)
    with np.errstate(invalid="ignore"):  # NaN start/end: the season is dropped anyway
        return area_to(end) - area_to(start)


def _vertex(values: np.ndarray, times: np.ndarray, index: np.ndarray,
            rows: np.ndarray | None = None) -> np.ndarray:
    """Time of the extreme near ``index`` refined by a parabola through its two neighbours.

    For rice the trough before green-up is the flooded field: its time marks transplanting.
    ``rows`` picks the series of each index (default: one index per row of ``values``).
    """
    n_t = values.shape[1]
    rows = np.arange(values.shape[0]) if rows is None else rows
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
