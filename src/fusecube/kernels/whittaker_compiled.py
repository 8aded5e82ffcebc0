"""Compiled Whittaker kernels (numba): LDLᵀ solves for blocks of series, and λ selection.

The recurrences go over time with a block of :data:`SOLVE_BLOCK` series side by side in the
inner (SIMD) dimension, in L1-sized buffers: about 1 µs per 62-step pixel for a fixed λ, 6-7 µs
for GCV or the V-curve over 17 candidate λ. They compute what the numpy reference of
:mod:`fusecube.kernels.whittaker` (``_factor_solve``, ``_sweeps``, ``_inverse_diagonal``)
computes; tests compare the two. Only plain arrays cross the boundary.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Series solved together by the compiled kernel: independent recurrences side by side keep
#: the CPU's pipelines and SIMD lanes busy (one series alone is bound by the latency of its
#: serial recurrence), and a block's buffers stay in L1/L2 cache.
SOLVE_BLOCK = 64


@njit(cache=True, nogil=True, error_model="numpy")
def _factor_block(wt, u, lp, d0, d1, d2, inv_d, l1, l2, e_prev, m):
    """LDLᵀ factor and solve of ``(W + λDᵀD) z = u`` for ``m`` series side by side, in place.

    Arrays are ``(T, block)``; on return ``u`` holds ``z`` and ``inv_d``/``l1``/``l2`` the
    factors (the same recurrences as :func:`fusecube.kernels.whittaker._sweeps`, pixels in the inner loop).
    """
    n_t = wt.shape[0]
    for b in range(m):
        e_prev[b] = 0.0
    for i in range(n_t):
        for b in range(m):
            di = wt[i, b] + lp[b] * d0[i]
            ui = u[i, b]
            if i >= 1:
                di -= l1[i - 1, b] * e_prev[b]
                ui -= l1[i - 1, b] * u[i - 1, b]
            if i >= 2:
                di -= l2[i - 2, b] * (lp[b] * d2[i - 2])
                ui -= l2[i - 2, b] * u[i - 2, b]
            u[i, b] = ui
            inv = 1.0 / di
            inv_d[i, b] = inv
            if i + 1 < n_t:
                e = lp[b] * d1[i] - (l2[i - 1, b] * e_prev[b] if i >= 1 else 0.0)
                e_prev[b] = e
                l1[i, b] = e * inv
            if i + 2 < n_t:
                l2[i, b] = inv * (lp[b] * d2[i])
    for b in range(m):
        u[n_t - 1, b] *= inv_d[n_t - 1, b]
    for i in range(n_t - 2, -1, -1):
        for b in range(m):
            z = u[i, b] * inv_d[i, b] - l1[i, b] * u[i + 1, b]
            if i + 2 < n_t:
                z -= l2[i, b] * u[i + 2, b]
            u[i, b] = z


@njit(cache=True, nogil=True, error_model="numpy")
def _load_block(values, weights, start, m, wt, rhs, n_obs):
    """Weights and weighted values of series ``start..start+m`` into ``(T, block)`` buffers."""
    n_t = values.shape[1]
    has_weights = weights.shape[0] > 0
    for b in range(m):
        p = start + b
        n_obs[b] = 0
        for i in range(n_t):
            y = values[p, i]
            w = weights[p, i] if has_weights else 1.0
            if not (np.isfinite(y) and np.isfinite(w)) or w < 0:
                w = 0.0
            wt[i, b] = w
            rhs[i, b] = w * y if w > 0 else 0.0
            if w > 0:
                n_obs[b] += 1


@njit(cache=True, nogil=True, error_model="numpy")
def _solve_rows(values, weights, lam, d0, d1, d2, min_obs, out):
    """Compiled :func:`fusecube.kernels.whittaker._factor_solve`: ``(W + λDᵀD) z = W y`` for blocks of series.

    ``weights`` is ``(N, T)`` or ``(0, 0)`` (weight 1 on finite values); ``lam`` is ``(1,)``
    or ``(N,)``. NaN values or weights, and negative weights, weigh 0. Series with fewer than
    ``min_obs`` positive weights come back all-NaN in ``out`` (float32 ``(N, T)``).
    """
    n, n_t = values.shape
    nb = SOLVE_BLOCK
    wt = np.empty((n_t, nb))
    u = np.empty((n_t, nb))
    inv_d = np.empty((n_t, nb))
    l1 = np.zeros((n_t, nb))
    l2 = np.zeros((n_t, nb))
    lp = np.empty(nb)
    e_prev = np.empty(nb)
    n_obs = np.empty(nb, np.int64)
    for start in range(0, n, nb):
        m = min(nb, n - start)
        _load_block(values, weights, start, m, wt, u, n_obs)
        for b in range(m):
            lp[b] = lam[start + b] if lam.size > 1 else lam[0]
        _factor_block(wt, u, lp, d0, d1, d2, inv_d, l1, l2, e_prev, m)
        for b in range(m):
            p = start + b
            if n_obs[b] < min_obs:
                out[p, :] = np.nan
            else:
                for i in range(n_t):
                    out[p, i] = u[i, b]


@njit(cache=True, nogil=True, error_model="numpy")
def _select_rows(values, weights, lambdas, d0, d1, d2, ca, cb, cc, vcurve, best):
    """λ per series among ``lambdas`` (sorted) by GCV or the V-curve, into ``best`` (N,).

    The criteria of :func:`~fusecube.kernels.whittaker_lambda.whittaker_gcv` /
    :func:`~fusecube.kernels.whittaker_lambda.whittaker_vcurve`: every candidate is
    factored and solved for a block of series at once; GCV takes the hat-matrix trace from
    the diagonal of the inverse (Takahashi recurrence on the factors), the V-curve the
    roughness ``Σ (D z)²`` from the divided-difference rows ``(ca, cb, cc)``.
    """
    n, n_t = values.shape
    nb = SOLVE_BLOCK
    n_lam = lambdas.size
    wt = np.empty((n_t, nb))
    rhs = np.empty((n_t, nb))
    y = np.empty((n_t, nb))
    u = np.empty((n_t, nb))
    inv_d = np.empty((n_t, nb))
    l1 = np.zeros((n_t, nb))
    l2 = np.zeros((n_t, nb))
    s_ii = np.empty((n_t, nb))
    lp = np.empty(nb)
    e_prev = np.empty(nb)
    n_obs = np.empty(nb, np.int64)
    score = np.empty((n_lam, nb))  # GCV score, or the V-curve's log fit
    log_pen = np.empty((n_lam, nb))
    rss = np.empty(nb)
    extra = np.empty(nb)  # V-curve roughness, or the GCV hat-matrix trace
    s_next1 = np.empty(nb)
    for start in range(0, n, nb):
        m = min(nb, n - start)
        _load_block(values, weights, start, m, wt, rhs, n_obs)
        for i in range(n_t):
            for b in range(m):
                y[i, b] = rhs[i, b] / wt[i, b] if wt[i, b] > 0 else 0.0
        for k in range(n_lam):
            for b in range(m):
                lp[b] = lambdas[k]
            u[:, :m] = rhs[:, :m]
            _factor_block(wt, u, lp, d0, d1, d2, inv_d, l1, l2, e_prev, m)
            # every sum runs over time with the block's series side by side (SIMD lanes)
            for b in range(m):
                rss[b] = 0.0
                extra[b] = 0.0
            for i in range(n_t):
                for b in range(m):
                    rss[b] += wt[i, b] * (y[i, b] - u[i, b]) ** 2
            if vcurve:
                for i in range(n_t - 2):
                    for b in range(m):
                        r = ca[i] * u[i, b] + cb[i] * u[i + 1, b] + cc[i] * u[i + 2, b]
                        extra[b] += r * r
                for b in range(m):
                    score[k, b] = np.log(rss[b] + 1e-12)
                    log_pen[k, b] = np.log(extra[b] + 1e-12)
                continue
            # Takahashi: diagonal of (LDLᵀ)⁻¹ from the last row up (see whittaker._inverse_diagonal);
            # the hat-matrix trace is Σ w_i [·]_ii
            for b in range(m):
                s_next1[b] = 0.0  # Σ[i+1, i+2]
            for i in range(n_t - 1, -1, -1):
                for b in range(m):
                    s11 = s_ii[i + 1, b] if i + 1 < n_t else 0.0
                    s22 = s_ii[i + 2, b] if i + 2 < n_t else 0.0
                    s_i2 = -l1[i, b] * s_next1[b] - l2[i, b] * s22 if i + 2 < n_t else 0.0
                    s_i1 = -l1[i, b] * s11 - l2[i, b] * s_next1[b] if i + 1 < n_t else 0.0
                    s_ii[i, b] = inv_d[i, b] - l1[i, b] * s_i1 - l2[i, b] * s_i2
                    s_next1[b] = s_i1
            for i in range(n_t):
                for b in range(m):
                    extra[b] += wt[i, b] * s_ii[i, b]
            for b in range(m):
                n_w = max(n_obs[b], 1)
                score[k, b] = (rss[b] / n_w) / max(1.0 - extra[b] / n_w, 1e-9) ** 2
        for b in range(m):
            if vcurve:  # the shortest step between neighbouring (log fit, log penalty) points
                j = 0
                shortest = np.inf
                for k in range(n_lam - 1):
                    step = np.hypot(score[k + 1, b] - score[k, b], log_pen[k + 1, b] - log_pen[k, b])
                    if step < shortest:
                        shortest = step
                        j = k
                best[start + b] = np.sqrt(lambdas[j] * lambdas[j + 1])
            else:
                j = 0
                lowest = np.inf
                for k in range(n_lam):
                    if score[k, b] < lowest:
                        lowest = score[k, b]
                        j = k
                best[start + b] = lambdas[j]
