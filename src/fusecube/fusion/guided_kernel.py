"""Compiled kernel of the radar-guided Whittaker fit: every candidate (λ, λ_g) of every series.

Knows nothing of xarray; arrays are ``(n_series, n_times)``. Like
:func:`fusecube.kernels_whittaker.whittaker`, it runs a compiled (numba) loop over series,
each solved in a few T-long buffers: for a field-mean series of 145 dates the 36 candidates
of the default grids cost tens of µs, where the same recurrences run as numpy vector
operations over time cost ~0.4 ms per series (measured on 41 series: the per-step overhead
of ~30 small vector operations dominates).

For one candidate λ the system ``A = W + λ DᵀD`` is factored once (LDLᵀ, pentadiagonal);
the same factors solve for ``S y`` and every ``S g̃`` (``S = A⁻¹ W``) and give the diagonal of
``A⁻¹`` by the Takahashi recurrence, hence the hat-matrix diagonal and exact leave-one-out
residuals (see :mod:`fusecube.fusion.guided` for the model).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fusecube.errors import CubeSchemaError

LOO_FLOOR = 1e-6
"""Smallest ``1 - H_ii`` used in a leave-one-out residual (an observation the fit must pass
through, e.g. alone at the end of a series, would otherwise divide by 0)."""


def second_difference_penalty(times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Diagonals of DᵀD for scaled second-order divided differences on ``times``.

    The scaling (squared mean spacing) is the one of :mod:`fusecube.kernels_whittaker`, so a
    λ means the same in both.

    Args:
        times: ``(T,)`` strictly increasing sample times in days, ``T >= 3``.

    Returns:
        ``(p0, p1, p2)``: main ``(T,)``, first ``(T-1,)`` and second ``(T-2,)`` diagonals.

    Raises:
        CubeSchemaError: Fewer than 3 times, or times not strictly increasing.
    """
    t = np.asarray(times, np.float64)
    if t.ndim != 1 or t.size < 3:
        raise CubeSchemaError(f"A second-difference penalty needs at least 3 times on one axis; "
                              f"got shape {t.shape}. Use a longer series.")
    h = np.diff(t)
    if not np.all(np.isfinite(h)) or np.any(h <= 0):
        raise CubeSchemaError("Sample times must be finite and strictly increasing; sort the "
                              "series by time and drop duplicate dates.")
    h1, h2 = h[:-1], h[1:]
    scale = h.mean() ** 2
    rows = (scale * 2.0 / (h1 * (h1 + h2)), -scale * 2.0 / (h1 * h2), scale * 2.0 / (h2 * (h1 + h2)))
    n = t.size
    p0, p1 = np.zeros(n), np.zeros(n - 1)
    for offset in range(3):  # row i of D touches z[i], z[i+1], z[i+2]
        p0[offset : offset + n - 2] += rows[offset] ** 2
    p1[: n - 2] += rows[0] * rows[1]
    p1[1 : n - 1] += rows[1] * rows[2]
    return p0, p1, rows[0] * rows[2]


@njit(cache=True, nogil=True)
def _factor(w, lam, p0, p1, p2, d, l1, l2):
    """LDLᵀ of ``diag(w) + λ P`` into ``d`` (pivots), ``l1`` = L[i+1,i], ``l2`` = L[i+2,i]."""
    n_t = w.size
    for i in range(n_t):
        di = w[i] + lam * p0[i]
        if i >= 1:
            di -= l1[i - 1] * l1[i - 1] * d[i - 1]
        if i >= 2:
            di -= l2[i - 2] * l2[i - 2] * d[i - 2]
        d[i] = di
        if i + 1 < n_t:
            c = lam * p1[i]
            if i >= 1:
                c -= l2[i - 1] * l1[i - 1] * d[i - 1]
            l1[i] = c / di
        else:
            l1[i] = 0.0
        l2[i] = lam * p2[i] / di if i + 2 < n_t else 0.0


@njit(cache=True, nogil=True)
def _solve(d, l1, l2, rhs, out):
    """``out = (LDLᵀ)⁻¹ rhs`` with the factors of :func:`_factor`."""
    n_t = d.size
    for i in range(n_t):
        v = rhs[i]
        if i >= 1:
            v -= l1[i - 1] * out[i - 1]
        if i >= 2:
            v -= l2[i - 2] * out[i - 2]
        out[i] = v
    for i in range(n_t - 1, -1, -1):
        v = out[i] / d[i]
        if i + 1 < n_t:
            v -= l1[i] * out[i + 1]
        if i + 2 < n_t:
            v -= l2[i] * out[i + 2]
        out[i] = v


