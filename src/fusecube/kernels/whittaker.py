"""Batched Whittaker smoother: a pentadiagonal LDLᵀ solve for every pixel.

Knows nothing of xarray. Arrays are ``(n_pixels, n_times)``. :func:`whittaker` runs the solve
compiled (:mod:`fusecube.kernels.whittaker_compiled`, about 1 µs per 62-step pixel for a fixed
λ); :mod:`fusecube.kernels.whittaker_lambda` chooses λ per pixel (GCV, V-curve).
:func:`_factor_solve`, :func:`_sweeps` and :func:`_inverse_diagonal` here are the same
recurrences in numpy on ``(n_pixels,)`` vectors: the readable reference the tests hold the
compiled kernels to. No Python loop runs over pixels.

The smoother minimises ``Σ wᵢ (yᵢ - zᵢ)² + λ Σ (D z)ᵢ²`` where ``D`` takes second-order
divided differences on the (possibly irregular) sample times, scaled by the squared mean
spacing so that one λ means the same on a regular and an irregular series.
"""

from __future__ import annotations

import numpy as np

from fusecube.errors import ConfigError, CubeSchemaError
from fusecube.kernels.whittaker_compiled import _solve_rows


def difference_coefficients(times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of the second-order divided-difference operator ``D`` on (irregular) ``times``.

    Row ``i`` of ``D`` is ``a[i] z[i] + b[i] z[i+1] + c[i] z[i+2]``.

    Args:
        times: Increasing sample times (e.g. days), shape ``(T,)``, ``T >= 3``.

    Returns:
        ``(a, b, c)``, each of shape ``(T-2,)``.
    """
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1 or t.size < 3:
        raise CubeSchemaError(
            f"The Whittaker smoother needs at least 3 time steps on one axis; got shape {t.shape}. "
            "Use a longer time series.")
    h = np.diff(t)
    if not np.all(np.isfinite(h)) or np.any(h <= 0):
        raise CubeSchemaError(
            "Time steps must be finite and strictly increasing for the Whittaker smoother; "
            "sort the cube by time and drop duplicate dates.")
    h1, h2 = h[:-1], h[1:]
    scale = h.mean() ** 2
    a = scale * 2.0 / (h1 * (h1 + h2))
    b = -scale * 2.0 / (h1 * h2)
    c = scale * 2.0 / (h2 * (h1 + h2))
    return a, b, c


def difference_penalty(times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Diagonals of DᵀD for second-order divided differences on (irregular) ``times``.

    Args:
        times: Increasing sample times (e.g. days), shape ``(T,)``, ``T >= 3``.

    Returns:
        ``(d0, d1, d2)``: main diagonal (T,), first (T-1,) and second (T-2,) off-diagonals.
    """
    a, b, c = difference_coefficients(times)
    n = a.size + 2
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


def _check_lambda(lam: np.ndarray) -> None:
    if not np.all(np.isfinite(lam)) or np.any(lam <= 0):
        raise ConfigError(f"Whittaker smoothing strength must be finite and > 0; got {lam!r}.")


def _prepare(values: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Weights and weighted values laid out ``(T, N)``; NaN values or weights weigh 0.

    Transposes once into contiguous float64 buffers and works in place on them (this costs
    as much as the solve itself when done with temporaries).
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise CubeSchemaError(f"Whittaker input must be (pixels, times); got shape {values.shape}.")
    rhs = np.array(values.T, dtype=np.float64, order="C")
    valid = np.isfinite(rhs)
    if weights is None:
        wt = valid.astype(np.float64)
    else:
        weights = np.asarray(weights)
        if weights.shape != values.shape:
            raise CubeSchemaError(
                f"Weights shape {weights.shape} differs from values shape {values.shape}.")
        wt = np.array(weights.T, dtype=np.float64, order="C")
        valid &= np.isfinite(wt)
        np.copyto(wt, 0.0, where=~valid | (wt < 0))
    np.copyto(rhs, 0.0, where=~valid)
    rhs *= wt
    return wt, rhs


def _factor_solve(wt: np.ndarray, rhs: np.ndarray, lam: float | np.ndarray, penalty,
                  keep_factors: bool = False):
    """Solve ``(W + λ DᵀD) z = W y`` for all pixels: LDLᵀ factor and forward sweep in one pass.

    Args:
        wt: ``(T, N)`` weights.
        rhs: ``(T, N)`` weighted values ``W y``; overwritten with the solution.
        lam: Smoothing strength, one for all pixels (a float) or ``(N,)``.
        penalty: ``(d0, d1, d2)`` from :func:`difference_penalty`.
        keep_factors: Also return ``(1/D, L₁, L₂)`` (for the diagonal of the inverse).

    Returns:
        The solution ``(T, N)`` (the ``rhs`` buffer), and the factors when asked.
    """
    d0, d1, d2 = penalty
    n_t, n = wt.shape
    inv_d = np.empty((n_t, n))
    l1 = np.zeros((n_t, n))  # L[i+1, i]
    l2 = np.zeros((n_t, n))  # L[i+2, i]
    e_prev = np.zeros(n)  # L[i, i-1] * D[i-1]: the eliminated first off-diagonal
    tmp = np.empty(n)
    di = np.empty(n)
    u = rhs
    # pixels with fewer than 3 observations give a singular system (zero pivots): they are
    # set to NaN by the callers, so their inf/NaN arithmetic here is expected
    with np.errstate(divide="ignore", invalid="ignore"):
        _sweeps(wt, u, lam, d0, d1, d2, inv_d, l1, l2, e_prev, tmp, di)
    if keep_factors:
        return u, (inv_d, l1, l2)
    return u


def _sweeps(wt, u, lam, d0, d1, d2, inv_d, l1, l2, e_prev, tmp, di) -> None:
    """Forward (factor + elimination) and backward sweeps of :func:`_factor_solve`, in place.

    ``lam`` is a scalar (one λ for all pixels: the λ·penalty terms are plain numbers, which
    saves a third of the vector operations) or an ``(N,)`` array.
    """
    n_t = wt.shape[0]
    for i in range(n_t):
        np.add(wt[i], lam * d0[i], out=di)
        if i >= 1:
            di -= np.multiply(l1[i - 1], e_prev, out=tmp)
            u[i] -= np.multiply(l1[i - 1], u[i - 1], out=tmp)
        if i >= 2:
            di -= np.multiply(l2[i - 2], lam * d2[i - 2], out=tmp)
            u[i] -= np.multiply(l2[i - 2], u[i - 2], out=tmp)
        np.divide(1.0, di, out=inv_d[i])
        if i + 1 < n_t:
            # e_i = λ d1[i] - L[i+1, i-1] e_{i-1}: the first off-diagonal after elimination
            if i >= 1:
                np.multiply(l2[i - 1], e_prev, out=tmp)
                np.subtract(lam * d1[i], tmp, out=e_prev)
            else:
                e_prev[...] = lam * d1[i]
            np.multiply(e_prev, inv_d[i], out=l1[i])
        if i + 2 < n_t:
            np.multiply(inv_d[i], lam * d2[i], out=l2[i])
    z = u
    z[n_t - 1] *= inv_d[n_t - 1]
    for i in range(n_t - 2, -1, -1):
        z[i] *= inv_d[i]
        z[i] -= np.multiply(l1[i], z[i + 1], out=tmp)
        if i + 2 < n_t:
            z[i] -= np.multiply(l2[i], z[i + 2], out=tmp)


def _inverse_diagonal(inv_d: np.ndarray, l1: np.ndarray, l2: np.ndarray) -> np.ndarray:
    """Diagonal of (LDLᵀ)⁻¹ by the Takahashi recurrence, shape ``(T, N)``."""
    n_t = inv_d.shape[0]
    s_ii = np.empty_like(inv_d)
    s_next1 = np.zeros_like(inv_d[0])  # Σ[i+1, i+2]
    for i in range(n_t - 1, -1, -1):
        s_i1_i1 = s_ii[i + 1] if i + 1 < n_t else 0.0
        s_i2_i2 = s_ii[i + 2] if i + 2 < n_t else 0.0
        s_i_i2 = -l1[i] * s_next1 - l2[i] * s_i2_i2 if i + 2 < n_t else 0.0
        s_i_i1 = -l1[i] * s_i1_i1 - l2[i] * s_next1 if i + 1 < n_t else 0.0
        s_ii[i] = inv_d[i] - l1[i] * s_i_i1 - l2[i] * s_i_i2
        s_next1 = s_i_i1
    return s_ii


def _too_few(wt: np.ndarray, min_obs: int) -> np.ndarray:
    return (wt > 0).sum(axis=0) < min_obs


def whittaker(
    values: np.ndarray,
    times: np.ndarray,
    *,
    lam: float | np.ndarray = 2.0,
    weights: np.ndarray | None = None,
    min_obs: int = 3,
) -> np.ndarray:
    """Weighted, NaN-aware Whittaker smoother for every pixel (compiled solve).

    Args:
        values: ``(N, T)`` series; NaN marks missing values (weight 0).
        times: ``(T,)`` sample times in days (irregular spacing allowed).
        lam: Smoothing strength, a scalar or one value per pixel ``(N,)``.
        weights: Optional ``(N, T)`` observation weights (>= 0; NaN counts as 0).
        min_obs: Pixels with fewer observations of positive weight come back all-NaN.

    Returns:
        ``(N, T)`` float32 smoothed series, filled through the gaps.
    """
    d0, d1, d2 = difference_penalty(times)
    values = np.asarray(values)
    if values.ndim != 2:
        raise CubeSchemaError(f"Whittaker input must be (pixels, times); got shape {values.shape}.")
    if values.shape[1] != d0.size:
        raise CubeSchemaError(f"Values have {values.shape[1]} time steps but times has {d0.size}.")
    if weights is None:
        weights = np.empty((0, 0))
    elif np.shape(weights) != values.shape:
        raise CubeSchemaError(
            f"Weights shape {np.shape(weights)} differs from values shape {values.shape}.")
    lam_n = np.atleast_1d(np.asarray(lam, np.float64))
    _check_lambda(lam_n)
    if np.ndim(lam) != 0 and lam_n.shape != (values.shape[0],):
        raise ConfigError(f"lam must be a scalar or one value per pixel ({values.shape[0]}); "
                          f"got shape {lam_n.shape}.")
    out = np.empty(values.shape, np.float32)
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    weights = np.asarray(weights)
    if weights.dtype not in (np.float32, np.float64):
        weights = weights.astype(np.float64)
    # compiled with error_model="numpy": singular series (too few observations) give inf/NaN
    # silently, and are set to NaN by the kernel
    _solve_rows(np.ascontiguousarray(values), np.ascontiguousarray(weights), lam_n,
                d0, d1, d2, min_obs, out)
    return out


def upper_envelope(
    values: np.ndarray,
    times: np.ndarray,
    *,
    lam: float | np.ndarray = 2.0,
    weights: np.ndarray | None = None,
    iterations: int = 2,
    low_weight: float = 0.3,
    min_obs: int = 3,
    adjustable: np.ndarray | None = None,
) -> np.ndarray:
    """Whittaker fit pulled towards the upper envelope (NDVI noise from clouds is negative).

    After each fit, observations below the curve get their weight multiplied by ``low_weight``.

    Args:
        values: ``(N, T)`` series with NaN for missing.
        times: ``(T,)`` sample times in days.
        lam: Smoothing strength (scalar or per pixel).
        weights: Optional ``(N, T)`` starting weights.
        iterations: Number of re-weighting passes.
        low_weight: Weight factor of values below the curve.
        min_obs: Minimum observations of positive weight per pixel.
        adjustable: Optional ``(N, T)`` boolean: only these values may be down-weighted
            (e.g. real observations, not gap-filled values). Default: every finite value.

    Returns:
        ``(N, T)`` float32 smoothed series.
    """
    y = np.asarray(values, dtype=np.float64)
    w = np.isfinite(y).astype(np.float64) if weights is None else np.asarray(weights, np.float64)
    may_drop = np.isfinite(y)
    if adjustable is not None:
        may_drop &= np.asarray(adjustable, bool)
    z = whittaker(y, times, lam=lam, weights=w, min_obs=min_obs)
    for _ in range(iterations):
        below = may_drop & (y < z)
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
        filled = np.where(np.isnan(prev_val[i]), next_v,
                          np.where(np.isnan(next_v), prev_val[i], filled))
        out[i] = np.where(ok, yt[i], filled)
    return np.ascontiguousarray(out.T)
