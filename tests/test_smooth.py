"""Whittaker smoother: exact against dense linear algebra, NaN/weights/irregular spacing, stage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from fusecube.errors import ConfigError, CubeSchemaError
from fusecube.kernels.whittaker import (
    _factor_solve,
    _inverse_diagonal,
    _prepare,
    difference_penalty,
    linear_fill,
    upper_envelope,
    whittaker,
)
from fusecube.kernels.whittaker_lambda import whittaker_gcv, whittaker_vcurve
from fusecube.stages.smooth import SmoothConfig, smooth


def dense_difference(times: np.ndarray) -> np.ndarray:
    """Second-order divided differences written out row by row (independent of the kernel)."""
    t = np.asarray(times, float)
    n = t.size
    hbar2 = np.mean(np.diff(t)) ** 2
    rows = np.zeros((n - 2, n))
    for i in range(n - 2):
        t0, t1, t2 = t[i : i + 3]
        # f[t0, t1, t2] * 2 = 2nd derivative estimate; scaled by the squared mean step
        rows[i, i] = 2 / ((t1 - t0) * (t2 - t0))
        rows[i, i + 1] = -2 / ((t1 - t0) * (t2 - t1))
        rows[i, i + 2] = 2 / ((t2 - t1) * (t2 - t0))
    return rows * hbar2


def dense_whittaker(y, w, times, lam):
    d = dense_difference(times)
    a = np.diag(w) + lam * d.T @ d
    return np.linalg.solve(a, w * np.nan_to_num(y)), a


@pytest.fixture
def irregular():
    rng = np.random.default_rng(42)
    times = np.cumsum(rng.uniform(3, 20, 40))
    truth = 0.4 + 0.3 * np.sin(times / 25.0)
    values = truth[None, :] + rng.normal(0, 0.05, (6, times.size))
    values[rng.random(values.shape) < 0.3] = np.nan
    weights = rng.uniform(0.2, 1.0, values.shape)
    return times, values, weights


def test_regular_grid_penalty_is_the_classic_second_difference():
    times = np.arange(10) * 12.0
    d = np.diff(np.eye(10), 2, axis=0)
    d0, d1, d2 = difference_penalty(times)
    dtd = d.T @ d
    np.testing.assert_allclose(d0, np.diag(dtd), atol=1e-12)
    np.testing.assert_allclose(d1, np.diag(dtd, 1), atol=1e-12)
    np.testing.assert_allclose(d2, np.diag(dtd, 2), atol=1e-12)


def test_batched_solve_equals_dense_solve_irregular_weighted_nan(irregular):
    times, values, weights = irregular
    lam = np.array([0.1, 0.5, 2.0, 10.0, 100.0, 1000.0])
    z = whittaker(values, times, lam=lam, weights=weights)
    for k in range(values.shape[0]):
        w = np.where(np.isfinite(values[k]), weights[k], 0.0)
        ref, _ = dense_whittaker(values[k], w, times, lam[k])
        np.testing.assert_allclose(z[k], ref, rtol=0, atol=2e-6)  # float32 output


def test_straight_lines_pass_unchanged_on_irregular_times(irregular):
    # the second-difference penalty vanishes on a line: the fit reproduces it for any λ
    times, values, _ = irregular
    line = 0.1 + 0.002 * times
    y = np.where(np.isfinite(values), line[None, :], np.nan)
    z = whittaker(y, times, lam=1e3)
    np.testing.assert_allclose(z, np.broadcast_to(line, z.shape), atol=1e-5)


def test_nan_weights_and_too_few_observations():
    times = np.arange(8) * 10.0
    values = np.full((3, 8), np.nan)
    values[0] = np.linspace(0.2, 0.6, 8)
    values[1, [2, 5]] = 0.5  # 2 observations < min_obs=3
    weights = np.ones_like(values)
    weights[0, 3] = np.nan  # a NaN weight counts as 0, not as poison
    z = whittaker(values, times, weights=weights)
    assert np.isfinite(z[0]).all()
    assert np.isnan(z[1]).all() and np.isnan(z[2]).all()
    ref, _ = dense_whittaker(values[0], np.where(np.arange(8) == 3, 0.0, 1.0), times, 2.0)
    np.testing.assert_allclose(z[0], ref, atol=2e-6)
    for chooser in (whittaker_gcv, whittaker_vcurve):
        z_sel, lam = chooser(values, times, weights=weights)
        assert np.isfinite(z_sel[0]).all() and np.isnan(z_sel[1:]).all()
        assert np.all(np.isfinite(lam) & (lam > 0))


def test_inverse_diagonal_matches_dense_inverse(irregular):
    times, values, weights = irregular
    wt, rhs = _prepare(values, weights)
    lam = np.full(values.shape[0], 3.0)
    _, factors = _factor_solve(wt, rhs, lam, difference_penalty(times), keep_factors=True)
    diag = _inverse_diagonal(*factors)
    for k in range(values.shape[0]):
        _, a = dense_whittaker(values[k], wt[:, k], times, 3.0)
        np.testing.assert_allclose(diag[:, k], np.diag(np.linalg.inv(a)), rtol=1e-9)


def test_gcv_and_vcurve_pick_the_dense_optimum(irregular):
    times, values, weights = irregular
    lambdas = np.logspace(-1, 3, 9)
    z_gcv, lam_gcv = whittaker_gcv(values, times, lambdas=lambdas, weights=weights)
    _, lam_v = whittaker_vcurve(values, times, lambdas=lambdas, weights=weights)
    d = dense_difference(times)
    for k in range(values.shape[0]):
        obs = np.isfinite(values[k])
        w = np.where(obs, weights[k], 0.0)
        y = np.nan_to_num(values[k])
        n = obs.sum()
        gcv, fit, pen = [], [], []
        for lam in lambdas:
            z, a = dense_whittaker(values[k], w, times, lam)
            hat = np.linalg.solve(a, np.diag(w))
            rss = (w * (y - z) ** 2).sum()
            gcv.append((rss / n) / (1 - np.trace(hat) / n) ** 2)
            fit.append(np.log(rss + 1e-12))
            pen.append(np.log(((d @ z) ** 2).sum() + 1e-12))
        assert lam_gcv[k] == lambdas[int(np.argmin(gcv))]
        j = int(np.argmin(np.hypot(np.diff(fit), np.diff(pen))))
        assert lam_v[k] == pytest.approx(np.sqrt(lambdas[j] * lambdas[j + 1]))
        np.testing.assert_allclose(z_gcv[k], dense_whittaker(values[k], w, times, lam_gcv[k])[0],
                                   atol=2e-6)


def test_gcv_smooths_noise_towards_truth():
    rng = np.random.default_rng(1)
    times = np.arange(62) * 12.0
    truth = 0.45 + 0.3 * np.sin(2 * np.pi * times / 120.0)
    noisy = truth + rng.normal(0, 0.05, (200, times.size))
    smoothed, lam = whittaker_gcv(noisy, times)
    raw_err = np.sqrt(((noisy - truth) ** 2).mean())
    fit_err = np.sqrt(((smoothed - truth) ** 2).mean())
    assert fit_err < 0.8 * raw_err  # averaging neighbours must remove part of the noise
    assert np.unique(lam).size >= 1 and np.all(lam > 0)


def test_upper_envelope_resists_cloud_dips_and_spares_gap_filled_values():
    rng = np.random.default_rng(5)
    times = np.arange(62) * 12.0
    truth = 0.45 + 0.3 * np.sin(2 * np.pi * times / 240.0)
    y = truth + rng.normal(0, 0.01, (100, times.size))
    dips = rng.random(y.shape) < 0.2
    y[dips] -= 0.3  # haze and cloud shadows only ever lower NDVI
    plain = whittaker(y, times, lam=1.0)
    env = upper_envelope(y, times, lam=1.0, iterations=3)
    assert np.abs(env - truth).mean() < 0.6 * np.abs(plain - truth).mean()
    untouched = upper_envelope(y, times, lam=1.0, iterations=3, adjustable=np.zeros(y.shape, bool))
    np.testing.assert_array_equal(untouched, plain)


def test_linear_fill_interpolates_and_holds_ends():
    times = np.array([0.0, 10.0, 30.0, 40.0])
    values = np.array([[np.nan, 1.0, np.nan, 3.0], [np.nan] * 4])
    out = linear_fill(values, times)
    np.testing.assert_allclose(out[0], [1.0, 1.0, 7 / 3, 3.0], rtol=1e-6)
    assert np.isnan(out[1]).all()


def test_bad_inputs_raise_fusecube_errors():
    with pytest.raises(CubeSchemaError, match="strictly increasing"):
        whittaker(np.ones((1, 4)), np.array([0.0, 1.0, 1.0, 2.0]))
    with pytest.raises(ConfigError, match="> 0"):
        whittaker(np.ones((1, 4)), np.arange(4.0), lam=0.0)
    with pytest.raises(ConfigError, match="vcurve"):
        SmoothConfig(method="loess")
    with pytest.raises(CubeSchemaError, match="Weights shape"):
        whittaker(np.ones((2, 4)), np.arange(4.0), weights=np.ones((1, 4)))


def _cube(values: np.ndarray, times, quality=None, fused=None) -> xr.Dataset:
    data = {"ndvi": (("time", "y", "x"), values.astype(np.float32))}
    if quality is not None:
        data["ndvi_quality"] = (("time", "y", "x"), quality.astype(np.float32))
    if fused is not None:
        data["ndvi_fused"] = (("time", "y", "x"), fused.astype(np.float32))
    return xr.Dataset(data, coords={"time": times, "y": [0.0, 1.0], "x": [0.0, 1.0, 2.0]})


@pytest.mark.parametrize("method", ["fixed", "gcv", "vcurve"])
def test_smooth_stage_weights_observations_by_quality_and_gaps_by_gap_weight(method):
    rng = np.random.default_rng(3)
    times = pd.date_range("2024-01-01", periods=20, freq="12D").values
    days = np.arange(20) * 12.0
    truth = 0.4 + 0.2 * np.sin(days / 40.0)
    obs = truth[:, None, None] + rng.normal(0, 0.03, (20, 2, 3))
    hidden = rng.random(obs.shape) < 0.4
    fused = obs.copy()
    obs[hidden] = np.nan
    quality = rng.uniform(0.5, 1.0, obs.shape)
    config = SmoothConfig(method=method, lam=1.5, gap_weight=0.25, envelope_iterations=0)
    out = smooth(_cube(obs, times, quality, fused), config=config)
    got = out["ndvi_smooth"].values.reshape(20, -1).T
    weights = np.where(hidden, 0.25, quality).reshape(20, -1).T
    flat = fused.reshape(20, -1).T
    if method == "fixed":
        expected = whittaker(flat, days, lam=1.5, weights=weights)
    else:
        chooser = whittaker_gcv if method == "gcv" else whittaker_vcurve
        expected, _ = chooser(flat, days, lambdas=np.asarray(config.lambdas), weights=weights)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert out["ndvi_smooth"].attrs["whittaker_method"] == method


def test_smooth_stage_without_fused_smooths_observations_through_gaps():
    times = pd.date_range("2024-01-01", periods=10, freq="10D").values
    obs = np.full((10, 2, 3), 0.5)
    obs[3:6] = np.nan
    out = smooth(_cube(obs, times), config=SmoothConfig(envelope_iterations=2))
    np.testing.assert_allclose(out["ndvi_smooth"].values, 0.5, atol=1e-6)
    with pytest.raises(CubeSchemaError, match="needs"):
        smooth(xr.Dataset({"vv": (("time", "y", "x"), obs)}, coords={"time": times}))


def test_smooth_stage_never_returns_impossible_ndvi():
    # a steep rise then a long gap at the end: the Whittaker line would run past 1
    times = pd.date_range("2024-01-01", periods=30, freq="12D").values
    obs = np.full((30, 2, 3), np.nan)
    obs[:8] = np.linspace(0.1, 0.9, 8)[:, None, None]
    raw = whittaker(obs.reshape(30, -1).T, np.arange(30) * 12.0, lam=1.0)
    assert raw.max() > 1.0  # the kernel itself extrapolates linearly
    out = smooth(_cube(obs, times), variable="ndvi")["ndvi_smooth"].values
    assert out.max() <= 1.0 and out.min() >= -1.0
    np.testing.assert_allclose(out.reshape(30, -1).T, np.clip(raw, -1, 1), atol=1e-6)


def test_smooth_stage_stays_lazy_on_a_dask_cube_and_equals_the_eager_result(small_scene):
    import dask

    from fusecube.cube import read_cube
    from fusecube.fusion.baselines import gapfill

    filled = gapfill(read_cube(small_scene["cube"]).load(), method="linear")
    for config in (SmoothConfig(), SmoothConfig(method="gcv", envelope_iterations=1)):
        eager = smooth(filled, config=config)
        lazy = smooth(filled.chunk({"time": 31, "y": 16, "x": 20}), config=config)
        assert dask.is_dask_collection(lazy["ndvi_smooth"].data)
        assert lazy["ndvi_smooth"].chunks[1:] == ((16, 16, 16), (20, 20, 8))
        computed = lazy.compute()
        xr.testing.assert_identical(computed, eager)
        assert computed["ndvi_smooth"].values.tobytes() == eager["ndvi_smooth"].values.tobytes()
