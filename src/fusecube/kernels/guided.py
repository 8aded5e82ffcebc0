"""Compiled kernel of the radar-guided Whittaker fit: every candidate (λ, λ_g) of every series.

Knows nothing of xarray; arrays are ``(n_series, n_times)``. A compiled (numba) loop solves
:data:`LANES` series side by side, one per SIMD lane: a single series' factorisation is a
serial chain (each pivot waits on a division and the previous pivot), so alone it leaves the
CPU mostly idle; in lanes the chains overlap (the 36 candidates of the default grids: ~18 µs
per 145-date series, against ~28 µs one series at a time, and ~0.4 ms as numpy vector
operations over time). The lanes' passes are then bound by memory traffic: the factors of 16
series of 145 dates outgrow the L1 cache, and fewer lanes leave the chains exposed. Each series
still gets exactly the arithmetic of a one-series solve (tested: a batch equals its series
fitted alone).

For one candidate λ the system ``A = W + λ DᵀD`` is factored once (LDLᵀ, pentadiagonal);
the same factors solve for ``S y`` and every ``S g̃`` (``S = A⁻¹ W``) and give the diagonal of
``A⁻¹`` by the Takahashi recurrence, hence the hat-matrix diagonal and exact leave-one-out
residuals (see :mod:`fusecube.fusion.guided.model` for the model).
"""

from __future__ import annotations

import numpy as np
from numba import njit

LOO_FLOOR = 1e-6
"""Smallest ``1 - H_ii`` used in a leave-one-out residual (an observation the fit must pass
through, e.g. alone at the end of a series, would otherwise divide by 0)."""


LANES = 16
"""Series solved side by side by :func:`guided_rows` (one SIMD lane each)."""
_LANES = np.uint64(LANES)


@njit(cache=True, nogil=True, error_model="numpy")
def _fit_lanes(m, n_t, n_g, w, y, g, lam, p0, p1, p2, with_inverse, d_prev, d_prev2,
               inv_d, l1, l2, sol, inv):
    """Solve ``(W + λP) s = W x`` for ``x = y`` and every guide, and diag((W + λP)⁻¹), in lanes.

    ``m`` series side by side, one per lane. Buffers are flat, lane-minor (element ``b`` of
    date row ``i`` at ``i * LANES + b``): ``w``, ``y`` and ``inv_d`` ``(T, LANES)``, ``g``
    ``(G, T, LANES)``; ``l1``, ``l2``, ``inv`` ``(T + 4, LANES)`` and ``sol`` ``(1 + G, T + 4,
    LANES)`` hold date ``i`` at row ``i + 2`` between two zero rows on each side, so every date
    takes the same branch-free update (a zero factor or neighbour subtracts an exact 0). ``p1``
    and ``p2`` are zero-padded to ``T``. Each lane performs exactly the arithmetic of a
    one-series solve; the loops over lanes vectorise (unsigned indices and a lane stride known
    at compile time let the compiler prove the rows apart), so ``m`` serial recurrences run
    side by side. One forward pass factors ``W + λP = LDLᵀ`` (keeping 1 / pivots) while it
    substitutes forwards; one backward pass substitutes backwards while it runs the Takahashi
    recurrence for the diagonal of the inverse (if ``with_inverse``).
    """
    lanes = np.uint64(m)
    rows = np.uint64(n_t + 4) * _LANES  # one right-hand side's block of ``sol``
    plane = np.uint64(n_t) * _LANES  # one guide's block of ``g``
    for b in range(lanes):
        d_prev[b] = 0.0  # pivots of the two previous dates
        d_prev2[b] = 0.0
    for i in range(n_t):
        here = np.uint64(i) * _LANES  # date i in the (T, LANES) buffers
        at = np.uint64(i + 2) * _LANES  # date i in the padded ones
        back1 = at - _LANES
        back2 = back1 - _LANES
        diag, off1, off2 = p0[i], p1[i], p2[i]
        for b in range(lanes):
            di = (w[here + b] + lam[b] * diag - l1[back1 + b] * l1[back1 + b] * d_prev[b]
                  - l2[back2 + b] * l2[back2 + b] * d_prev2[b])
            inv_i = 1.0 / di
            inv_d[here + b] = inv_i
            l1[at + b] = (lam[b] * off1 - l2[back1 + b] * l1[back1 + b] * d_prev[b]) * inv_i
            l2[at + b] = lam[b] * off2 * inv_i
            d_prev2[b] = d_prev[b]
            d_prev[b] = di
        for b in range(lanes):
            sol[at + b] = (w[here + b] * y[here + b] - l1[back1 + b] * sol[back1 + b]
                           - l2[back2 + b] * sol[back2 + b])
        for j in range(n_g):
            r = np.uint64(j + 1) * rows
            q = np.uint64(j) * plane + here
            for b in range(lanes):
                sol[r + at + b] = (w[here + b] * g[q + b] - l1[back1 + b] * sol[r + back1 + b]
                                   - l2[back2 + b] * sol[r + back2 + b])
    for b in range(lanes):
        d_prev[b] = 0.0  # now Σ[i+1, i+2] and Σ[i+2, i+2] of the Takahashi recurrence
        d_prev2[b] = 0.0
    for i in range(n_t - 1, -1, -1):
        here = np.uint64(i) * _LANES
        at = np.uint64(i + 2) * _LANES
        ahead1 = at + _LANES
        ahead2 = ahead1 + _LANES
        if with_inverse:
            for b in range(lanes):
                s11 = inv[ahead1 + b]  # Σ[i+1, i+1]
                s_i1 = -l1[at + b] * s11 - l2[at + b] * d_prev[b]
                s_i2 = -l1[at + b] * d_prev[b] - l2[at + b] * d_prev2[b]
                inv[at + b] = inv_d[here + b] - l1[at + b] * s_i1 - l2[at + b] * s_i2
                d_prev2[b] = s11
                d_prev[b] = s_i1
        for j in range(n_g + 1):
            r = np.uint64(j) * rows
            for b in range(lanes):
                sol[r + at + b] = (sol[r + at + b] * inv_d[here + b]
                                   - l1[at + b] * sol[r + ahead1 + b]
                                   - l2[at + b] * sol[r + ahead2 + b])


