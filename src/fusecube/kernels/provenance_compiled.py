"""Compiled ``ndvi_source`` codes and ``ndvi_sigma`` in one pass per series (numba).

Computes exactly what :func:`fusecube.stages.provenance.source_codes` and
:meth:`fusecube.evaluate.uncertainty.SigmaModel.sigma_of` on
:func:`fusecube.kernels.gaps.days_to_observation` compute with numpy (tests compare them), in
two sweeps over each series instead of a dozen whole-array passes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# the codes of fusecube.stages.provenance.SOURCE_FLAGS
NONE, OBSERVED, S1_FUSED, INTERPOLATED, SMOOTHED_ONLY, SCREENED_OUT = range(6)


@njit(cache=True, nogil=True, error_model="numpy")
def _provenance(raw, observed, fused, smoothed, radar, use_radar, days, stratum, edges, table,
                noise, largest, with_sigma, codes, sigma):
    n, n_t = raw.shape
    last = np.empty(n_t)
    n_bins = edges.size
    for p in range(n):
        seen = -np.inf
        for t in range(n_t):
            if np.isfinite(observed[p, t]):
                seen = days[t]
            last[t] = seen
        following = np.inf
        for t in range(n_t - 1, -1, -1):
            if np.isfinite(observed[p, t]):
                following = days[t]
            code = NONE
            if np.isfinite(observed[p, t]):
                code = OBSERVED
            elif np.isfinite(raw[p, t]):
                code = SCREENED_OUT
            elif np.isfinite(fused[p, t]):
                code = S1_FUSED if use_radar and radar[p, t] else INTERPOLATED
            elif np.isfinite(smoothed[p, t]):
                code = SMOOTHED_ONLY
            codes[p, t] = code
            if not with_sigma:
                sigma[p, t] = np.nan
                continue
            if code == NONE:
                sigma[p, t] = np.nan
            elif code == SMOOTHED_ONLY:
                sigma[p, t] = largest
            elif code == OBSERVED:
                sigma[p, t] = noise
            else:
                distance = np.float32(min(days[t] - last[t], following - days[t]))
                b = 0
                while b < n_bins - 1 and edges[b] < distance:
                    b += 1
                sigma[p, t] = table[stratum[p], b]


def provenance_rows(raw: np.ndarray, observed: np.ndarray, fused: np.ndarray,
                    smoothed: np.ndarray, radar: np.ndarray | None, days: np.ndarray,
                    model=None, paddy: np.ndarray | None = None,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(codes uint8, sigma float32)`` of ``(N, T)`` series.

    Args:
        raw: NDVI before the input screen.
        observed: NDVI after the screen.
        fused: ``ndvi_fused``.
        smoothed: ``ndvi_smooth``.
        radar: ``(N, T)`` bool where a radar method had S1, or None for optical methods.
        days: ``(T,)`` sample times.
        model: The run's :class:`~fusecube.evaluate.uncertainty.SigmaModel` (None: σ NaN).
        paddy: ``(N,)`` bool strata, used when the model has per-stratum σ.
    """
    n, n_t = raw.shape
    codes = np.empty((n, n_t), np.uint8)
    sigma = np.empty((n, n_t), np.float32)
    stratum = np.zeros(n, np.int64)
    if model is None:
        edges, table, noise, largest = np.zeros(1), np.zeros((1, 1)), 0.0, 0.0
    else:
        edges = np.asarray(model.edges, np.float32).astype(np.float64)
        rows = [model.sigma["all"]]
        if paddy is not None and "paddy" in model.sigma:
            rows = [model.sigma["other"], model.sigma["paddy"]]
            stratum = np.asarray(paddy, bool).astype(np.int64)
        table = np.asarray(rows, np.float32).astype(np.float64)
        noise, largest = float(np.float32(model.noise)), float(np.float32(max(model.sigma["all"])))
    use_radar = radar is not None
    radar = np.zeros((1, 1), np.bool_) if radar is None else np.ascontiguousarray(radar)

    def c(a):
        return np.ascontiguousarray(a, np.float32)

    _provenance(c(raw), c(observed), c(fused), c(smoothed), radar, use_radar,
                np.asarray(days, np.float64), stratum, edges, table, noise, largest,
                model is not None, codes, sigma)
    return codes, sigma
