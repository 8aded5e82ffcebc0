"""Whittaker smoothing strength chosen per pixel: generalised cross-validation and the V-curve.

Every candidate λ is scored for all pixels by the compiled kernel
(:func:`fusecube.kernels.whittaker_compiled._select_rows`), then the series are solved with
the λ chosen for each (:func:`fusecube.kernels.whittaker.whittaker`).
"""

from __future__ import annotations

import numpy as np

from fusecube.errors import ConfigError, CubeSchemaError
from fusecube.kernels.whittaker import _check_lambda, difference_coefficients, difference_penalty, whittaker
from fusecube.kernels.whittaker_compiled import _select_rows

#: Default candidate smoothing strengths for GCV and the V-curve (log-spaced).
DEFAULT_LAMBDAS = np.logspace(-1, 3, 17)


def _select(
    values: np.ndarray, times: np.ndarray, lambdas: np.ndarray, weights: np.ndarray | None,
    min_obs: int, criterion: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Shared path of GCV and the V-curve: score every candidate λ (compiled), then solve."""
    lambdas = np.asarray(lambdas, dtype=np.float64)
    _check_lambda(lambdas)
    if lambdas.size < 2:
        raise ConfigError("Choosing λ needs at least two candidate values.")
    lambdas = np.sort(lambdas)
    values = np.asarray(values)
    if values.ndim != 2:
        raise CubeSchemaError(f"Whittaker input must be (pixels, times); got shape {values.shape}.")
    d0, d1, d2 = difference_penalty(times)
    if values.shape[1] != d0.size:
        raise CubeSchemaError(f"Values have {values.shape[1]} time steps but times has {d0.size}.")
    if weights is not None and np.shape(weights) != values.shape:
        raise CubeSchemaError(
            f"Weights shape {np.shape(weights)} differs from values shape {values.shape}.")
    w = np.empty((0, 0)) if weights is None else np.ascontiguousarray(weights, np.float64)
    best = np.empty(values.shape[0])
    _select_rows(np.ascontiguousarray(values, np.float64), w, lambdas, d0, d1, d2,
                 *difference_coefficients(times), criterion == "vcurve", best)
    return whittaker(values, times, lam=best, weights=weights, min_obs=min_obs), best


def whittaker_gcv(
    values: np.ndarray,
    times: np.ndarray,
    *,
    lambdas: np.ndarray = DEFAULT_LAMBDAS,
    weights: np.ndarray | None = None,
    min_obs: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Whittaker smoother with the smoothing strength chosen per pixel by generalised CV.

    GCV(λ) = (RSS/n) / (1 - tr(H)/n)², with the hat-matrix trace from the diagonal of the
    inverse (Takahashi recurrence on the LDLᵀ factors), all pixels at once.

    Args:
        values: ``(N, T)`` series with NaN for missing.
        times: ``(T,)`` sample times in days.
        lambdas: Candidate smoothing strengths.
        weights: Optional ``(N, T)`` observation weights.
        min_obs: Minimum observations of positive weight per pixel.

    Returns:
        ``(smoothed (N, T) float32, chosen lambda (N,) float64)``.
    """
    return _select(values, times, lambdas, weights, min_obs, "gcv")


def whittaker_vcurve(
    values: np.ndarray,
    times: np.ndarray,
    *,
    lambdas: np.ndarray = DEFAULT_LAMBDAS,
    weights: np.ndarray | None = None,
    min_obs: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Whittaker smoother with the smoothing strength chosen per pixel by the V-curve.

    For each candidate λ the fit ``log Σ w (y - z)²`` and the roughness ``log Σ (D z)²`` are
    computed; the chosen λ sits where consecutive points are closest (the bottom of the V).

    Args:
        values: ``(N, T)`` series with NaN for missing.
        times: ``(T,)`` sample times in days.
        lambdas: Candidate smoothing strengths (at least two).
        weights: Optional ``(N, T)`` observation weights.
        min_obs: Minimum observations of positive weight per pixel.

    Returns:
        ``(smoothed (N, T) float32, chosen lambda (N,) float64)``.
    """
    return _select(values, times, lambdas, weights, min_obs, "vcurve")