@njit(cache=True, nogil=True, error_model="numpy")
def guided_rows(values, guides, lams, p0, p1, p2, shrink, min_obs,
                fitted, coef, lam_index, guide_index, loo_mse):
    """Fit every (λ, λ_g) candidate of every series; keep the one of least leave-one-out error.

    Series with enough observations are solved :data:`LANES` at a time (:func:`_fit_lanes`);
    the leave-one-out scores then run per series over its observed dates, every guide in the
    same loop. Each series gets exactly the arithmetic of a one-series fit.

    Args:
        values: ``(N, T)`` float64 NDVI, NaN where not observed.
        guides: ``(G, N, T)`` float64 smoothed guides, finite.
        lams: ``(K,)`` candidate trend strengths.
        p0: Main diagonal of the penalty (:func:`fusecube.kernels.whittaker.difference_penalty`).
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
    nb = LANES
    rows = (n_t + 4) * nb
    active = np.empty(n, np.int64)  # the series with enough observations
    n_active = 0
    for p in range(n):
        count = 0
        for i in range(n_t):
            if np.isfinite(values[p, i]):
                count += 1
        if count >= min_obs:
            active[n_active] = p
            n_active += 1
    w = np.empty(n_t * nb)
    y = np.empty(n_t * nb)
    g = np.empty(n_g * n_t * nb)
    inv_d = np.empty(n_t * nb)
    l1 = np.zeros(rows)
    l2 = np.zeros(rows)
    inv = np.zeros(rows)
    sol = np.zeros((1 + n_g) * rows)
    p1_full = np.zeros(n_t)  # the off-diagonals run out at the last dates
    p1_full[: n_t - 1] = p1
    p2_full = np.zeros(n_t)
    p2_full[: n_t - 2] = p2
    lam = np.empty(nb)
    d_prev = np.empty(nb)
    d_prev2 = np.empty(nb)
    obs = np.empty(n_t, np.int64)
    denom = np.empty(n_g)  # per guide candidate
    num = np.empty(n_g)
    coef_j = np.empty(n_g)
    h_scale = np.empty(n_g)
    score = np.empty(n_g)
    best = np.empty(nb)
    for start in range(0, n_active, nb):
        m = min(nb, n_active - start)
        for b in range(m):
            p = active[start + b]
            best[b] = np.inf
            for i in range(n_t):
                ok = np.isfinite(values[p, i])
                w[i * nb + b] = 1.0 if ok else 0.0
                y[i * nb + b] = values[p, i] if ok else 0.0
                for j in range(n_g):
                    g[(j * n_t + i) * nb + b] = guides[j, p, i]
        for k in range(lams.size):
            for b in range(m):
                lam[b] = lams[k]
            _fit_lanes(m, n_t, n_g, w, y, g, lam, p0, p1_full, p2_full, True, d_prev, d_prev2,
                       inv_d, l1, l2, sol, inv)
            for b in range(m):
                p = active[start + b]
                n_obs = 0
                for i in range(n_t):
                    if w[i * nb + b] > 0:
                        obs[n_obs] = i
                        n_obs += 1
                # b, its hat term and the LOO residuals need the observed dates only; every
                # guide is summed in the same loop (independent sums, each in date order)
                for j in range(n_g):
                    denom[j] = shrink
                    num[j] = 0.0
                for q in range(n_obs):
                    i = obs[q]
                    at = (i + 2) * nb + b
                    resid = y[i * nb + b] - sol[at]
                    for j in range(n_g):
                        gi = g[(j * n_t + i) * nb + b]
                        denom[j] += gi * (gi - sol[(j + 1) * rows + at])
                        num[j] += gi * resid
                for j in range(n_g):
                    usable = abs(denom[j]) > 1e-12
                    coef_j[j] = num[j] / denom[j] if usable else 0.0
                    h_scale[j] = 1.0 / denom[j] if usable else 0.0
                    score[j] = 0.0
                for q in range(n_obs):
                    i = obs[q]
                    at = (i + 2) * nb + b
                    resid = y[i * nb + b] - sol[at]
                    for j in range(n_g):
                        u = g[(j * n_t + i) * nb + b] - sol[(j + 1) * rows + at]
                        hat = inv[at] + h_scale[j] * u * u
                        r = (resid - coef_j[j] * u) / max(1.0 - hat, LOO_FLOOR)
                        score[j] += r * r
                for j in range(n_g):
                    mse = score[j] / n_obs
                    if mse < best[b]:
                        best[b] = mse
                        coef[p] = coef_j[j]
                        lam_index[p] = k
                        guide_index[p] = j
                        loo_mse[p] = mse
        # the chosen candidate's curve at every date
        for b in range(m):
            lam[b] = lams[lam_index[active[start + b]]]
        _fit_lanes(m, n_t, n_g, w, y, g, lam, p0, p1_full, p2_full, False, d_prev, d_prev2,
                   inv_d, l1, l2, sol, inv)
        for b in range(m):
            p = active[start + b]
            j = guide_index[p]
            for i in range(n_t):
                at = (i + 2) * nb + b
                fitted[p, i] = sol[at] + coef[p] * (g[(j * n_t + i) * nb + b] - sol[(j + 1) * rows + at])


@njit(cache=True, nogil=True, error_model="numpy")
def smooth_guides(guide, guide_lams, d0, d1, d2, min_obs, out):
    """Whittaker-smooth every series of ``guide`` with every ``λ_g``, :data:`LANES` at a time.

    The values of :func:`fusecube.kernels.whittaker.whittaker` (weight 1 on finite values,
    rounded to float32 as it returns them), computed with its arithmetic in SIMD lanes as
    :func:`_fit_lanes` does; series with fewer than ``min_obs`` values come back 0 (the
    caller's no-guide value).

    Args:
        guide: ``(N, T)`` float32 guide, NaN where missing.
        guide_lams: ``(G,)`` smoothing strengths.
        d0: Main diagonal of the penalty (:func:`fusecube.kernels.whittaker.difference_penalty`).
        d1: Its first off-diagonal.
        d2: Its second off-diagonal.
        min_obs: Fewest finite values to smooth.
        out: ``(G, N, T)`` float64 output.
    """
    n, n_t = guide.shape
    nb = LANES
    lanes_u = _LANES
    d1_full = np.zeros(n_t)  # zero-padded: the off-diagonals run out at the last dates
    d1_full[: n_t - 1] = d1
    d2_full = np.zeros(n_t + 2)  # d2 of date i - 2 at i; zero before the first and after the last
    d2_full[2:n_t] = d2
    w = np.empty(n_t * nb)
    u = np.zeros((n_t + 4) * nb)  # date i at row i + 2 between zero rows
    l1 = np.zeros((n_t + 4) * nb)
    l2 = np.zeros((n_t + 4) * nb)
    inv_d = np.empty(n_t * nb)
    e_prev = np.empty(nb)
    counts = np.empty(nb, np.int64)
    for jg in range(guide_lams.size):
        lp = guide_lams[jg]
        for start in range(0, n, nb):
            m = min(nb, n - start)
            lanes = np.uint64(m)
            for b in range(m):
                counts[b] = 0
                e_prev[b] = 0.0
                for i in range(n_t):
                    value = guide[start + b, i]
                    ok = np.isfinite(value)
                    w[i * nb + b] = 1.0 if ok else 0.0
                    u[(i + 2) * nb + b] = 1.0 * value if ok else 0.0
                    if ok:
                        counts[b] += 1
            for i in range(n_t):
                here = np.uint64(i) * lanes_u
                at = np.uint64(i + 2) * lanes_u
                back1 = at - lanes_u
                back2 = back1 - lanes_u
                diag, off1 = lp * d0[i], lp * d1_full[i]
                off2_prev, off2 = lp * d2_full[i], lp * d2_full[i + 2]
                for b in range(lanes):
                    di = w[here + b] + diag - l1[back1 + b] * e_prev[b] - l2[back2 + b] * off2_prev
                    u[at + b] = (u[at + b] - l1[back1 + b] * u[back1 + b]
                                 - l2[back2 + b] * u[back2 + b])
                    inv = 1.0 / di
                    inv_d[here + b] = inv
                    e = off1 - l2[back1 + b] * e_prev[b]
                    e_prev[b] = e
                    l1[at + b] = e * inv
                    l2[at + b] = inv * off2
            for i in range(n_t - 1, -1, -1):
                here = np.uint64(i) * lanes_u
                at = np.uint64(i + 2) * lanes_u
                ahead1 = at + lanes_u
                ahead2 = ahead1 + lanes_u
                for b in range(lanes):
                    u[at + b] = (u[at + b] * inv_d[here + b] - l1[at + b] * u[ahead1 + b]
                                 - l2[at + b] * u[ahead2 + b])
            for b in range(m):
                for i in range(n_t):
                    smoothed = np.float32(u[(i + 2) * nb + b])
                    out[jg, start + b, i] = smoothed if counts[b] >= min_obs else 0.0
