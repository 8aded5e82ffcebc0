"""Every NDVI value says where it came from (``ndvi_source``) and how sure it is (``ndvi_sigma``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from fusecube.config import CubeSource, RunConfig
from fusecube.cube import NDVI, NDVI_FUSED, read_cube
from fusecube.products.pixel import pixel
from fusecube.quality.gates import apply_screen, screen_periods
from fusecube.runner import run
from fusecube.stages.provenance import (
    INTERPOLATED,
    NDVI_SIGMA,
    NDVI_SOURCE,
    NONE,
    OBSERVED,
    S1_FUSED,
    SCREENED_OUT,
    SMOOTHED_ONLY,
    SOURCE_FLAGS,
    source_codes,
)

NAN = np.nan


def test_source_codes_name_every_case():
    raw = np.array([0.5, 0.0, NAN, NAN, NAN, NAN, NAN])
    observed = np.array([0.5, NAN, NAN, NAN, NAN, NAN, NAN])  # the 0.0 was screened out
    fused = np.array([0.5, 0.4, 0.3, 0.3, NAN, NAN, NAN])
    smoothed = np.array([0.5, 0.4, 0.3, 0.3, 0.2, NAN, NAN])
    radar = np.array([True, True, True, False, True, True, False])
    assert source_codes(raw, observed, fused, smoothed, radar).tolist() == [
        OBSERVED, SCREENED_OUT, S1_FUSED, INTERPOLATED, SMOOTHED_ONLY, NONE, NONE]
    # an optical method never claims radar
    assert source_codes(raw, observed, fused, smoothed, None).tolist() == [
        OBSERVED, SCREENED_OUT, INTERPOLATED, INTERPOLATED, SMOOTHED_ONLY, NONE, NONE]


def test_compiled_kernel_matches_the_numpy_reference():
    from fusecube.evaluate.uncertainty import HeldOut, fit_sigma
    from fusecube.kernels.provenance_compiled import provenance_rows
    from fusecube.stages.provenance import reference_kernel

    rng = np.random.default_rng(2)
    n, t = 300, 40
    days = np.cumsum(rng.integers(5, 15, t)).astype(float)
    raw = np.where(rng.random((n, t)) < 0.6, rng.random((n, t)), NAN).astype(np.float32)
    raw[:5] = NAN  # pixels never observed
    observed = np.where(rng.random((n, t)) < 0.9, raw, NAN).astype(np.float32)
    fused = np.where(rng.random((n, t)) < 0.9, 0.5, NAN).astype(np.float32)
    smoothed = np.where(rng.random((n, t)) < 0.95, 0.5, NAN).astype(np.float32)
    radar = rng.random((n, t)) < 0.7
    paddy = rng.random(n) < 0.5
    held = HeldOut(rng.choice([5.0, 10.0, 20.0, 40.0], 5000), rng.normal(0, 0.1, 5000),
                   rng.random(5000) < 0.5, noise=0.02)
    model = fit_sigma(held, "ridge", min_count=300)
    for args in ((radar, model, paddy), (None, model, None), (radar, None, None)):
        want = reference_kernel(raw, observed, fused, smoothed, args[0], days, args[1], args[2])
        got = provenance_rows(raw, observed, fused, smoothed, args[0], days, args[1], args[2])
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@pytest.fixture(scope="module")
def runs(small_scene, tmp_path_factory):
    """The same run with the issue-22 layers on and off."""
    out = {}
    for on in (True, False):
        folder = tmp_path_factory.mktemp(f"prov{int(on)}") / "run"
        config = RunConfig(source=CubeSource(path=small_scene["cube"]), out=folder,
                           report=False, provenance=on)
        out[on] = (run(config), config)
    return out


def test_existing_layers_are_bit_identical_with_provenance_on(runs):
    on = xr.open_zarr(runs[True][0].result)
    off = xr.open_zarr(runs[False][0].result)
    assert {NDVI_SOURCE, NDVI_SIGMA, "season_reason", "sos_pm_days"} <= set(on.data_vars)
    assert not {NDVI_SOURCE, NDVI_SIGMA, "season_reason"} & set(off.data_vars)
    for name, var in off.data_vars.items():
        assert on[name].dtype == var.dtype, name
        np.testing.assert_array_equal(on[name].values, var.values, err_msg=name)


def test_ndvi_source_follows_the_observations_and_the_screen(runs, small_scene):
    result = xr.open_zarr(runs[True][0].result)
    codes = result[NDVI_SOURCE].transpose("time", "y", "x").values
    attrs = result[NDVI_SOURCE].attrs
    assert codes.dtype == np.uint8
    assert list(attrs["flag_values"]) == list(range(len(SOURCE_FLAGS)))
    assert attrs["flag_meanings"].split() == list(SOURCE_FLAGS)
    cube = read_cube(small_scene["cube"]).load()
    screened = apply_screen(cube, screen_periods(cube))
    raw = np.isfinite(cube[NDVI].transpose("time", "y", "x").values)
    kept = np.isfinite(screened[NDVI].transpose("time", "y", "x").values)
    assert np.array_equal(codes == OBSERVED, kept)
    assert np.array_equal(codes == SCREENED_OUT, raw & ~kept)
    assert (codes == SCREENED_OUT).sum() > 0  # the scene's planted all-zero composite
    fused = np.isfinite(result[NDVI_FUSED].transpose("time", "y", "x").values)
    filled = np.isin(codes, (S1_FUSED, INTERPOLATED))
    assert np.array_equal(filled, fused & ~raw)
    method = runs[True][0].gapfill["chosen"]
    radar_codes = (codes == S1_FUSED).sum()
    assert (radar_codes > 0) == (method in ("ridge", "fusion"))


def test_ndvi_sigma_observed_noise_and_fills_from_the_calibration(runs):
    result = xr.open_zarr(runs[True][0].result)
    sigma = result[NDVI_SIGMA].transpose("time", "y", "x").values
    codes = result[NDVI_SOURCE].transpose("time", "y", "x").values
    calibration = json.loads(result[NDVI_SIGMA].attrs["calibration"])
    assert sigma.dtype == np.float32
    np.testing.assert_allclose(sigma[codes == OBSERVED], calibration["noise"], rtol=1e-6)
    filled = sigma[np.isin(codes, (S1_FUSED, INTERPOLATED))]
    assert np.all(np.isfinite(filled)) and filled.min() > 0
    allowed = set(np.float32(calibration["sigma"]["all"]))
    allowed |= set(np.float32(calibration["sigma"].get("paddy", ())))
    allowed |= set(np.float32(calibration["sigma"].get("other", ())))
    assert set(np.unique(filled)) <= allowed


def test_pixel_api_series_carries_source_sigma_and_intervals(runs):
    result, config = runs[True]
    ds = xr.open_zarr(result.result)
    paddy = ds["paddy_mask"].values > 0
    seasons = np.isfinite(ds["pos"].values.astype("datetime64[ns]").astype(float)).any(axis=0)
    r, c = np.argwhere(paddy & seasons)[0]
    got = pixel(result.out, config, row=int(r), col=int(c))
    n_t = ds.sizes["time"]
    assert len(got["series"]["ndvi_source"]) == n_t
    assert set(got["series"]["ndvi_source"]) <= set(SOURCE_FLAGS)
    assert len(got["series"]["ndvi_sigma"]) == n_t
    assert got["seasons"] and all(s["sos_pm_days"] > 0 for s in got["seasons"])
    r, c = np.argwhere(~paddy)[0]
    other = pixel(result.out, config, row=int(r), col=int(c))
    assert other["empty_seasons"]
    assert all(e["reasons"] == ["not_paddy"] for e in other["empty_seasons"])
