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
def _fit_candidate(w, lam, p0, p1, p2, rhs, inv_d, l1, l2, sol, inv):
    """Solve ``(W + λP) sol = rhs`` for ``(T, R)`` right-hand sides and the diagonal of the inverse.

    One forward pass factors ``W + λP = LDLᵀ`` (keeping 1 / pivots: one division per step)
    while it substitutes forwards; one backward pass substitutes backwards while it runs the
    Takahashi recurrence for ``inv = diag((W + λP)⁻¹)``. The serial chains of the factor and
    of the Takahashi recurrence then overlap with the ``R`` independent substitutions.
    """
    n_t, n_r = rhs.shape
    d_prev = 0.0  # pivot i-1
    d_prev2 = 0.0  # pivot i-2
    for i in range(n_t):
        di = w[i] + lam * p0[i]
        if i >= 1:
            di -= l1[i - 1] * l1[i - 1] * d_prev
        if i >= 2:
            di -= l2[i - 2] * l2[i - 2] * d_prev2
        inv_i = 1.0 / di
        inv_d[i] = inv_i
        if i + 1 < n_t:
            c = lam * p1[i]
            if i >= 1:
                c -= l2[i - 1] * l1[i - 1] * d_prev
            l1[i] = c * inv_i
        else:
            l1[i] = 0.0
        l2[i] = lam * p2[i] * inv_i if i + 2 < n_t else 0.0
        d_prev2 = d_prev
        d_prev = di
        for r in range(n_r):
            v = rhs[i, r]
            if i >= 1:
                v -= l1[i - 1] * sol[i - 1, r]
            if i >= 2:
                v -= l2[i - 2] * sol[i - 2, r]
            sol[i, r] = v
    s11 = 0.0  # Σ[i+1, i+1]
    s22 = 0.0  # Σ[i+2, i+2]
    s12 = 0.0  # Σ[i+1, i+2]
    for i in range(n_t - 1, -1, -1):
        s_i1 = -l1[i] * s11 - l2[i] * s12
        s_i2 = -l1[i] * s12 - l2[i] * s22
        inv[i] = inv_d[i] - l1[i] * s_i1 - l2[i] * s_i2
        s22 = s11
        s11 = inv[i]
        s12 = s_i1
        for r in range(n_r):
            v = sol[i, r] * inv_d[i]
            if i + 1 < n_t:
                v -= l1[i] * sol[i + 1, r]
            if i + 2 < n_t:
                v -= l2[i] * sol[i + 2, r]
            sol[i, r] = v


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
    obs = np.empty(n_t, np.int64)  # indices of the observed dates
    inv_d = np.empty(n_t)
    l1 = np.empty(n_t)
    l2 = np.empty(n_t)
    rhs = np.empty((n_t, 1 + n_g))  # column 0: W y; column 1 + j: W g̃_j
    sol = np.empty((n_t, 1 + n_g))
    inv = np.empty(n_t)
    for p in range(n):
        n_obs = 0
        for i in range(n_t):
            ok = np.isfinite(values[p, i])
            w[i] = 1.0 if ok else 0.0
            y[i] = values[p, i] if ok else 0.0
            if ok:
                obs[n_obs] = i
                n_obs += 1
        if n_obs < min_obs:
            continue
        for i in range(n_t):
            rhs[i, 0] = w[i] * y[i]
            for j in range(n_g):
                rhs[i, 1 + j] = w[i] * guides[j, p, i]
        best = np.inf
        for k in range(lams.size):
            _fit_candidate(w, lams[k], p0, p1, p2, rhs, inv_d, l1, l2, sol, inv)
            for j in range(n_g):
                # b, its hat term and the LOO residuals need the observed dates only
                denom = shrink
                num = 0.0
                for m in range(n_obs):
                    i = obs[m]
                    g = guides[j, p, i]
                    denom += g * (g - sol[i, 1 + j])
                    num += g * (y[i] - sol[i, 0])
                b = num / denom if abs(denom) > 1e-12 else 0.0
                h_scale = 1.0 / denom if abs(denom) > 1e-12 else 0.0
                score = 0.0
                for m in range(n_obs):
                    i = obs[m]
                    u = guides[j, p, i] - sol[i, 1 + j]
                    hat = inv[i] + h_scale * u * u
                    r = (y[i] - sol[i, 0] - b * u) / max(1.0 - hat, LOO_FLOOR)
                    score += r * r
                score /= n_obs
                if score < best:
                    best = score
                    coef[p] = b
                    lam_index[p] = k
                    guide_index[p] = j
                    loo_mse[p] = score
        # the chosen candidate's curve at every date
        k, j = lam_index[p], guide_index[p]
        _fit_candidate(w, lams[k], p0, p1, p2, rhs, inv_d, l1, l2, sol, inv)
        for i in range(n_t):
            fitted[p, i] = sol[i, 0] + coef[p] * (guides[j, p, i] - sol[i, 1 + j])
