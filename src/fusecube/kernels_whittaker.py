"""Batched Whittaker smoother: a pentadiagonal LDLᵀ solve vectorised over pixels.

Pure numpy; knows nothing of xarray. Arrays are ``(n_pixels, n_times)``; internally the
recurrences run over time (62 steps for Demak) on contiguous ``(n_pixels,)`` vectors, so
there is no loop over pixels.
"""

from __future__ import annotations

import numpy as np


def difference_penalty(times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Diagonals of DᵀD for second-order divided differences on (irregular) ``times``.

    The differences are scaled by the squared mean spacing so that a smoothing strength
    means the same on a regular grid and on an irregular one.

    Args:
        times: Increasing sample times (e.g. days), shape ``(T,)``, ``T >= 3``.

    Returns:
        ``(d0, d1, d2)``: main diagonal (T,), first (T-1,) and second (T-2,) off-diagonals.
    """
    t = np.asarray(times, dtype=np.float64)
    h = np.diff(t)
    if t.size < 3 or np.any(h <= 0):
        raise ValueError("times must be strictly increasing with at least 3 samples")
    h1, h2 = h[:-1], h[1:]
    scale = h.mean() ** 2
    a = scale * 2.0 / (h1 * (h1 + h2))
    b = -scale * 2.0 / (h1 * h2)
    c = scale * 2.0 / (h2 * (h1 + h2))
    n = t.size
    d0 = np.zeros(n)
    d1 = np.zeros(n - 1)
    rows = np.arange(n - 2)
    np.add.at(d0, rows, a * a)
    np.add.at(d0, rows + 1, b * b)
    np.add.at(d0, rows + 2, c * c)
    np.add.at(d1, rows, a * b)
    np.add.at(d1, rows + 1, b * c)
    d2 = a * c
    return d0, d1, d2


def _factor(w: np.ndarray, lam: np.ndarray, penalty) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LDLᵀ factors of W + λ DᵀD; inputs/outputs laid out ``(T, N)``."""
    d0, d1, d2 = penalty
    n_t = w.shape[0]
    diag = np.empty_like(w)
    l1 = np.zeros_like(w)  # L[i+1, i]
    l2 = np.zeros_like(w)  # L[i+2, i]
    for i in range(n_t):
        di = w[i] + lam * d0[i]
        if i >= 1:
            di -= l1[i - 1] ** 2 * diag[i - 1]
        if i >= 2:
            di -= l2[i - 2] ** 2 * diag[i - 2]
        diag[i] = di
        if i + 1 < n_t:
            e = lam * d1[i]
            if i >= 1:
                e = e - l2[i - 1] * l1[i - 1] * diag[i - 1]
            l1[i] = e / di
        if i + 2 < n_t:
            l2[i] = lam * d2[i] / di
    return diag, l1, l2


def _solve(diag, l1, l2, rhs: np.ndarray) -> np.ndarray:
    n_t = rhs.shape[0]
    u = np.empty_like(rhs)
    for i in range(n_t):
        ui = rhs[i].copy()
        if i >= 1:
            ui -= l1[i - 1] * u[i - 1]
        if i >= 2:
            ui -= l2[i - 2] * u[i - 2]
        u[i] = ui
    u /= diag
    z = np.empty_like(rhs)
    for i in range(n_t - 1, -1, -1):
        zi = u[i].copy()
        if i + 1 < n_t:
            zi -= l1[i] * z[i + 1]
        if i + 2 < n_t:
            zi -= l2[i] * z[i + 2]
        z[i] = zi
    return z


def _inverse_diagonal(diag, l1, l2) -> np.ndarray:
    """Diagonal of (LDLᵀ)⁻¹ by the Takahashi recurrence, shape ``(T, N)``."""
    n_t = diag.shape[0]
    s_ii = np.empty_like(diag)
    s_next1 = np.zeros_like(diag[0])  # Σ[i+1, i+2]
    for i in range(n_t - 1, -1, -1):
        s_i1_i1 = s_ii[i + 1] if i + 1 < n_t else 0.0
        s_i2_i2 = s_ii[i + 2] if i + 2 < n_t else 0.0
        s_i_i2 = -l1[i] * s_next1 - l2[i] * s_i2_i2 if i + 2 < n_t else 0.0
        s_i_i1 = -l1[i] * s_i1_i1 - l2[i] * s_next1 if i + 1 < n_t else 0.0
        s_ii[i] = 1.0 / diag[i] - l1[i] * s_i_i1 - l2[i] * s_i_i2
        s_next1 = s_i_i1
    return s_ii


def whittaker(
    values: np.ndarray,
    times: np.ndarray,
    *,
    lam: float | np.ndarray = 2.0,
    weights: np.ndarray | None = None,
    min_obs: int = 3,
) -> np.ndarray:
    """Weighted, NaN-aware Whittaker smoother vectorised over pixels.

    Args:
        values: ``(N, T)`` series; NaN marks missing values (weight 0).
        times: ``(T,)`` sample times in days.
        lam: Smoothing strength, a scalar or one value per pixel ``(N,)``.
        weights: Optional ``(N, T)`` observation weights in [0, 1].
        min_obs: Pixels with fewer weighted observations come back all-NaN.

    Returns:
        ``(N, T)`` float32 smoothed series, filled through the gaps.
    """
    y = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(y)
    w = valid.astype(np.float64) if weights is None else np.where(valid, weights, 0.0)
    penalty = difference_penalty(times)
    lam_n = np.broadcast_to(np.asarray(lam, dtype=np.float64), (y.shape[0],))
    wt = np.ascontiguousarray(w.T)
    yt = np.ascontiguousarray(np.where(valid, y, 0.0).T)
    factors = _factor(wt, lam_n, penalty)
    z = _solve(*factors, wt * yt).T
    z[(w > 0).sum(axis=1) < min_obs] = np.nan
    return z.astype(np.float32)


def whittaker_gcv(
    values: np.ndarray,
    times: np.ndarray,
    *,
    lambdas: np.ndarray = np.logspace(-1, 3, 13),
    weights: np.ndarray | None = None,
    min_obs: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Whittaker smoother with the smoothing strength chosen per pixel by generalised cross-validation.

    Args:
        values: ``(N, T)`` series with NaN for missing.
        times: ``(T,)`` sample times in days.
        lambdas: Candidate smoothing strengths.
        weights: Optional ``(N, T)`` observation weights.
        min_obs: Minimum weighted observations per pixel.

    Returns:
        ``(smoothed (N, T) float32, chosen lambda (N,) float64)``.
    """
    y = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(y)
    w = valid.astype(np.float64) if weights is None else np.where(valid, weights, 0.0)
    penalty = difference_penalty(times)
    wt = np.ascontiguousarray(w.T)
    yt = np.ascontiguousarray(np.where(valid, y, 0.0).T)
    n_w = np.maximum(wt.sum(axis=0), 1e-9)
    best_score = np.full(y.shape[0], np.inf)
    best_lam = np.full(y.shape[0], float(lambdas[0]))
    for lam in lambdas:
        factors = _factor(wt, np.full(y.shape[0], lam), penalty)
        z = _solve(*factors, wt * yt)
        trace = (wt * _inverse_diagonal(*factors)).sum(axis=0)
        rss = (wt * (yt - z) ** 2).sum(axis=0)
        score = (rss / n_w) / np.maximum(1.0 - trace / n_w, 1e-6) ** 2
        better = score < best_score
        best_score = np.where(better, score, best_score)
        best_lam = np.where(better, lam, best_lam)
    smoothed = whittaker(y, times, lam=best_lam, weights=w, min_obs=min_obs)
    return smoothed, best_lam


def upper_envelope(
    values: np.ndarray,
    times: np.ndarray,
    *,
    lam: float | np.ndarray = 2.0,
    weights: np.ndarray | None = None,
    iterations: int = 2,
    low_weight: float = 0.3,
    min_obs: int = 3,
) -> np.ndarray:
    """Whittaker fit pulled towards the upper envelope (NDVI noise from clouds is negative).

    After each fit, observations below the curve get their weight multiplied by ``low_weight``.
    """
    y = np.asarray(values, dtype=np.float64)
    w = np.isfinite(y).astype(np.float64) if weights is None else np.asarray(weights, np.float64)
    z = whittaker(y, times, lam=lam, weights=w, min_obs=min_obs)
    for _ in range(iterations):
        below = np.isfinite(y) & (y < z)
        w = np.where(below, w * low_weight, w)
        z = whittaker(y, times, lam=lam, weights=w, min_obs=min_obs)
    return z


def linear_fill(values: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Linear interpolation in time through NaN gaps, vectorised over pixels.

    Ends are held at the nearest observation; all-NaN pixels stay NaN.

    Args:
        values: ``(N, T)`` series with NaN for missing.
        times: ``(T,)`` sample times.

    Returns:
        ``(N, T)`` float32 filled series.
    """
    yt = np.ascontiguousarray(np.asarray(values, dtype=np.float32).T)
    t = np.asarray(times, dtype=np.float64)
    n_t = t.size
    # forward pass: last valid value and its time; backward pass: next valid value and time
    prev_val, prev_t = np.empty_like(yt), np.empty(yt.shape, dtype=np.float32)
    last_v = np.full(yt.shape[1], np.nan, dtype=np.float32)
    last_t = np.full(yt.shape[1], np.nan, dtype=np.float32)
    for i in range(n_t):
        ok = ~np.isnan(yt[i])
        np.copyto(last_v, yt[i], where=ok)
        last_t[ok] = t[i]
        prev_val[i], prev_t[i] = last_v, last_t
    out = np.empty_like(yt)
    next_v = np.full(yt.shape[1], np.nan, dtype=np.float32)
    next_t = np.full(yt.shape[1], np.nan, dtype=np.float32)
    for i in range(n_t - 1, -1, -1):
        ok = ~np.isnan(yt[i])
        np.copyto(next_v, yt[i], where=ok)
        next_t[ok] = t[i]
        span = next_t - prev_t[i]
        frac = np.where(span > 0, (t[i] - prev_t[i]) / np.where(span > 0, span, 1), 0)
        filled = prev_val[i] + frac * (next_v - prev_val[i])
        # one side missing: hold the other; both present: interpolate
        filled = np.where(np.isnan(prev_val[i]), next_v, np.where(np.isnan(next_v), prev_val[i], filled))
        out[i] = np.where(ok, yt[i], filled)
    return np.ascontiguousarray(out.T)
