"""Closed-form ridge fusion (fusion.ridge): features agree with their references, gaps filled."""

from __future__ import annotations

import numpy as np
import pytest

from fusecube.errors import CubeSchemaError
from fusecube.fusion.ridge.features import FeatureSet, interpolation
from fusecube.fusion.ridge.model import RidgeConfig, RidgeFusion
from fusecube.kernels.whittaker import linear_fill


def _scene(seed: int = 0, size: int = 48, n_t: int = 40):
    """Fields of 8x8 pixels with shifted seasons, radar a nonlinear function of NDVI + speckle,
    clouds hiding 2-3 months of whole fields."""
    rng = np.random.default_rng(seed)
    days = 18000.0 + 10.0 * np.arange(n_t)
    fields = size // 8
    offset = np.repeat(np.repeat(rng.uniform(60, 300, (fields, fields)), 8, 0), 8, 1)
    t = (days - days[0])[:, None, None]
    truth = 0.15 + 0.7 * np.exp(-0.5 * ((t - offset[None]) / 35.0) ** 2)
    speckle = rng.gamma(4.5, 1 / 4.5, (2, n_t, size, size))
    vh = 10 ** ((-24 + 14 * truth) / 10) * speckle[0]
    vv = 10 ** ((-14 + 6 * truth**2) / 10) * speckle[1]
    ndvi = truth + 0.01 * rng.standard_normal(truth.shape)
    start = np.repeat(np.repeat(rng.integers(0, n_t - 9, (fields, fields)), 8, 0), 8, 1)
    length = np.repeat(np.repeat(rng.integers(6, 10, (fields, fields)), 8, 0), 8, 1)
    step = np.arange(n_t)[:, None, None]
    cloud = (step >= start[None]) & (step < (start + length)[None])
    ndvi[cloud] = np.nan
    return (vv.astype(np.float32), vh.astype(np.float32), ndvi.astype(np.float32), days,
            truth.astype(np.float32), cloud)


def _series(grid: np.ndarray) -> np.ndarray:
    return grid.reshape(grid.shape[0], -1).T


def test_ridge_fusion_beats_interpolation_under_long_clouds():
    vv, vh, ndvi, days, truth, cloud = _scene()
    filled = RidgeFusion().fit_predict(vv, vh, ndvi, days)
    observed = np.isfinite(_series(ndvi))
    assert np.array_equal(filled[observed], _series(ndvi)[observed])
    gaps = _series(cloud)
    ridge_rmse = np.sqrt(np.mean((filled - _series(truth))[gaps] ** 2))
    linear = linear_fill(_series(ndvi), days)
    linear_rmse = np.sqrt(np.mean((linear - _series(truth))[gaps] ** 2))
    assert ridge_rmse < 0.5 * linear_rmse
    assert ridge_rmse < 0.08  # the season amplitude is 0.7


def test_fit_then_predict_equals_fit_predict():
    vv, vh, ndvi, days, *_ = _scene(seed=1)
    model = RidgeFusion(RidgeConfig(seed=3)).fit(vv, vh, ndvi, days)
    np.testing.assert_allclose(model.predict(vv, vh, ndvi, days),
                               RidgeFusion(RidgeConfig(seed=3)).fit_predict(vv, vh, ndvi, days),
                               atol=1e-6)


def test_interpolation_plan_matches_linear_fill():
    rng = np.random.default_rng(2)
    days = np.cumsum(rng.integers(1, 15, 30)).astype(float)
    values = rng.random((50, 30)).astype(np.float32)
    values[rng.random(values.shape) < 0.6] = np.nan
    values[0] = np.nan  # a pixel never observed: 0 everywhere
    interpolate, gap = interpolation(values, days)
    expected = np.nan_to_num(linear_fill(values, days))
    np.testing.assert_allclose(interpolate(np.nan_to_num(values)), expected, atol=1e-5)
    assert np.all(gap[np.isfinite(values)] == 0) and np.all(np.isinf(gap[0]))


def test_feature_set_combine_equals_its_design_matrix():
    rng = np.random.default_rng(4)
    series = [rng.random((7, 12)).astype(np.float32) for _ in range(3)]
    features = FeatureSet(lagged=(series[0], series[1]), plain=(series[2], np.arange(12.0)[None]),
                          reach=2)
    coef = rng.standard_normal(features.width)
    rows, cols = np.divmod(np.arange(7 * 12), 12)
    expected = (features.design(rows, cols) @ coef + 0.25).reshape(7, 12)
    np.testing.assert_allclose(features.combine(coef, 0.25, (7, 12)), expected, rtol=1e-5,
                               atol=1e-5)


