"""The compiled kernels (numba) against the numpy reference they replace on the hot path."""

from __future__ import annotations

import numpy as np
import pytest

from fusecube.errors import ConfigError, CubeSchemaError
from fusecube.kernels import whittaker as kw
from fusecube.kernels import whittaker_lambda as kl
from fusecube.kernels.seasons import SEASON_METRICS, SeasonRules, detect_seasons


def _numpy_whittaker(values, times, lam, weights=None, min_obs=3):
    """The vectorised-over-pixels numpy solve (the one GCV and the V-curve use)."""
    penalty = kw.difference_penalty(times)
    wt, rhs = kw._prepare(values, weights)
    lam_n = np.asarray(lam, np.float64)
    z = kw._factor_solve(wt, rhs, float(lam_n) if lam_n.ndim == 0 else lam_n, penalty).T
    z[kw._too_few(wt, min_obs)] = np.nan
    return z.astype(np.float32)


@pytest.fixture(scope="module")
def noisy_series():
    rng = np.random.default_rng(11)
    n, n_t = 1000, 62
    times = np.cumsum(rng.uniform(4.0, 16.0, n_t))  # irregular spacing
    values = np.sin(times / 40.0)[None, :] + rng.normal(0, 0.1, (n, n_t))
    values[rng.random((n, n_t)) < 0.4] = np.nan
    weights = rng.uniform(0.0, 1.0, (n, n_t))
    weights[rng.random((n, n_t)) < 0.05] = np.nan
    weights[0, :5] = -1.0  # negative weights count as 0
    values[1] = np.nan  # no observation at all
    values[2, 2:] = np.nan  # two observations: too few
    return values, times, weights, rng


@pytest.mark.parametrize("case", ["unweighted", "weighted", "lambda per pixel", "float32"])
def test_compiled_whittaker_matches_numpy(noisy_series, case):
    values, times, weights, rng = noisy_series
    lam = rng.uniform(0.1, 100.0, values.shape[0]) if case == "lambda per pixel" else 2.0
    w = None if case == "unweighted" else weights
    if case == "float32":
        values, w = values.astype(np.float32), weights.astype(np.float32)
    expected = _numpy_whittaker(values, times, lam, w)
    got = kw.whittaker(values, times, lam=lam, weights=w)
    assert got.dtype == np.float32 and got.shape == values.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.isnan(got[1]).all() and np.isnan(got[2]).all()  # too few observations
    assert np.isfinite(got[3:]).all()


def test_compiled_whittaker_matches_dense_solve():
    rng = np.random.default_rng(5)
    times = np.cumsum(rng.uniform(3.0, 20.0, 30))
    y = rng.normal(0.5, 0.2, (3, 30))
    w = rng.uniform(0.2, 1.0, (3, 30))
    a, b, c = kw.difference_coefficients(times)
    d = np.zeros((28, 30))
    rows = np.arange(28)
    d[rows, rows], d[rows, rows + 1], d[rows, rows + 2] = a, b, c
    for p, lam in enumerate((0.5, 5.0, 500.0)):
        dense = np.linalg.solve(np.diag(w[p]) + lam * d.T @ d, w[p] * y[p])
        got = kw.whittaker(y[p : p + 1], times, lam=lam, weights=w[p : p + 1])[0]
        np.testing.assert_allclose(got, dense, rtol=1e-5, atol=1e-5)


def test_compiled_whittaker_rejects_bad_shapes(noisy_series):
    values, times, weights, _ = noisy_series
    with pytest.raises(CubeSchemaError, match="time steps"):
        kw.whittaker(values[:, :10], times)
    with pytest.raises(CubeSchemaError, match="Weights shape"):
        kw.whittaker(values, times, weights=weights[:, :10])
    with pytest.raises(ConfigError, match="one value per pixel"):
        kw.whittaker(values, times, lam=np.ones(3))
    with pytest.raises(ConfigError, match="finite and > 0"):
        kw.whittaker(values, times, lam=0.0)