@njit(cache=True, nogil=True)
def _inverse_diagonal(d, l1, l2, out):
    """Diagonal of ``(LDLᵀ)⁻¹`` by the Takahashi recurrence."""
    n_t = d.size
    s11 = 0.0  # Σ[i+1, i+1]
    s22 = 0.0  # Σ[i+2, i+2]
    s12 = 0.0  # Σ[i+1, i+2]
    for i in range(n_t - 1, -1, -1):
        s_i1 = -l1[i] * s11 - l2[i] * s12
        s_i2 = -l1[i] * s12 - l2[i] * s22
        out[i] = 1.0 / d[i] - l1[i] * s_i1 - l2[i] * s_i2
        s22 = s11
        s11 = out[i]
        s12 = s_i1


@njit(cache=True, nogil=True)
def guided_rows(values, guides, lams, p0, p1, p2, shrink, min_obs,
                fitted, coef, lam_index, guide_index, loo_mse):
    """Fit every (λ, λ_g) candidate of every series; keep the one of least leave-one-out error.

    Args:
        values: ``(N, T)`` float64 NDVI, NaN where not observed.
        guides: ``(G, N, T)`` float64 smoothed guides, finite.
        lams: ``(K,)`` candidate trend strengths.
        p0: Main diagonal of the penalty (:func:`second_difference_penalty`).
        p1: Its first off-diagonal.
        p2: Its second off-diagonal.
        shrink: Ridge penalty κ on the guide coefficient.
        min_obs: Series with fewer observations are left as given in the outputs.
        fitted: ``(N, T)`` float32 output: the chosen model curve.
        coef: ``(N,)`` output: the guide coefficient ``b``.
        lam_index: ``(N,)`` output: index of the chosen λ.
        guide_index: ``(N,)`` output: index of the chosen λ_g.
        loo_mse: ``(N,)`` output: mean squared leave-one-out residual of the chosen candidate.
    """
    n, n_t = values.shape
    n_g = guides.shape[0]
    w = np.empty(n_t)
    y = np.empty(n_t)
    d = np.empty(n_t)
    l1 = np.empty(n_t)
    l2 = np.empty(n_t)
    rhs = np.empty(n_t)
    sy = np.empty(n_t)
    sg = np.empty(n_t)
    u = np.empty(n_t)
    inv = np.empty(n_t)
    for p in range(n):
        n_obs = 0
        for i in range(n_t):
            ok = np.isfinite(values[p, i])
            w[i] = 1.0 if ok else 0.0
            y[i] = values[p, i] if ok else 0.0
            n_obs += ok
        if n_obs < min_obs:
            continue
        best = np.inf
        for k in range(lams.size):
            _factor(w, lams[k], p0, p1, p2, d, l1, l2)
            for i in range(n_t):
                rhs[i] = w[i] * y[i]
            _solve(d, l1, l2, rhs, sy)
            _inverse_diagonal(d, l1, l2, inv)
            for j in range(n_g):
                for i in range(n_t):
                    rhs[i] = w[i] * guides[j, p, i]
                _solve(d, l1, l2, rhs, sg)
                denom = shrink
                num = 0.0
                for i in range(n_t):
                    u[i] = guides[j, p, i] - sg[i]
                    denom += w[i] * guides[j, p, i] * u[i]
                    num += w[i] * guides[j, p, i] * (y[i] - sy[i])
                b = num / denom if abs(denom) > 1e-12 else 0.0
                h_scale = 1.0 / denom if abs(denom) > 1e-12 else 0.0
                score = 0.0
                for i in range(n_t):
                    if w[i] > 0:
                        hat = inv[i] + h_scale * u[i] * u[i]
                        r = (y[i] - sy[i] - b * u[i]) / max(1.0 - hat, LOO_FLOOR)
                        score += r * r
                score /= n_obs
                if score < best:
                    best = score
                    coef[p] = b
                    lam_index[p] = k
                    guide_index[p] = j
                    loo_mse[p] = score
                    for i in range(n_t):
                        fitted[p, i] = sy[i] + b * u[i]
