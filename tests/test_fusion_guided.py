"""Radar-guided Whittaker (fusion.guided): exact against dense solves and brute-force CV."""

from __future__ import annotations

import numpy as np
import pytest

from fusecube.errors import ConfigError, CubeSchemaError
from fusecube.fusion.guided.model import guided_whittaker


def _times(rng: np.random.Generator, n_t: int) -> np.ndarray:
    return np.cumsum(rng.integers(1, 6, n_t)).astype(np.float64)


def _dense_penalty(times: np.ndarray) -> np.ndarray:
    """DᵀD of scaled second divided differences, built row by row from the definition."""
    h = np.diff(times)
    d = np.zeros((times.size - 2, times.size))
    for i in range(times.size - 2):
        h1, h2 = h[i], h[i + 1]
        d[i, i : i + 3] = [2 / (h1 * (h1 + h2)), -2 / (h1 * h2), 2 / (h2 * (h1 + h2))]
    d *= h.mean() ** 2
    return d.T @ d


def _dense_fit(y: np.ndarray, guide: np.ndarray, times: np.ndarray, lam: float) -> np.ndarray:
    """argmin over (s, b) of Σ w (y - b g - s)² + λ |D s|², by the normal equations."""
    w = np.isfinite(y).astype(float)
    y0 = np.nan_to_num(y)
    n_t = y.size
    design = np.hstack([np.eye(n_t), guide[:, None]])  # unknowns: s (T), b
    penalty = np.zeros((n_t + 1, n_t + 1))
    penalty[:n_t, :n_t] = lam * _dense_penalty(times)
    params = np.linalg.solve(design.T @ (w[:, None] * design) + penalty, design.T @ (w * y0))
    return design @ params


@pytest.fixture
def series():
    rng = np.random.default_rng(3)
    n, n_t = 6, 30
    times = _times(rng, n_t)
    guide = np.sin(times / 9.0)[None] + 0.3 * rng.standard_normal((n, n_t))
    trend = 0.4 + 0.002 * times[None] * rng.uniform(0.5, 1.5, (n, 1))
    ndvi = 0.5 * guide + trend + 0.02 * rng.standard_normal((n, n_t))
    ndvi[rng.random((n, n_t)) < 0.4] = np.nan
    return ndvi, guide, times


def test_fit_equals_dense_solve_of_the_same_model(series):
    ndvi, guide, times = series
    for lam in (0.5, 8.0, 200.0):
        fit = guided_whittaker(ndvi, guide, times, lams=(lam,), guide_lams=None)
        for n in range(ndvi.shape[0]):
            dense = _dense_fit(ndvi[n], guide[n], times, lam)
            np.testing.assert_allclose(fit.fitted[n], dense, atol=2e-5)


def test_recovers_a_known_guide_coefficient_exactly():
    rng = np.random.default_rng(0)
    times = _times(rng, 40)
    guide = rng.standard_normal((3, 40))
    b = np.array([0.3, -1.2, 2.0])
    truth = b[:, None] * guide + 0.1 + 0.01 * times  # a linear trend costs no penalty
    ndvi = truth.copy()
    ndvi[:, ::3] = np.nan
    fit = guided_whittaker(ndvi, guide, times, lams=(1.0, 50.0), guide_lams=None)
    np.testing.assert_allclose(fit.coef, b, rtol=1e-4)
    np.testing.assert_allclose(fit.fitted, truth, atol=1e-4)
    gaps = np.isnan(ndvi)
    np.testing.assert_allclose(fit.filled[gaps], np.clip(truth[gaps], -1, 1), atol=1e-4)


def test_leave_one_out_score_and_choice_match_brute_force_refits(series):
    ndvi, guide, times = series
    lams = (0.5, 4.0, 32.0, 256.0)
    row = ndvi[:1]
    brute = []
    for lam in lams:
        residuals = []
        for i in np.flatnonzero(np.isfinite(row[0])):
            held = row.copy()
            held[0, i] = np.nan
            refit = guided_whittaker(held, guide[:1], times, lams=(lam,), guide_lams=None)
            residuals.append(refit.fitted[0, i] - row[0, i])
        brute.append(np.sqrt(np.mean(np.square(residuals))))
        single = guided_whittaker(row, guide[:1], times, lams=(lam,), guide_lams=None)
        assert single.loo_rmse[0] == pytest.approx(brute[-1], rel=1e-4)
    chosen = guided_whittaker(row, guide[:1], times, lams=lams, guide_lams=None)
    assert chosen.lam[0] == lams[int(np.argmin(brute))]
    assert chosen.loo_rmse[0] == pytest.approx(min(brute), rel=1e-4)