def _rice_like_curves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sine-like curves with 1-4 seasons a year, varied amplitude, noise and offsets."""
    rng = np.random.default_rng(seed)
    times = 19662.0 + 12.0 * np.arange(62)
    phase = rng.uniform(0, 120, (n, 1))
    period = rng.uniform(80, 260, (n, 1))
    amplitude = rng.uniform(0.05, 0.6, (n, 1))
    values = 0.35 + amplitude * np.sin(2 * np.pi * (times[None, :] - phase) / period)
    values += rng.normal(0, 0.03, values.shape)
    return np.clip(values, -1, 1), times


@pytest.mark.parametrize("rules", [
    SeasonRules(),
    SeasonRules(method="derivative"),
    SeasonRules(min_amplitude=0.05, tail_days=40.0, sos_fraction=0.5, eos_fraction=0.1),
    SeasonRules(min_length=90.0, max_length=120.0, min_peak=0.6),
], ids=["amplitude", "derivative", "loose", "strict"])
def test_compiled_seasons_match_numpy(rules):
    values, times = _rice_like_curves(3000, seed=7)
    values[0] = 0.4  # flat: no season
    values[1] = np.nan  # gap: no season
    expected = detect_seasons(values, times, rules, engine="numpy")
    got = detect_seasons(values, times, rules)
    assert set(got) == set(SEASON_METRICS)
    assert np.isfinite(expected["pos"]).sum() > 1000  # the curves do hold seasons
    for name in SEASON_METRICS:
        assert got[name].shape == expected[name].shape, name
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-9, atol=1e-9, err_msg=name)
    assert np.isnan(got["pos"][:2]).all()


def test_compiled_seasons_handle_many_seasons_and_none():
    times = 12.0 * np.arange(62)
    # a 72-day square wave: 10 seasons, more than the kernel's first guess of 8 slots
    zigzag = np.where(np.arange(62) % 6 < 3, 0.2, 0.8)[None, :]
    many = np.repeat(zigzag, 2, axis=0)
    loose = SeasonRules(min_length=10.0)
    expected = detect_seasons(many, times, loose, engine="numpy")
    got = detect_seasons(many, times, loose)
    assert got["pos"].shape == expected["pos"].shape == (2, 10)
    np.testing.assert_allclose(got["sos"], expected["sos"])
    nothing = detect_seasons(np.full((3, 62), 0.3), times)
    assert all(v.shape == (3, 0) for v in nothing.values())


def test_unknown_engine_is_a_config_error():
    with pytest.raises(ConfigError, match="engine"):
        detect_seasons(np.zeros((1, 10)), np.arange(10.0), engine="fortran")


def _numpy_select(values, times, lambdas, weights, criterion):
    """λ per pixel by GCV or the V-curve with the numpy recurrences (the pre-compiled path)."""
    a, b, c = kw.difference_coefficients(times)
    penalty = kw.difference_penalty(times)
    wt, rhs = kw._prepare(values, weights)
    y = np.where(wt > 0, rhs / np.where(wt > 0, wt, 1.0), 0.0)
    n_w = np.maximum((wt > 0).sum(axis=0), 1)
    first, second = [], []
    with np.errstate(divide="ignore", invalid="ignore"):
        for lam in lambdas:
            z, factors = kw._factor_solve(wt, rhs.copy(), float(lam), penalty, keep_factors=True)
            rss = (wt * (y - z) ** 2).sum(axis=0)
            if criterion == "gcv":
                trace = (wt * kw._inverse_diagonal(*factors)).sum(axis=0)
                first.append((rss / n_w) / np.maximum(1.0 - trace / n_w, 1e-9) ** 2)
            else:
                rough = a[:, None] * z[:-2] + b[:, None] * z[1:-1] + c[:, None] * z[2:]
                first.append(np.log(rss + 1e-12))
                second.append(np.log((rough**2).sum(axis=0) + 1e-12))
    if criterion == "gcv":
        return lambdas[np.argmin(first, axis=0)]
    k = np.argmin(np.hypot(np.diff(first, axis=0), np.diff(second, axis=0)), axis=0)
    return np.sqrt(lambdas[k] * lambdas[k + 1])


@pytest.mark.parametrize("criterion", ["gcv", "vcurve"])
def test_compiled_lambda_choice_matches_numpy(noisy_series, criterion):
    values, times, weights, _ = noisy_series
    lambdas = kl.DEFAULT_LAMBDAS
    select = kl.whittaker_gcv if criterion == "gcv" else kl.whittaker_vcurve
    smoothed, chosen = select(values, times, lambdas=lambdas, weights=weights)
    ok = np.isfinite(smoothed).all(axis=1)
    assert ok.sum() == values.shape[0] - 2  # the two series with too few observations
    expected = _numpy_select(values, times, lambdas, weights, criterion)
    np.testing.assert_array_equal(chosen[ok], expected[ok])
    assert len(np.unique(chosen[ok])) > 1  # the choice really varies between series
    np.testing.assert_array_equal(smoothed, kw.whittaker(values, times, lam=chosen, weights=weights))
