"""Radar-guided Whittaker gap-fill: NDVI = b · guide + smooth trend, fitted per series.

Model, per series (pixel): ``y(t) = b · g̃(t) + s(t) + noise`` where ``g̃`` is a radar guide
(an RVI series, or a radar-based NDVI estimate) smoothed by a Whittaker fit of strength
``λ_g``, ``s`` is a smooth trend with the Whittaker second-difference penalty of strength
``λ``, and ``b`` is one coefficient per series. Minimising ``Σ w (y - b g̃ - s)² + λ |D s|²``
over ``s`` and ``b`` has a closed form: with ``S = (W + λ DᵀD)⁻¹ W`` the Whittaker smoother
on the observation weights and ``u = g̃ - S g̃``,

    b = Σ w g̃ (y - S y) / (Σ w g̃ u + κ),    z = S y + b u.

The fit is linear in ``y``; its hat-matrix diagonal is ``H_ii = S_ii + w_i u_i² / (Σ w g̃ u + κ)``,
so the exact leave-one-out residual of each observation is ``(y_i - z_i) / (1 - H_ii)``.
``λ`` and ``λ_g`` are chosen per series from small candidate grids by that leave-one-out
error on the series' own observations: nothing but the observed values is ever looked at.
Radar carries the shape of the season through long cloud gaps; the trend ``s`` carries what
radar does not see (soil, calibration), anchored by the observations on both sides.

The fit of every candidate of every series runs in one compiled loop over series
(:mod:`fusecube.kernels.guided`), and so does the guide smoothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusecube.errors import ConfigError, CubeSchemaError
from fusecube.kernels.guided import guided_rows, smooth_guides
from fusecube.kernels.whittaker import difference_penalty, linear_fill

#: Candidate trend strengths λ (fixed a priori: powers of two from 1 to 256).
DEFAULT_LAMS: tuple[float, ...] = tuple(2.0**k for k in range(9))
#: Candidate guide smoothing strengths λ_g (fixed a priori: powers of four from 4 to 256).
DEFAULT_GUIDE_LAMS: tuple[float, ...] = (4.0, 16.0, 64.0, 256.0)
MIN_OBSERVATIONS = 4
"""Fewer observations than this leave a series all-NaN (the trend alone has 2 free directions,
the guide coefficient a third; one more is needed to leave one out)."""


@dataclass(frozen=True)
class GuidedFit:
    """Result of :func:`guided_whittaker` for ``N`` series of ``T`` dates.

    Attributes:
        filled: ``(N, T)`` float32: the observations where observed, the model (clipped to
            the NDVI range [-1, 1]) elsewhere.
        fitted: ``(N, T)`` float32 model curve ``b · g̃ + s`` at every date.
        coef: ``(N,)`` guide coefficient ``b``.
        lam: ``(N,)`` chosen trend strength λ.
        guide_lam: ``(N,)`` chosen guide smoothing λ_g (NaN when the guide is used as given).
        loo_rmse: ``(N,)`` leave-one-out RMSE of the chosen candidate on the observations.
    """

    filled: np.ndarray
    fitted: np.ndarray
    coef: np.ndarray
    lam: np.ndarray
    guide_lam: np.ndarray
    loo_rmse: np.ndarray


def _check(ndvi: np.ndarray, guide: np.ndarray, times: np.ndarray, lams) -> None:
    if ndvi.ndim != 2 or guide.shape != ndvi.shape or times.shape != (ndvi.shape[1],):
        raise CubeSchemaError(
            f"guided_whittaker needs ndvi and guide as (series, times) of the same shape and "
            f"times as (times,); got {ndvi.shape}, {guide.shape} and {times.shape}.")
    lam_values = np.asarray(lams, np.float64)
    if lam_values.size < 1 or not np.all(np.isfinite(lam_values)) or np.any(lam_values <= 0):
        raise ConfigError(f"Smoothing strengths must be finite and > 0; got {lams!r}.")


def smoothed_guides(guide: np.ndarray, times: np.ndarray,
                    guide_lams: tuple[float, ...] | None) -> np.ndarray:
    """The guide smoothed by each candidate λ_g, ``(G, N, T)`` float64, filled through gaps.

    The values of :func:`~fusecube.kernels.whittaker.whittaker` (``min_obs=3``), computed in
    the guided kernel's SIMD lanes; ``guide_lams=None`` uses the guide as given, its NaN
    filled by linear interpolation. A series the smoother cannot fill (fewer than 3 values)
    is 0: no guide.
    """
    guide = np.ascontiguousarray(guide, np.float32)
    if guide_lams is None:
        return np.nan_to_num(linear_fill(guide, times)[None].astype(np.float64))
    out = np.empty((len(guide_lams), *guide.shape))
    smooth_guides(guide, np.asarray(guide_lams, np.float64), *difference_penalty(times), 3, out)
    return out


def guided_whittaker(
    ndvi: np.ndarray,
    guide: np.ndarray,
    times: np.ndarray,
    *,
    lams: tuple[float, ...] = DEFAULT_LAMS,
    guide_lams: tuple[float, ...] | None = DEFAULT_GUIDE_LAMS,
    shrink: float = 0.0,
    min_obs: int = MIN_OBSERVATIONS,
) -> GuidedFit:
    """Gap-fill NDVI series with the radar-guided Whittaker model (module docstring).

    Args:
        ndvi: ``(N, T)`` NDVI, NaN where not observed.
        guide: ``(N, T)`` radar guide (e.g. RVI, or a radar-based NDVI estimate), NaN allowed.
        times: ``(T,)`` sample times in days, strictly increasing.
        lams: Candidate trend strengths λ; one value fixes λ.
        guide_lams: Candidate guide smoothing strengths λ_g; ``None`` uses the guide as given.
        shrink: Ridge penalty κ on ``b`` (shrinks it towards 0; 0 = least squares).
        min_obs: Series with fewer observations come back all-NaN.

    Returns:
        A :class:`GuidedFit`; λ and λ_g per series minimise the exact leave-one-out error on
        that series' observations.

    Raises:
        CubeSchemaError: Shapes disagree or times are not strictly increasing.
        ConfigError: A smoothing strength is not finite and positive, or ``min_obs < 3``.
    """
    values = np.asarray(ndvi, np.float64)
    times = np.asarray(times, np.float64)
    _check(values, np.asarray(guide), times, lams)
    if guide_lams is not None:
        _check(values, np.asarray(guide), times, guide_lams)
    if min_obs < 3:
        raise ConfigError(f"min_obs must be at least 3 (a trend through fewer observations has "
                          f"nothing left to leave out); got {min_obs}.")
    # a series without any guide value gets a zero guide: b = 0, a plain Whittaker fit
    guides = smoothed_guides(guide, times, guide_lams)
    n, n_t = values.shape
    fitted = np.full((n, n_t), np.nan, np.float32)
    coef = np.full(n, np.nan)
    lam_index = np.zeros(n, np.int64)
    guide_index = np.zeros(n, np.int64)
    loo_mse = np.full(n, np.nan)
    lam_grid = np.asarray(lams, np.float64)
    guide_grid = np.full(1, np.nan) if guide_lams is None else np.asarray(guide_lams, np.float64)
    guided_rows(values, guides, lam_grid, *difference_penalty(times),
                float(shrink), int(min_obs), fitted, coef, lam_index, guide_index, loo_mse)
    enough = np.isfinite(values).sum(axis=1) >= min_obs
    # NDVI is bounded: a trend extrapolated through a long gap at a series end must not leave
    # [-1, 1] (the fitted curve is kept as fitted)
    filled = np.where(np.isfinite(values), values, np.clip(fitted, -1.0, 1.0)).astype(np.float32)
    filled[~enough] = np.nan
    return GuidedFit(filled=filled, fitted=fitted, coef=coef.astype(np.float32),
                     lam=np.where(enough, lam_grid[lam_index], np.nan),
                     guide_lam=np.where(enough, guide_grid[guide_index], np.nan),
                     loo_rmse=np.sqrt(loo_mse))
