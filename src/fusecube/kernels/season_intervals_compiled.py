"""Compiled variance of the season-date functionals (numba), beside the numpy reference.

:func:`fusecube.kernels.season_intervals.functional_variance` forms each date's weights over
the whole series and sums them per gap; this kernel builds the same weights only around the
few hat-matrix rows a date depends on (a Whittaker hat row is negligible a dozen samples
from its centre) and sums in one loop, so the cost no longer grows with the series length.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, error_model="numpy")
def _variances(wt, sigma, observed, pix, idx, coef, margin, out):
    n_rows, n_terms = idx.shape
    n_t = wt.shape[1]
    for m in range(n_rows):
        lo, hi = n_t, 0
        for r in range(n_terms):
            lo = min(lo, idx[m, r])
            hi = max(hi, idx[m, r])
        lo, hi = max(lo - margin, 0), min(hi + margin, n_t - 1)
        p = pix[m]
        total, run, in_run = 0.0, 0.0, False
        for j in range(lo, hi + 1):
            weight = 0.0
            for r in range(n_terms):
                weight += coef[m, r] * wt[idx[m, r], j]
            u = weight * sigma[p, j]
            if observed[p, j]:
                if in_run:
                    total += run * run
                    run, in_run = 0.0, False
                total += u * u
            else:
                run += u
                in_run = True
        if in_run:
            total += run * run
        out[m] = total


def functional_variances(wt: np.ndarray, sigma: np.ndarray, observed: np.ndarray,
                         pix: np.ndarray, idx: np.ndarray, coef: np.ndarray,
                         margin: int = 12) -> np.ndarray:
    """Variance of ``Σ_r coef[m, r] · smooth(e)[idx[m, r]]`` for each row ``m``.

    Args:
        wt: ``(T, T)`` hat matrix, row ``t`` the weights of the smoothed value at ``t``.
        sigma: ``(N, T)`` σ of the series' errors.
        observed: ``(N, T)`` bool; errors of observations are independent, those of a gap
            one shared draw.
        pix: ``(M,)`` series of each row.
        idx: ``(M, R)`` time indices of the smoothed values a date depends on.
        coef: ``(M, R)`` their coefficients.
        margin: Samples kept beyond the outermost index (the reach of a hat row).

    Returns:
        ``(M,)`` float64 variances.
    """
    out = np.empty(len(pix))
    _variances(np.ascontiguousarray(wt, np.float64), np.ascontiguousarray(sigma, np.float64),
               np.ascontiguousarray(observed, np.bool_), np.ascontiguousarray(pix, np.int64),
               np.ascontiguousarray(idx, np.int64), np.ascontiguousarray(coef, np.float64),
               int(margin), out)
    return out


@njit(cache=True, nogil=True)
def _lowest(curve, pix, lo, hi, out):
    for m in range(len(pix)):
        best, at = np.inf, lo[m]
        for j in range(lo[m], hi[m] + 1):
            if curve[pix[m], j] < best:
                best, at = curve[pix[m], j], j
        out[m] = at


def lowest_between(curve: np.ndarray, pix: np.ndarray, lo: np.ndarray,
                   hi: np.ndarray) -> np.ndarray:
    """Index of the lowest value of series ``pix[m]`` of ``curve`` within ``lo[m]..hi[m]``."""
    out = np.empty(len(pix), np.int64)
    _lowest(np.ascontiguousarray(curve, np.float64), np.ascontiguousarray(pix, np.int64),
            np.ascontiguousarray(lo, np.int64), np.ascontiguousarray(hi, np.int64), out)
    return out
