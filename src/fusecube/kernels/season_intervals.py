"""± days of season dates, propagated from the NDVI uncertainty (delta method, vectorised).

The smoother is linear: a perturbation ``e`` of the gap-filled series moves the smoothed
curve by ``e @ W`` (``W``, the Whittaker hat matrix of the run's λ; :func:`hat_matrix`). Each
date is a smooth function of a few smoothed values, so to first order its shift is a weighted
sum ``Σ_j a_j e_j`` whose weights ``a`` come from rows of ``W``:

- ``sos`` / ``eos``: where the curve crosses ``base + fraction x (peak - base)``; the shift is
  ``-(δy(t*) - δlevel) / slope(t*)``.
- ``pos`` and ``planting``: the vertex of the parabola through the extreme sample and its
  neighbours, ``Δ (δy₋ - δy₊) / (2 curvature)``.
- ``harvest``: the vertex of the parabola through the slopes around the steepest decline.

The noise of an observation is independent (σ = observation noise); the error of a gap-fill
is shared by the whole gap (one draw per gap: fill errors are correlated along a gap), so its
variance is ``Σ_gaps (Σ_{j in gap} a_j σ_j)² + Σ_obs a_j² σ_j²``. A date read off a series
sampled every Δ days is also only known to about ±Δ/2 (σ = Δ/√12), added in quadrature. The
half-width is ``1.96 x`` the combined σ, capped at :data:`MAX_SIGMA_DAYS`.
"""

from __future__ import annotations

import numpy as np

from fusecube.kernels.season_intervals_compiled import functional_variances, lowest_between
from fusecube.kernels.seasons import DATE_METRICS
from fusecube.kernels.whittaker import whittaker

Z95 = 1.959964
MAX_SIGMA_DAYS = 30.0
"""Largest σ of a date (days): beyond it the linearisation says nothing useful."""
BASE_SEARCH_DAYS = 90.0
"""How far before SOS (after EOS) the base of the crossing level is looked for."""


def hat_matrix(days: np.ndarray, lam: float) -> np.ndarray:
    """``W`` with ``smooth(e) = e @ W`` for the uniformly weighted Whittaker smoother."""
    eye = np.eye(np.asarray(days).size)
    return whittaker(eye, days, lam=lam, min_obs=1).astype(np.float64)


def segment_starts(observed: np.ndarray) -> np.ndarray:
    """Flat indices where a segment of ``observed`` ``(M, T)`` starts.

    Every observation is one segment, every run of gaps another (:func:`functional_variance`).
    """
    first = np.zeros(observed.shape, bool)
    first[:, 0] = True
    first[:, 1:] = observed[:, 1:] | observed[:, :-1]
    return np.flatnonzero(first | observed)


