"""Compiled rice curves (numba): the hot loop of synthesis, one pixel and one season at a time.

The curves' sigmoid is the logistic cut to exactly 0 below ``-SATURATION`` and to exactly 1
above it (it differs from the smooth logistic by less than 2.1e-9, far below float32's
resolution of NDVI), so a season's sigmoid pair adds exactly zero outside the days where one
of its two sigmoids is still moving: each pixel costs its own seasons' days, and ``exp`` runs
only inside them. The arithmetic is the formula's, in its order
(:func:`fusecube.sources.synthetic.curves.paddy_curves` writes it down).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: |argument| beyond which a sigmoid is exactly 0 or 1.
SATURATION = 20.0


@njit(cache=True, nogil=True, inline="always")
def _sig(t, centre, width):
    x = (t - centre) / width
    if x <= -SATURATION:
        return 0.0
    if x >= SATURATION:
        return 1.0
    return 1.0 / (1.0 + math.exp(-x))


@njit(cache=True, nogil=True, inline="always")
def _pair_days(days, centre_a, width_a, centre_b, width_b):
    """Index span of the sorted ``days`` where ``sig_a - sig_b`` can be non-zero."""
    lo = min(centre_a - SATURATION * width_a, centre_b - SATURATION * width_b)
    hi = max(centre_a + SATURATION * width_a, centre_b + SATURATION * width_b)
    return np.searchsorted(days, lo, "left"), np.searchsorted(days, hi, "right")


@njit(cache=True, nogil=True)
def paddy_curves_kernel(transplant, harvest, amplitude, fallow, flooded, days, ndvi, flood):
    """Fill ``ndvi`` and ``flood`` ``(N, M)`` from calendars ``(N, K)`` at sorted ``days`` ``(M,)``."""
    n, n_seasons = transplant.shape
    m = days.size
    crop = np.empty(m)
    for i in range(n):
        f = flood[i]
        f[:] = 0.0
        crop[:] = 0.0
        for k in range(n_seasons):
            tp = transplant[i, k]
            if not math.isfinite(tp):
                continue
            hv = harvest[i, k]
            a, b = _pair_days(days, tp - 18.0, 3.0, tp + 22.0, 4.0)
            for j in range(a, b):
                f[j] += _sig(days[j], tp - 18.0, 3.0) - _sig(days[j], tp + 22.0, 4.0)
            a, b = _pair_days(days, tp + 38.0, 7.0, hv - 8.0, 4.0)
            amp = amplitude[i, k]
            for j in range(a, b):
                crop[j] += amp * (_sig(days[j], tp + 38.0, 7.0) - _sig(days[j], hv - 8.0, 4.0))
        for j in range(m):
            fl = min(max(f[j], 0.0), 1.0)
            f[j] = fl
            ndvi[i, j] = (fallow[i] - (fallow[i] - flooded[i]) * fl) + crop[j]
