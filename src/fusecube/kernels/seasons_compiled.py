"""Compiled season-detection kernel (numba): one pass per series, no Python loop over pixels.

The numpy kernel in :mod:`fusecube.kernels.seasons` is vectorised over pixels but still walks every
time step and every group of candidate seasons with a dozen whole-array operations; for a
62-step series that is ~20 µs per pixel, most of it in temporaries. This module does the
same work in a compiled loop over series (zigzag turning points, then each trough-peak-trough
candidate measured on its own stretch of the curve) at about 1 µs per pixel.

It computes exactly what :func:`fusecube.kernels.seasons.detect_seasons` with ``engine="numpy"``
computes (tests compare the two on thousands of curves); that function documents the
definitions. Only plain arrays cross the boundary: ``(N, T)`` curves in, a ``(N, S, K)``
table of metrics out, ``K`` in the order of :data:`fusecube.kernels.seasons.SEASON_METRICS`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

PEAK, TROUGH = 1, -1
N_METRICS = 12  # planting, sos, pos, eos, harvest, length, base, peak, amplitude, integral,
# greenup_rate, senescence_rate: the order of fusecube.kernels.seasons.SEASON_METRICS


@njit(cache=True, nogil=True, error_model="numpy")
def _zigzag(y32: np.ndarray, min_amp: np.float32, ev_idx: np.ndarray, ev_kind: np.ndarray) -> int:
    """Alternating troughs/peaks of one float32 series (see ``seasons.turning_points``)."""
    n_t = y32.size
    cap = ev_idx.size
    count = 0
    state = 0
    cmax = y32[0]
    cmin = y32[0]
    imax = 0
    imin = 0
    for i in range(1, n_t):
        v = y32[i]
        if state >= 0 and v > cmax:
            cmax = v
            imax = i
        if state <= 0 and v < cmin:
            cmin = v
            imin = i
        peak_done = state >= 0 and np.float32(cmax - v) >= min_amp and imax < i
        trough_done = (state <= 0 and not peak_done and np.float32(v - cmin) >= min_amp
                       and imin < i)
        if peak_done:
            if count < cap:
                ev_idx[count] = imax
                ev_kind[count] = PEAK
                count += 1
            state = -1
            cmin = v
            imin = i
        elif trough_done:
            if count < cap:
                ev_idx[count] = imin
                ev_kind[count] = TROUGH
                count += 1
            state = 1
            cmax = v
            imax = i
    if state == -1 and count < cap:
        ev_idx[count] = imin
        ev_kind[count] = TROUGH
        count += 1
    return count


@njit(cache=True, nogil=True, error_model="numpy")
def _steepest(y: np.ndarray, t: np.ndarray, inv_dt: np.ndarray, lo: int, hi: int,
              sign: float) -> tuple:
    """Largest ``sign * slope`` over segments ``lo..hi-1`` and its parabola-refined time.

    ``inv_dt`` holds ``1 / (t[j+1] - t[j])`` (shared by every series: a product, not a
    division, per segment). Returns ``(best, when)``; ``(-inf, nan)`` when the range is empty.
    """
    best = -np.inf
    k = -1
    for j in range(lo, hi):
        s = sign * (y[j + 1] - y[j]) * inv_dt[j]
        if s > best:
            best = s
            k = j
    if k < 0:
        return -np.inf, np.nan
    s1 = best
    s0 = s1
    s2 = s1
    if k - 1 >= lo and k + 1 < hi:  # both neighbours are candidate segments
        s0 = sign * (y[k] - y[k - 1]) * inv_dt[k - 1]
        s2 = sign * (y[k + 2] - y[k + 1]) * inv_dt[k + 1]
    curv = s0 - 2.0 * s1 + s2
    shift = 0.0
    if curv < -1e-15:
        shift = min(max(0.5 * (s0 - s2) / curv, -0.5), 0.5)
    t1 = 0.5 * (t[k + 1] + t[k])
    if shift > 0.0:
        step = 0.5 * (t[k + 2] + t[k + 1]) - t1
    elif shift < 0.0:
        step = t1 - 0.5 * (t[k] + t[k - 1])
    else:
        step = 0.0
    return best, t1 + shift * step


@njit(cache=True, nogil=True, error_model="numpy")
def _crossing(y: np.ndarray, t: np.ndarray, a: int, b: int, level: float) -> float:
    """Time where the segment ``a``-``b`` crosses ``level``, linearly interpolated."""
    ya = y[a]
    dy = y[b] - ya
    frac = 0.0
    if abs(dy) > 1e-12:
        frac = min(max((level - ya) / dy, 0.0), 1.0)
    return t[a] + frac * (t[b] - t[a])


@njit(cache=True, nogil=True, error_model="numpy")
def _area_between(start: float, end: float, y: np.ndarray, t: np.ndarray, inv_dt: np.ndarray,
                  left: int, right: int, base: float) -> float:
    """∫ max(y - base, 0) dt from ``start`` to ``end`` (``start <= end``), in one pass.

    On the piecewise-linear curve between ``left`` and ``right``; the partial segments at
    both ends count exactly.
    """
    area = 0.0
    at_start = 0.0
    found = False
    for j in range(left, right):
        g0 = max(y[j] - base, 0.0)
        g1 = max(y[j + 1] - base, 0.0)
        last = j + 1 == right
        if not found and (start < t[j + 1] or last):
            part = max(start - t[j], 0.0)
            at_start = area + 0.5 * (g0 + g0 + (g1 - g0) * part * inv_dt[j]) * part
            found = True
        if end < t[j + 1] or last:
            part = max(end - t[j], 0.0)
            return area + 0.5 * (g0 + g0 + (g1 - g0) * part * inv_dt[j]) * part - at_start
        area += 0.5 * (g0 + g1) * (t[j + 1] - t[j])
    return np.nan


@njit(cache=True, nogil=True, error_model="numpy")
def _vertex(y: np.ndarray, t: np.ndarray, index: int) -> float:
    """Time of the extreme at ``index`` refined by a parabola through its neighbours."""
    n_t = y.size
    if index < 1 or index > n_t - 2:
        return t[index]
    y0 = y[index - 1]
    y1 = y[index]
    y2 = y[index + 1]
    curv = y0 - 2.0 * y1 + y2
    shift = 0.0
    if abs(curv) > 1e-12:
        shift = min(max(0.5 * (y0 - y2) / curv, -0.5), 0.5)
    if shift >= 0:
        step = t[index + 1] - t[index]
    else:
        step = t[index] - t[index - 1]
    return t[index] + shift * step


@njit(cache=True, nogil=True, error_model="numpy")
def _measure(y, t, inv_dt, left, peak, right, sos_fraction, eos_fraction, tail_days, derivative,
             min_length, max_length, min_peak, min_amp, out):
    """Metrics of one trough-peak-trough candidate into ``out`` (K,); True if plausible."""
    y_left = y[left]
    y_peak = y[peak]
    halfway = y_peak - 0.5 * (y_peak - y[right])
    t_half = t[left]
    for i in range(peak, right + 1):
        if y[i] <= halfway:
            t_half = t[i]
            break
    # the right base: lowest value within tail_days after the curve fell halfway
    ir = left
    lowest = np.inf
    for i in range(peak, right + 1):
        if t[i] <= t_half + tail_days and y[i] < lowest:
            lowest = y[i]
            ir = i
    y_right = y[ir]
    base = 0.5 * (y_left + y_right)
    amp = y_peak - base
    greenup, t_greenup = _steepest(y, t, inv_dt, left, peak, 1.0)
    senescence, t_senescence = _steepest(y, t, inv_dt, peak, ir, -1.0)
    if derivative:
        sos = t_greenup
        eos = t_senescence
    else:
        level = y_left + sos_fraction * (y_peak - y_left)
        k = left
        for i in range(left, peak + 1):
            if y[i] >= level:
                k = i
                break
        sos = _crossing(y, t, max(k - 1, left), k, level)
        level = y_right + eos_fraction * (y_peak - y_right)
        k = peak
        for i in range(ir, peak - 1, -1):
            if y[i] >= level:
                k = i
                break
        eos = _crossing(y, t, k, k + 1, level)
    length = eos - sos
    t_peak = t[peak]
    plausible = (length >= min_length and length <= max_length and y_peak >= min_peak
                 and y_peak <= 1.0 and base >= -1.0 and amp >= min_amp
                 and math.isfinite(sos) and math.isfinite(eos) and sos < t_peak
                 and t_peak < eos and greenup > 0 and senescence > 0)
    if not plausible:
        return False
    planting = _vertex(y, t, left)
    harvest = t_senescence if math.isfinite(senescence) else np.nan
    out[0] = planting if planting <= sos else np.nan
    out[1] = sos
    out[2] = t_peak
    out[3] = eos
    out[4] = harvest if harvest >= t_peak else np.nan
    out[5] = length
    out[6] = base
    out[7] = y_peak
    out[8] = amp
    out[9] = _area_between(sos, eos, y, t, inv_dt, left, right, base)
    out[10] = greenup
    out[11] = senescence
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def _detect(values, times, min_amp, sos_fraction, eos_fraction, tail_days, derivative,
            min_length, max_length, min_peak, table, count, dropped, n_dropped):
    """Fill ``table`` (N, S, K) and ``count`` (N,); seasons beyond S are counted, not kept.

    ``dropped`` (N, D) receives the peak time of each candidate the rules rejected (first D;
    D may be 0), ``n_dropped`` (N,) their number.
    """
    n, n_t = values.shape
    n_slots = table.shape[1]
    cap = n_t // 2 + 2
    ev_idx = np.empty(cap, np.int64)
    ev_kind = np.empty(cap, np.int8)
    y32 = np.empty(n_t, np.float32)
    scratch = np.empty(N_METRICS)
    inv_dt = 1.0 / (times[1:] - times[:-1])
    min_amp32 = np.float32(min_amp)
    for p in range(n):
        y = values[p]
        for i in range(n_t):
            y32[i] = np.float32(y[i])
        n_ev = _zigzag(y32, min_amp32, ev_idx, ev_kind)
        e = 1 if n_ev > 0 and ev_kind[0] == TROUGH else 2  # the first peak event
        while e + 1 < n_ev:
            if _measure(y, times, inv_dt, ev_idx[e - 1], ev_idx[e], ev_idx[e + 1], sos_fraction,
                        eos_fraction, tail_days, derivative, min_length, max_length, min_peak,
                        min_amp, scratch):
                if count[p] < n_slots:
                    table[p, count[p], :] = scratch
                count[p] += 1
            elif dropped.shape[1] > 0:
                if n_dropped[p] < dropped.shape[1]:
                    dropped[p, n_dropped[p]] = times[ev_idx[e]]
                n_dropped[p] += 1
            e += 2


def detect_rows(values: np.ndarray, times: np.ndarray, *, min_amp: float, sos_fraction: float,
                eos_fraction: float, tail_days: float, derivative: bool, min_length: float,
                max_length: float, min_peak: float, slots: int = 8,
                dropped: np.ndarray | None = None) -> np.ndarray:
    """Seasons of every row of ``values`` ``(N, T)`` float64 (C-contiguous).

    The rules (``min_amp`` .. ``min_peak``) are those of
    :class:`fusecube.kernels.seasons.SeasonRules`; ``dropped``, an optional ``(N, D)`` float64
    array, receives the peak times of the candidates the rules rejected (NaN-padded; the
    first ``D`` per row).

    Returns:
        ``(N, S, K)`` float64, NaN-padded: plausible seasons in time order, ``S`` the largest
        count of any row (one series' seasons are contiguous: the kernel writes them as it
        finds them). Starts with ``slots`` per row and redoes the batch with more in the
        rare case a row has more seasons than that.
    """
    n = values.shape[0]
    args = (min_amp, sos_fraction, eos_fraction, tail_days, derivative, min_length, max_length,
            min_peak)
    sink = np.empty((n, 0)) if dropped is None else dropped
    while True:
        table = np.full((n, slots, N_METRICS), np.nan)
        count = np.zeros(n, np.int64)
        sink[:] = np.nan
        _detect(values, times, *args, table, count, sink, np.zeros(n, np.int64))
        most = int(count.max(initial=0))
        if most <= slots:
            return table[:, :most, :]
        slots = most
