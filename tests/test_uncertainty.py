"""σ of filled NDVI is calibrated on held-out values; season dates get honest ± days."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from fusecube.config import CubeSource, RunConfig
from fusecube.cube import PADDY_MASK, X, read_cube
from fusecube.evaluate.accuracy import match_seasons
from fusecube.evaluate.selection import SelectionConfig
from fusecube.evaluate.uncertainty import (
    Z95,
    HeldOut,
    coverage,
    fit_sigma,
    held_out_residuals,
)
from fusecube.grid.periods import to_days
from fusecube.kernels.gaps import days_to_observation
from fusecube.kernels.season_intervals import (
    date_intervals,
    dense_weights,
    functional_variance,
    hat_matrix,
)
from fusecube.kernels.season_intervals_compiled import functional_variances
from fusecube.kernels.seasons import DATE_METRICS, SeasonRules, detect_seasons
from fusecube.quality.gates import apply_screen, screen_periods
from fusecube.runner import run


def test_days_to_observation():
    observed = np.array([[False, True, False, False, False, True, False],
                         [False] * 7])
    days = np.array([0, 10, 20, 30, 45, 50, 60], float)
    got = days_to_observation(observed, days)
    np.testing.assert_array_equal(got[0], [10, 0, 10, 20, 5, 0, 10])
    assert np.all(np.isinf(got[1]))


def test_conformal_sigma_recovers_a_known_spread():
    rng = np.random.default_rng(0)
    distance = np.repeat([12.0, 24.0], 20000)
    residual = rng.normal(0, 1, distance.size) * np.where(distance > 12, 0.10, 0.04)
    model = fit_sigma(HeldOut(distance, residual, None, noise=0.01), "linear")
    assert model.edges == (12.0, 24.0)
    np.testing.assert_allclose(model.sigma["all"], [0.04, 0.10], rtol=0.04)
    np.testing.assert_array_equal(model.sigma_of(np.array([0.0, 12.0, 24.0, 99.0])),
                                  np.float32([0.01, *model.sigma["all"], model.sigma["all"][1]]))


@pytest.fixture(scope="module")
def screened(small_scene):
    cube = read_cube(small_scene["cube"]).load()
    return apply_screen(cube, screen_periods(cube)), cube[PADDY_MASK]


def test_sigma_covers_95_percent_of_values_it_was_not_fitted_on(screened):
    """σ fitted on the left half's hidden values covers the right half's (hidden with another
    seed) at 95 ± 3 %, and the other way round."""
    cube, mask = screened
    nx = cube.sizes[X]
    halves = (slice(0, nx // 2), slice(nx // 2, nx))
    for fit_half, test_half in (halves, halves[::-1]):
        def held(half, seed):
            return held_out_residuals(cube.isel({X: half}), "linear", lam=1.0,
                                      mask=mask.isel({X: half}),
                                      config=SelectionConfig(window=24, seed=seed))
        model = fit_sigma(held(fit_half, 0), "linear")
        got = coverage(model, held(test_half, 1))
        assert got["n"] > 2000
        assert 0.92 <= got["coverage"] <= 0.98, got
        assert model.sigma["all"][-1] > model.sigma["all"][0]  # far from data: less sure


def test_date_intervals_are_the_resolution_without_noise_and_grow_with_it():
    days = np.arange(0, 730, 12.0)
    peak = 0.2 + 0.6 * np.exp(-0.5 * ((days[None] - np.array([[200.0], [560.0]])) / 25) ** 2)
    curve = peak.max(axis=0, keepdims=True)
    found = detect_seasons(curve, days, SeasonRules())
    dates = {k: found[k] for k in DATE_METRICS}
    season = np.isfinite(dates["sos"])
    assert season.sum() == 2
    observed = np.ones(curve.shape, bool)
    quiet = date_intervals(curve, np.zeros(curve.shape), observed, dates, days, lam=1.0)
    for name in DATE_METRICS:
        np.testing.assert_allclose(quiet[name][season], Z95 * 12 / np.sqrt(12))
    observed_noise = date_intervals(curve, np.full(curve.shape, 0.03), observed, dates, days,
                                    lam=1.0)
    greenup_gap = observed & ~((days > 130) & (days < 200))[None]
    gaps = date_intervals(curve, np.full(curve.shape, 0.03), greenup_gap, dates, days, lam=1.0)
    for name in ("sos", "eos", "pos"):
        assert np.all(observed_noise[name][season] > quiet[name][season]), name
    # a gap over the first green-up widens that SOS, not the second season's
    assert gaps["sos"][season][0] > observed_noise["sos"][season][0]
    np.testing.assert_allclose(gaps["sos"][season][1], observed_noise["sos"][season][1], rtol=0.05)
    # one error shared by the whole series only shifts the curve: amplitude dates stay put
    offset = date_intervals(curve, np.full(curve.shape, 0.03), ~observed, dates, days, lam=1.0)
    np.testing.assert_allclose(offset["sos"][season], quiet["sos"][season], rtol=1e-3)
    # the hat matrix smooths like the smoother: constants pass unchanged
    np.testing.assert_allclose(np.ones(days.size) @ hat_matrix(days, 1.0), 1.0, atol=1e-5)


def test_compiled_variances_match_the_numpy_reference():
    rng = np.random.default_rng(4)
    days = np.arange(0, 600, 10.0)
    wt = hat_matrix(days, 1.0).T
    sigma = rng.uniform(0.01, 0.1, (30, days.size))
    observed = rng.random((30, days.size)) < 0.6
    pix = rng.integers(0, 30, 200)
    idx = rng.integers(0, days.size, (200, 4))
    coef = rng.normal(0, 1, (200, 4))
    dense = functional_variance(dense_weights(wt, idx, coef), sigma[pix], observed[pix])
    np.testing.assert_allclose(functional_variances(wt, sigma, observed, pix, idx, coef,
                                                    margin=days.size), dense, rtol=1e-10)
    # the default reach of a hat row loses almost nothing
    np.testing.assert_allclose(functional_variances(wt, sigma, observed, pix, idx, coef),
                               dense, rtol=0.01)


def test_gap_errors_add_up_along_a_gap():
    a = np.array([[1.0, 1.0, 1.0, 1.0]])
    sigma = np.full((1, 4), 0.5)
    observed = np.array([[True, False, False, True]])
    # observations independent (2 x 0.25), the two gap values one draw: (0.5 + 0.5)^2
    np.testing.assert_allclose(functional_variance(a, sigma, observed), [0.5 + 1.0])


def test_true_season_dates_fall_inside_the_intervals(small_scene, tmp_path):
    result = run(RunConfig(source=CubeSource(path=small_scene["cube"]), out=tmp_path / "run",
                           report=False, gapfill="linear")).result
    ds, truth = xr.open_zarr(result), xr.open_zarr(small_scene["truth"], consolidated=False)
    paddy = truth[PADDY_MASK].values.reshape(-1) > 0

    def flat(var):
        values = var.values
        values = to_days(values) if np.issubdtype(values.dtype, np.datetime64) else values
        return values.reshape(values.shape[0], -1).T[paddy]

    match = match_seasons(flat(truth["true_pos"]), flat(ds["pos"]), 40.0)
    for key in ("sos", "eos"):
        det = np.take_along_axis(flat(ds[key]), np.maximum(match, 0), axis=1)
        pm = np.take_along_axis(flat(ds[f"{key}_pm_days"]), np.maximum(match, 0), axis=1)
        both = (match >= 0) & np.isfinite(det)
        assert np.isfinite(pm[both]).all()
        inside = np.abs(det - flat(truth[f"true_{key}"]))[both] <= pm[both]
        assert inside.mean() >= 0.75, (key, inside.mean())


@pytest.mark.realdata
def test_sigma_coverage_on_a_real_cube(real_data):
    from fusecube.testing.realdata import REAL_CUBES

    cube = REAL_CUBES["worldcereal_31UDS"]()
    cube = apply_screen(cube, screen_periods(cube))
    nx = cube.sizes[X]
    left, right = slice(0, nx // 2), slice(nx // 2, nx)
    config = SelectionConfig(window=16)
    model = fit_sigma(held_out_residuals(cube.isel({X: left}), "whittaker", lam=1.0,
                                         config=config), "whittaker")
    got = coverage(model, held_out_residuals(cube.isel({X: right}), "whittaker", lam=1.0,
                                             config=SelectionConfig(window=16, seed=1)))
    assert 0.92 <= got["coverage"] <= 0.98, got
