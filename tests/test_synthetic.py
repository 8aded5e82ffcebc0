import hashlib

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from fusecube.cube import NDVI, NDVI_QUALITY, PADDY_MASK, VH, VV, read_cube, validate_cube
from fusecube.sources.synthetic.scene import SETTLEMENT, SceneConfig
from fusecube.sources.synthetic.writer import synthesize


@pytest.fixture(scope="module")
def scene(small_scene):
    return read_cube(small_scene["cube"]).load(), read_cube(small_scene["truth"]).load()


def _digest(path) -> str:
    ds = read_cube(path).load()
    h = hashlib.sha256()
    for name in sorted(ds.data_vars):
        h.update(name.encode())
        h.update(np.ascontiguousarray(ds[name].values).tobytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    cfg = SceneConfig(width=24, height=20, seed=11, n_periods=20)
    a = synthesize(cfg, tmp_path / "a")
    b = synthesize(cfg, tmp_path / "b")
    c = synthesize(SceneConfig(width=24, height=20, seed=12, n_periods=20), tmp_path / "c")
    assert _digest(a["cube"]) == _digest(b["cube"])
    assert _digest(a["truth"]) == _digest(b["truth"])
    assert _digest(a["cube"]) != _digest(c["cube"])


def test_cube_follows_the_data_model(scene):
    cube, _ = scene
    validate_cube(cube)
    assert cube.sizes["time"] == 62
    assert cube.odc.geobox.crs.epsg == 32749
    assert cube.odc.geobox.resolution.x == 50
    assert pd.Timestamp(cube.time.values[0]) == pd.Timestamp("2023-11-07")  # centre of 1-12 Nov
    assert (cube[VV] > 0).all() and (cube[VH] > 0).all()  # linear backscatter
    q = cube[NDVI_QUALITY].values
    assert np.nanmin(q) >= 0 and np.nanmax(q) <= 1


def test_cloud_seasonality_and_bad_periods(scene):
    cube, truth = scene
    missing = np.isnan(cube[NDVI]).mean(("y", "x")).values
    months = pd.DatetimeIndex(cube.time.values).month
    wet = np.isin(months, [11, 12, 1, 2, 3])
    dry = np.isin(months, [5, 6, 7, 8, 9])
    assert missing[wet].mean() >= 0.7
    assert 0.15 <= missing[dry].mean() <= 0.45
    assert (missing == 1.0).sum() >= 1, "at least one fully clouded period"
    zero = truth.attrs["zero_period"]
    assert np.all(cube[NDVI].isel(time=zero).values == 0.0), "one period of bad zeros"


def test_land_classes_and_paddy_share(scene):
    _, truth = scene
    classes = np.bincount(truth["land_class"].values.ravel(), minlength=6)
    assert (classes > 0).all(), f"every class present: {classes}"
    paddy_share = truth[PADDY_MASK].values.mean()
    assert 0.2 <= paddy_share <= 0.4


def test_seasons_two_and_three_per_year(scene):
    _, truth = scene
    paddy = truth[PADDY_MASK].values > 0
    first_year = truth["true_season_count"].isel(year=0).values[paddy]
    assert set(np.unique(first_year)) == {2.0, 3.0}
    assert np.isnan(truth["true_season_count"].values[:, ~paddy]).all()
    sos, eos = truth["true_sos"].values, truth["true_eos"].values
    length = (eos - sos)[~np.isnat(sos)] / np.timedelta64(1, "D")
    assert length.min() > 50 and length.max() < 140, "rice seasons are 2-4 months SOS to EOS"


def test_speckle_statistics(scene):
    cube, truth = scene
    # settlements have constant backscatter: the temporal variation is speckle alone
    urban = truth["land_class"].values == SETTLEMENT
    vv = cube[VV].values[:, urban]
    cv = vv.std(axis=0) / vv.mean(axis=0)
    enl = 4.5
    assert abs(np.median(cv) - 1 / np.sqrt(enl)) < 0.06


def test_vh_tracks_biomass_better_than_vv_in_paddy(scene):
    cube, truth = scene
    paddy = truth[PADDY_MASK].values > 0
    ndvi = truth["ndvi_true"].values[:, paddy].ravel()
    vh = 10 * np.log10(cube[VH].values[:, paddy].ravel())
    vv = 10 * np.log10(cube[VV].values[:, paddy].ravel())
    r_vh = np.corrcoef(vh, ndvi)[0, 1]
    r_vv = np.corrcoef(vv, ndvi)[0, 1]
    assert r_vh > r_vv > 0


def test_flooding_before_transplanting_is_dark(scene):
    cube, truth = scene
    paddy = truth[PADDY_MASK].values > 0
    planting = truth["true_planting"].isel(season=0).values[paddy]
    times = cube.time.values
    idx = np.abs(times[None, :] - planting[:, None]).argmin(axis=1)
    vh = cube[VH].values[:, paddy]
    at_planting = vh[idx, np.arange(idx.size)]
    median_vh = np.median(vh, axis=0)
    assert np.median(at_planting / median_vh) < 0.5  # > 3 dB darker when flooded


def test_blocks_polygons_reproduce_paddy_mask(small_scene):
    from fusecube.masks.resolve import resolve_mask

    cube = read_cube(small_scene["cube"])
    mask = resolve_mask(str(small_scene["blocks"]), cube)
    np.testing.assert_array_equal(mask.values, cube[PADDY_MASK].values)
    assert isinstance(mask, xr.DataArray)
