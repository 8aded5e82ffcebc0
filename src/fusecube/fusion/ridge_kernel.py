"""Compiled gap-fill of the ridge fusion's blend stage: features and prediction in one pass.

:func:`fusecube.fusion.ridge_features.blend_features` builds the blend features as ``(N, T)``
numpy arrays, which is what fitting needs (rows gathered at the hidden samples). Filling a
whole scene only needs their weighted sum at the missing samples; computing it per pixel in a
compiled loop (interpolation, distance to the nearest observation, the products) skips a
dozen full-size temporaries and is several times faster. The features and their order are
those of ``blend_features`` (a test checks that both give the same prediction).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fusecube.fusion.features import GAP_DAYS_SCALE

MAX_GAP = 2.0
"""Cap of the scaled distance to the nearest observation (as in ``blend_features``)."""


@njit(cache=True, nogil=True)
def blend_rows(ndvi, radar_ndvi, times, coef, intercept, out):
    """Fill the missing samples of ``(N, T)`` series with the blend stage's prediction.

    Args:
        ndvi: ``(N, T)`` float32 NDVI, NaN where missing.
        radar_ndvi: ``(N, T)`` float32 stage-1 radar NDVI.
        times: ``(T,)`` float64 sample times in days.
        coef: ``(11,)`` weights of the blend features, in ``blend_features`` order.
        intercept: The blend stage's constant.
        out: ``(N, T)`` float32 output: observations kept, the rest predicted and clipped to
            [-1, 1].
    """
    n, n_t = ndvi.shape
    prev = np.empty(n_t, np.int64)
    nxt = np.empty(n_t, np.int64)
    for p in range(n):
        count = 0
        total = 0.0
        last = -1
        for i in range(n_t):
            if np.isfinite(ndvi[p, i]):
                last = i
                count += 1
                total += ndvi[p, i]
            prev[i] = last
        following = -1
        for i in range(n_t - 1, -1, -1):
            if np.isfinite(ndvi[p, i]):
                following = i
            nxt[i] = following
        mean = total / count if count > 0 else 0.0
        for i in range(n_t):
            value = ndvi[p, i]
            if np.isfinite(value):
                out[p, i] = value
                continue
            radar = radar_ndvi[p, i]
            lo, hi = prev[i], nxt[i]
            if lo < 0 and hi < 0:  # never observed: no interpolation, the largest distance
                interp = 0.0
                resid = 0.0
                gap = MAX_GAP
            else:
                if lo < 0:
                    lo = hi
                if hi < 0:
                    hi = lo
                span = times[hi] - times[lo]
                frac = (times[i] - times[lo]) / span if span > 0 else 0.0
                interp = ndvi[p, lo] + frac * (ndvi[p, hi] - ndvi[p, lo])
                r_lo = ndvi[p, lo] - radar_ndvi[p, lo]
                resid = r_lo + frac * (ndvi[p, hi] - radar_ndvi[p, hi] - r_lo)
                days = np.inf
                if prev[i] >= 0:
                    days = times[i] - times[prev[i]]
                if nxt[i] >= 0:
                    days = min(days, times[nxt[i]] - times[i])
                gap = min(days / GAP_DAYS_SCALE, MAX_GAP)
            pred = (intercept + coef[0] * radar + coef[1] * interp + coef[2] * resid
                    + coef[3] * gap + coef[4] * gap * interp + coef[5] * gap * resid
                    + coef[6] * gap * radar + coef[7] * mean + coef[8] * mean * radar
                    + coef[9] * gap * gap + coef[10] * gap * gap * resid)
            out[p, i] = min(max(pred, -1.0), 1.0)


@njit(cache=True, nogil=True)
def radar_rows(vv_db, vh_db, edges, bins, table, calendar, coef, intercept, reach, out):
    """Stage-1 radar NDVI of ``(N, T)`` series: table lookup, lags and dot product in one pass.

    Args:
        vv_db: ``(N, T)`` float32 box-filtered VV in dB.
        vh_db: ``(N, T)`` float32 box-filtered VH in dB.
        edges: ``(4,)`` the table's fitted ``(low_vv, high_vv, low_vh, high_vh)``.
        bins: Bins per axis of the table.
        table: ``(bins * bins,)`` NDVI per bin.
        calendar: ``(2, T)`` day-of-year sin and cos.
        coef: Weights in ``radar_features`` order: table, VV, VH, VH-VV at each lag
            ``-reach..reach``, then sin, cos, table·sin, table·cos.
        intercept: The radar stage's constant.
        reach: Largest lag.
        out: ``(N, T)`` float32 output.
    """
    n, n_t = vv_db.shape
    taps = 2 * reach + 1
    scale_v = bins / (edges[1] - edges[0])
    scale_h = bins / (edges[3] - edges[2])
    looked_up = np.empty(n_t)
    for p in range(n):
        for i in range(n_t):
            vv = vv_db[p, i] if np.isfinite(vv_db[p, i]) else edges[0]
            vh = vh_db[p, i] if np.isfinite(vh_db[p, i]) else edges[2]
            iv = min(max(int((vv - edges[0]) * scale_v), 0), bins - 1)
            ih = min(max(int((vh - edges[2]) * scale_h), 0), bins - 1)
            looked_up[i] = table[iv * bins + ih]
        for i in range(n_t):
            acc = intercept
            for k in range(taps):
                at = min(max(i + k - reach, 0), n_t - 1)
                vv = vv_db[p, at]
                vh = vh_db[p, at]
                acc += (coef[k] * looked_up[at] + coef[taps + k] * vv
                        + coef[2 * taps + k] * vh + coef[3 * taps + k] * (vh - vv))
            here = looked_up[i]
            base = 4 * taps
            acc += (coef[base] * calendar[0, i] + coef[base + 1] * calendar[1, i]
                    + coef[base + 2] * here * calendar[0, i] + coef[base + 3] * here * calendar[1, i])
            out[p, i] = acc