def functional_variance(a: np.ndarray, sigma: np.ndarray, observed: np.ndarray,
                        starts: np.ndarray | None = None) -> np.ndarray:
    """Variance of ``Σ_j a_j e_j`` for each row of ``a`` ``(M, T)``.

    ``e_j`` has σ ``sigma`` ``(M, T)``: independent on observations (``observed``), one shared
    draw per gap run elsewhere. One pass: the sums of ``a σ`` over the segments of
    :func:`segment_starts`, squared and added per row.
    """
    starts = segment_starts(observed) if starts is None else starts
    sums = np.add.reduceat((a * sigma).ravel(), starts)
    return np.bincount(starts // a.shape[1], sums * sums, minlength=a.shape[0])


def _index_of(days: np.ndarray, when: np.ndarray) -> np.ndarray:
    """Index of the sample nearest each time (NaN → 0)."""
    k = np.clip(np.searchsorted(days, np.nan_to_num(when), side="left"), 1, days.size - 1)
    return np.where(np.abs(days[k - 1] - when) <= np.abs(days[k] - when), k - 1, k)


def _lowest_between(curve: np.ndarray, days: np.ndarray, pix: np.ndarray, start: np.ndarray,
                    stop: np.ndarray) -> np.ndarray:
    """Index of the lowest sample of series ``pix`` within ``[start, stop]`` days."""
    lo = np.clip(np.searchsorted(days, np.nan_to_num(start), side="left"), 0, days.size - 1)
    hi = np.clip(np.searchsorted(days, np.nan_to_num(stop), side="right") - 1, lo, days.size - 1)
    return lowest_between(curve, pix, lo, hi)


def _vertex_terms(curve: np.ndarray, days: np.ndarray, pix: np.ndarray,
                  k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Terms of the vertex shift of the parabola through samples ``k-1, k, k+1``."""
    k = np.clip(k, 1, days.size - 2)
    y0, y1, y2 = curve[pix, k - 1], curve[pix, k], curve[pix, k + 1]
    step = 0.5 * (days[k + 1] - days[k - 1])
    curvature = y0 - 2 * y1 + y2
    scale = step / (2 * np.where(np.abs(curvature) > 1e-6, curvature, 1e-6))
    return np.stack([k - 1, k + 1], axis=1), np.stack([scale, -scale], axis=1)


def _crossing_terms(curve, days, pix, when, peak, base, fraction):
    """Terms of the shift of a level crossing at ``when`` (level from ``base`` and ``peak``)."""
    k = np.clip(np.searchsorted(days, np.nan_to_num(when), side="right"), 1, days.size - 1)
    t0, t1 = days[k - 1], days[k]
    share = np.clip((when - t0) / (t1 - t0), 0.0, 1.0)
    slope = (curve[pix, k] - curve[pix, k - 1]) / (t1 - t0)
    slope = np.where(np.abs(slope) > 1e-6, slope, 1e-6)
    coef = np.stack([1 - share, share, np.full_like(share, -(1 - fraction)),
                     np.full_like(share, -fraction)], axis=1) / -slope[:, None]
    return np.stack([k - 1, k, base, peak], axis=1), coef


def _harvest_terms(curve, days, pix, when):
    """Terms of the vertex shift of the slope parabola around the steepest decline."""
    n_t = days.size
    mids = 0.5 * (days[1:] + days[:-1])
    k = _index_of(mids, when).clip(1, n_t - 3)
    y = [curve[pix, k + i] for i in (-1, 0, 1, 2)]
    s0, s1, s2 = ((y[i + 1] - y[i]) / (days[k + i] - days[k + i - 1]) for i in range(3))
    curvature = s0 - 2 * s1 + s2
    scale = 1 / (2 * np.where(np.abs(curvature) > 1e-8, curvature, 1e-8))
    # Δ (δs_{k-1} - δs_{k+1}) / (2 c) with δs_i = (δy_{i+1} - δy_i) / Δ
    coef = scale[:, None] * np.array([-1.0, 1.0, 1.0, -1.0])[None]
    return np.stack([k - 1, k, k + 1, k + 2], axis=1), coef


def dense_weights(wt: np.ndarray, idx: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``(M, T)`` weights ``Σ_r coef[:, r] wt[idx[:, r]]`` (for the numpy reference)."""
    return np.einsum("mr,mrt->mt", coef, wt[idx])


def date_intervals(curve: np.ndarray, sigma: np.ndarray, observed: np.ndarray,
                   dates: dict[str, np.ndarray], days: np.ndarray, *, lam: float,
                   sos_fraction: float = 0.2, eos_fraction: float = 0.2,
                   hat: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """± days (95 %) of each season date, for ``N`` pixels.

    Args:
        curve: ``(N, T)`` smoothed NDVI the seasons were detected on.
        sigma: ``(N, T)`` σ of each value of the gap-filled series (``ndvi_sigma``).
        observed: ``(N, T)`` bool, observed values.
        dates: Per name of :data:`DATE_METRICS`, ``(N, S)`` detected dates (days; NaN: none).
        days: ``(T,)`` sample times.
        lam: The smoothing strength of the run.
        sos_fraction: The SOS level's share of the amplitude (the run's rules).
        eos_fraction: The EOS level's share.
        hat: The hat matrix, when the caller has it (:func:`hat_matrix`).

    Returns:
        Per date name, ``(N, S)`` half-widths in days (NaN where the slot has no season).
    """
    days = np.asarray(days, np.float64)
    n, n_s = dates["pos"].shape
    out = {name: np.full((n, n_s), np.nan) for name in DATE_METRICS}
    pix, slot = np.nonzero(np.isfinite(dates["pos"]))
    if pix.size == 0 or days.size < 4:
        return out
    wt = (hat_matrix(days, lam) if hat is None else hat).T  # row t: weights of smooth at t
    y = np.ascontiguousarray(curve, np.float64)
    sig = np.nan_to_num(np.asarray(sigma, np.float64), nan=0.0)
    when = {name: dates[name][pix, slot] for name in DATE_METRICS}
    peak = _index_of(days, when["pos"])
    left = _lowest_between(y, days, pix, when["sos"] - BASE_SEARCH_DAYS, when["sos"])
    right = _lowest_between(y, days, pix, when["eos"], when["eos"] + BASE_SEARCH_DAYS)
    terms = {
        "pos": _vertex_terms(y, days, pix, peak),
        "planting": _vertex_terms(y, days, pix, _index_of(days, when["planting"])),
        "sos": _crossing_terms(y, days, pix, when["sos"], peak, left, sos_fraction),
        "eos": _crossing_terms(y, days, pix, when["eos"], peak, right, eos_fraction),
        "harvest": _harvest_terms(y, days, pix, when["harvest"]),
    }
    resolution = float(np.median(np.diff(days))) ** 2 / 12.0
    for name in DATE_METRICS:
        idx, coef = terms[name]
        spread = functional_variances(wt, sig, observed, pix, idx, coef)
        half = Z95 * np.sqrt(np.minimum(spread, MAX_SIGMA_DAYS**2) + resolution)
        out[name][pix, slot] = np.where(np.isfinite(when[name]), half, np.nan)
    return out