def test_guide_smoothing_is_chosen_from_the_candidates(series):
    ndvi, guide, times = series
    fit = guided_whittaker(ndvi, guide, times, lams=(2.0, 20.0), guide_lams=(1.0, 100.0))
    assert set(np.unique(fit.guide_lam)) <= {1.0, 100.0}
    assert set(np.unique(fit.lam)) <= {2.0, 20.0}
    assert np.all(np.isfinite(fit.loo_rmse))


def test_observations_kept_gaps_filled_and_bounded(series):
    ndvi, guide, times = series
    fit = guided_whittaker(ndvi, 5.0 * guide, times)
    observed = np.isfinite(ndvi)
    assert np.array_equal(fit.filled[observed], ndvi[observed].astype(np.float32))
    assert np.all(np.isfinite(fit.filled))
    assert fit.filled.dtype == np.float32
    assert np.abs(fit.fitted[~observed]).max() > 1.0  # the 5x guide overshoots ...
    assert np.all(np.abs(fit.filled[~observed]) <= 1.0)  # ... but a filled NDVI never does


def test_a_gap_is_filled_from_the_other_dates_only(series):
    ndvi, guide, times = series
    hidden = ndvi.copy()
    hidden[:, 10:14] = np.nan
    first = guided_whittaker(hidden, guide, times)
    other = ndvi.copy()
    other[:, 10:14] = 0.9  # a different truth under the same gap: the same input, same fill
    other[:, 10:14] = np.nan
    second = guided_whittaker(other, guide, times)
    np.testing.assert_array_equal(first.filled, second.filled)
    changed = hidden.copy()
    changed[0, 20] = (0.0 if np.isnan(changed[0, 20]) else changed[0, 20]) + 0.5
    third = guided_whittaker(changed, guide, times)
    assert not np.allclose(third.filled[0, 10:14], first.filled[0, 10:14])  # inputs do matter


def test_too_few_observations_give_nan_and_bad_inputs_raise(series):
    ndvi, guide, times = series
    few = ndvi.copy()
    few[0] = np.nan
    few[0, [2, 9, 20]] = 0.5  # 3 observations < MIN_OBSERVATIONS
    fit = guided_whittaker(few, guide, times)
    assert np.all(np.isnan(fit.filled[0])) and np.isnan(fit.coef[0])
    assert np.all(np.isfinite(fit.filled[1:]))
    no_guide = guide.copy()
    no_guide[1] = np.nan  # no radar at all: a plain Whittaker fit, b = 0
    assert guided_whittaker(ndvi, no_guide, times).coef[1] == 0.0
    with pytest.raises(CubeSchemaError, match="same shape"):
        guided_whittaker(ndvi, guide[:, :-1], times)
    with pytest.raises(CubeSchemaError, match="increasing"):
        guided_whittaker(ndvi, guide, times[::-1].copy())
    with pytest.raises(ConfigError, match="> 0"):
        guided_whittaker(ndvi, guide, times, lams=(0.0,))
    with pytest.raises(ConfigError, match="min_obs"):
        guided_whittaker(ndvi, guide, times, min_obs=0)


def test_series_solved_side_by_side_equal_their_fits_one_at_a_time():
    rng = np.random.default_rng(11)
    n, n_t = 37, 50  # more series than the kernel's lanes, and a last block part-full
    times = _times(rng, n_t)
    guide = np.sin(times / 11.0)[None] + 0.3 * rng.standard_normal((n, n_t))
    ndvi = 0.4 * guide + 0.3 + 0.03 * rng.standard_normal((n, n_t))
    ndvi[rng.random((n, n_t)) < rng.uniform(0.2, 0.8, (n, 1))] = np.nan
    ndvi[[3, 20]] = np.nan  # too few observations: skipped, not given a lane
    ndvi[3, [4, 30]] = 0.5
    together = guided_whittaker(ndvi, guide, times)
    for p in range(n):
        alone = guided_whittaker(ndvi[p : p + 1], guide[p : p + 1], times)
        for name in ("filled", "fitted", "coef", "lam", "guide_lam", "loo_rmse"):
            np.testing.assert_array_equal(getattr(together, name)[p], getattr(alone, name)[0])
    assert np.isnan(together.coef[3]) and np.isnan(together.coef[20])


def test_guide_smoothing_equals_the_whittaker_smoother():
    from fusecube.fusion.guided.model import smoothed_guides
    from fusecube.kernels.whittaker import whittaker

    rng = np.random.default_rng(12)
    times = _times(rng, 33)
    guide = rng.random((40, 33)).astype(np.float32)
    guide[rng.random(guide.shape) < 0.5] = np.nan
    guide[3] = np.nan  # no guide at all
    guide[4, 2:] = np.nan  # too few values to smooth
    lams = (4.0, 16.0, 300.0)
    expected = np.stack([whittaker(guide, times, lam=lam, min_obs=3) for lam in lams])
    np.testing.assert_array_equal(smoothed_guides(guide, times, lams),
                                  np.nan_to_num(expected.astype(np.float64)))