def test_too_few_observations_and_bad_shapes_raise():
    vv, vh, ndvi, days, *_ = _scene()
    empty = np.full_like(ndvi, np.nan)
    empty[:, 0, :3] = 0.5
    with pytest.raises(CubeSchemaError, match="at least"):
        RidgeFusion().fit(vv, vh, empty, days)
    with pytest.raises(CubeSchemaError, match="one shape"):
        RidgeFusion().fit(vv, vh[:, :-1], ndvi, days)


def _block(vv, vh, ndvi, days):
    import xarray as xr

    from fusecube.cube import DIMS

    times = np.datetime64("1970-01-01", "ns") + (days * 86400e9).astype("timedelta64[ns]")
    coords = {"time": times, "y": np.arange(ndvi.shape[1]), "x": np.arange(ndvi.shape[2])}
    return xr.Dataset({"vv": (DIMS, vv), "vh": (DIMS, vh), "ndvi": (DIMS, ndvi)}, coords=coords)


def test_gapfill_ridge_option_runs_the_ridge_fusion_per_block():
    from fusecube.config import RunConfig
    from fusecube.runner.pipeline import gapfill_config
    from fusecube.stages.gapfill import context_halo, gapfill

    vv, vh, ndvi, days, truth, cloud = _scene(seed=5)
    config = gapfill_config(RunConfig(gapfill="ridge"))
    assert RunConfig().gapfill == "auto"  # the library default: the validated choice
    assert context_halo(config) == RidgeConfig().window // 2
    out = gapfill(_block(vv, vh, ndvi, days), config=config)
    fused = out["ndvi_fused"].values
    assert out["ndvi_fused"].attrs["gapfill_method"] == "ridge"
    observed = np.isfinite(ndvi)
    assert np.array_equal(fused[observed], ndvi[observed])
    assert np.sqrt(np.mean((fused - truth)[cloud] ** 2)) < 0.08


def test_gapfill_ridge_falls_back_to_linear_in_a_block_without_enough_observations(caplog):
    from fusecube.fusion.ridge.model import fuse_ridge

    vv, vh, ndvi, days, *_ = _scene(seed=6)
    sparse = np.full_like(ndvi, np.nan)
    sparse[::5, :2, :2] = 0.4  # 8 dates x 4 pixels = 32 observations < MIN_TRAINING_VALUES
    with caplog.at_level("WARNING", logger="fusecube.fusion.ridge.model"):
        out = fuse_ridge(_block(vv, vh, sparse, days))
    assert out["ndvi_fused"].attrs["gapfill_method"].startswith("linear")
    assert "fell back" in caplog.text
    np.testing.assert_allclose(out["ndvi_fused"].values[:, :2, :2], 0.4)


def test_compiled_blend_equals_the_blend_features_it_was_fitted_on():
    from fusecube.fusion.ridge.features import BlendInputs, blend_features
    from fusecube.kernels.ridge import blend_rows

    rng = np.random.default_rng(7)
    days = np.cumsum(rng.integers(5, 15, 25)).astype(float)
    ndvi = rng.random((40, 25)).astype(np.float32)
    ndvi[rng.random(ndvi.shape) < 0.5] = np.nan
    ndvi[0] = np.nan  # never observed
    ndvi[1, :] = np.nan
    ndvi[1, 3] = 0.3  # a single observation
    radar_ndvi = rng.random((40, 25)).astype(np.float32)
    coef = rng.standard_normal(11) * 0.1
    features = blend_features(BlendInputs(ndvi=ndvi, radar_ndvi=radar_ndvi), days)
    assert features.width == coef.size
    expected = np.clip(features.combine(coef, 0.2, ndvi.shape), -1, 1)
    expected = np.where(np.isfinite(ndvi), ndvi, expected)
    out = np.empty_like(ndvi)
    blend_rows(ndvi, radar_ndvi, days, coef, 0.2, out)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_compiled_radar_stage_and_sampled_design_equal_the_radar_features():
    from fusecube.fusion.neural.features import calendar_features
    from fusecube.fusion.ridge.features import BackscatterTable, radar_design, radar_features
    from fusecube.kernels.ridge import radar_grid

    rng = np.random.default_rng(8)
    days = 18000.0 + 12.0 * np.arange(20)
    vv_db = rng.uniform(-20, -5, (30, 20)).astype(np.float32)
    vh_db = rng.uniform(-28, -12, (30, 20)).astype(np.float32)
    table = BackscatterTable(bins=6, prior=2.0).fit(vv_db.ravel(), vh_db.ravel(),
                                                    rng.random(600))
    features = radar_features(vv_db, vh_db, table.predict(vv_db, vh_db), days, reach=2)
    rows, cols = np.divmod(np.arange(600), 20)
    vv_grid, vh_grid = np.ascontiguousarray(vv_db.T), np.ascontiguousarray(vh_db.T)  # (T, N)
    # the same values: the compiled design converts exactly as the numpy features do
    np.testing.assert_array_equal(radar_design(vv_grid, vh_grid, table, days, 2, rows, cols),
                                  features.design(rows, cols))
    coef = rng.standard_normal(features.width) * 0.05
    out = np.empty_like(vv_db)
    radar_grid(vv_grid, vh_grid, table.edges_, table.bins, table.table_,
               calendar_features(days).astype(np.float64), coef, 0.3, 2, out)
    np.testing.assert_allclose(out, features.combine(coef, 0.3, vv_db.shape), atol=1e-4)


def test_compiled_blend_training_rows_equal_the_blend_features():
    from fusecube.fusion.ridge.features import BlendInputs, blend_features
    from fusecube.kernels.ridge import blend_samples

    rng = np.random.default_rng(9)
    n, n_t = 300, 45
    days = 18000.0 + np.cumsum(rng.integers(3, 9, n_t)).astype(float)
    ndvi = rng.random((n, n_t)).astype(np.float32)
    ndvi[rng.random((n, n_t)) < 0.55] = np.nan
    ndvi[5] = np.nan  # never observed
    radar_ndvi = rng.random((n, n_t)).astype(np.float32)
    pixels = np.sort(rng.choice(n, 200, replace=False))
    donors = rng.integers(0, n, 200)
    donors[0] = 5  # all of the first pixel's observations hidden: nothing to interpolate
    seen = np.where(np.isfinite(ndvi[donors]), ndvi[pixels], np.nan)
    hidden = np.isfinite(ndvi[pixels]) & np.isnan(seen)
    features = blend_features(BlendInputs(ndvi=seen, radar_ndvi=radar_ndvi[pixels]), days)
    design = np.empty((pixels.size * n_t, 11))
    target = np.empty(pixels.size * n_t)
    rows = blend_samples(ndvi, radar_ndvi, pixels, np.isfinite(ndvi[donors]), days, design, target)
    assert rows == hidden.sum()
    # the same float32 arithmetic, the pixel's mean included: equal, not just close
    np.testing.assert_array_equal(design[:rows], features.design(*np.nonzero(hidden)))
    np.testing.assert_array_equal(target[:rows], ndvi[pixels][hidden])


def test_compiled_box_filter_equals_scipy_uniform_filter():
    from scipy import ndimage

    from fusecube.fusion.ridge.model import _box_db
    from fusecube.kernels.ridge import box_filter
    from fusecube.units import to_db

    rng = np.random.default_rng(10)
    for shape in ((6, 17, 11), (3, 1, 9), (2, 5, 2)):
        grid = rng.gamma(2.0, 0.02, shape).astype(np.float32)
        for size in (2, 3, 5, 7):
            out = np.empty_like(grid)
            box_filter(grid, size, out)
            np.testing.assert_array_equal(
                out, ndimage.uniform_filter(grid, (1, size, size), mode="nearest"))
            np.testing.assert_array_equal(  # and in dB, as the ridge fusion uses it
                _box_db(grid, size), to_db(ndimage.uniform_filter(grid, (1, size, size),
                                                                  mode="nearest")))


def test_compiled_standardisation_equals_numpy_mean_and_std():
    from fusecube.kernels.ridge import standardise

    rng = np.random.default_rng(13)
    design = rng.standard_normal((5000, 9)) * rng.uniform(0.1, 5.0, 9) - 10.0
    design[:, 4] = 2.5  # a constant column keeps scale 1
    z, mean, std = np.empty_like(design), np.empty(9), np.empty(9)
    standardise(design, z, mean, std)
    expected_std = np.where(design.std(axis=0) > 1e-9, design.std(axis=0), 1.0)
    np.testing.assert_array_equal(mean, design.mean(axis=0))
    np.testing.assert_array_equal(std, expected_std)
    np.testing.assert_array_equal(z, (design - design.mean(axis=0)) / expected_std)
