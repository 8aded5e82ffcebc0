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


# ----------------------------------------------------------------------------- radar skill
SKILLS = (1.0, 0.63, 0.3, 0.0)


@pytest.fixture(scope="module")
def skill_scenes(small_scene, tmp_path_factory):
    """The small scene (seed 3, default skill) and the same scene at lower radar skills."""
    out = tmp_path_factory.mktemp("skills")
    paths = {1.0: small_scene}
    for skill in SKILLS[1:]:
        paths[skill] = synthesize(SceneConfig(width=48, height=48, seed=3, radar_skill=skill),
                                  out / str(skill))
    return {skill: read_cube(p["cube"]).load() for skill, p in paths.items()}, paths


def _median_paddy_r(cube) -> float:
    from fusecube.quality.gates import apply_screen, screen_periods
    from fusecube.testing.realdata import ndvi_radar_correlation

    r = ndvi_radar_correlation(apply_screen(cube, screen_periods(cube))).values
    return float(np.nanmedian(r[cube[PADDY_MASK].values > 0]))


def test_default_skill_is_today_and_only_radar_changes(skill_scenes, small_scene, tmp_path):
    cubes, paths = skill_scenes
    explicit = synthesize(SceneConfig(width=48, height=48, seed=3, radar_skill=1.0), tmp_path / "one")
    assert _digest(explicit["cube"]) == _digest(small_scene["cube"])
    assert _digest(explicit["truth"]) == _digest(small_scene["truth"])
    # a lower skill draws from a stream of its own: optics and truth stay bit-identical
    low = cubes[0.3]
    for name in (NDVI, NDVI_QUALITY, PADDY_MASK):
        np.testing.assert_array_equal(low[name].values, cubes[1.0][name].values)
    assert _digest(paths[0.3]["truth"]) == _digest(small_scene["truth"])
    for name in (VV, VH):
        assert not np.array_equal(low[name].values, cubes[1.0][name].values)


def test_ndvi_radar_correlation_falls_with_skill(skill_scenes):
    cubes, _ = skill_scenes
    r = [_median_paddy_r(cubes[s]) for s in SKILLS]
    assert all(a > b for a, b in zip(r, r[1:], strict=False)), r
    assert r[0] > 0.6, "flooded rice: VH follows NDVI"
    assert abs(r[-1]) < 0.1, "skill 0: no link left"
    # the documented mapping: r(s) ~ sqrt(s) r(1), so r^2 ~ s r(1)^2
    for skill, value in zip(SKILLS[1:-1], r[1:-1], strict=True):
        assert abs(value - np.sqrt(skill) * r[0]) < 0.08, (skill, value, r[0])


def test_backscatter_statistics_kept_across_skills(skill_scenes):
    """The scene keeps its backscatter levels and variations at every skill; at skill 0 a
    pixel's own level no longer says anything about it (no class signal left)."""
    from fusecube.units import to_db

    cubes, _ = skill_scenes
    for name in (VV, VH):
        ref = to_db(cubes[1.0][name].values.astype(np.float64)).reshape(-1, 48 * 48)
        for skill in SKILLS[1:]:
            assert (cubes[skill][name].values > 0).all()
            db = to_db(cubes[skill][name].values.astype(np.float64)).reshape(-1, 48 * 48)
            levels, ref_levels = db.mean(axis=0), ref.mean(axis=0)
            assert abs(levels.mean() - ref_levels.mean()) < 0.05, (name, skill)
            assert abs(levels.std() / ref_levels.std() - 1) < 0.1, (name, skill)
            assert abs(db.std(axis=0).mean() / ref.std(axis=0).mean() - 1) < 0.05, (name, skill)
        zero = to_db(cubes[0.0][name].values.astype(np.float64)).reshape(-1, 48 * 48)
        r_level = np.corrcoef(zero.mean(axis=0), ref.mean(axis=0))[0, 1]
        assert abs(r_level) < 0.1, (name, r_level)


def test_decouple_radar_sets_the_link_and_keeps_the_scene():
    from fusecube.sources.synthetic.curves import decouple_radar
    from fusecube.units import from_db, to_db

    rng = np.random.default_rng(0)
    t = np.arange(62)
    n = 400
    level = rng.normal(-15, 3, (n, 1))
    veg = np.sin(2 * np.pi * t / 10 + rng.uniform(0, 6, (n, 1)))  # a crop-like cycle
    amp = rng.uniform(0.5, 3, (n, 1))
    vv = from_db(level + amp * veg + rng.normal(0, 0.3, (n, 62)))
    vh = from_db(level - 7 + 1.5 * amp * veg + rng.normal(0, 0.3, (n, 62)))
    vh[:5] = from_db(-27.0)  # constant (water)
    for skill in (0.0, 0.4, 0.9, 1.0):
        out_vv, out_vh = decouple_radar(vv, vh, skill, np.random.default_rng(1))
        for before, after in ((vv, out_vv), (vh, out_vh)):
            a, b = to_db(before), to_db(after)
            own = a - a.mean(axis=1, keepdims=True)
            var = b - b.mean(axis=1, keepdims=True)
            ok = (own.std(axis=1) > 0) & (var.std(axis=1) > 0)
            r = (own * var).sum(axis=1)[ok] / np.sqrt((own ** 2).sum(axis=1) * (var ** 2).sum(axis=1))[ok]
            np.testing.assert_allclose(r, np.sqrt(skill), atol=1e-9)
            if skill == 0.0:  # another pixel's level and variation: the same set, reshuffled
                np.testing.assert_allclose(np.sort(b.mean(axis=1)), np.sort(a.mean(axis=1)), atol=1e-9)
                np.testing.assert_allclose(np.sort(b.std(axis=1)), np.sort(a.std(axis=1)), atol=1e-9)
                assert abs(np.corrcoef(b.mean(axis=1), a.mean(axis=1))[0, 1]) < 0.15
            if skill == 1.0:
                np.testing.assert_allclose(b, a, atol=1e-9)
        varying = to_db(out_vh)[to_db(out_vh).std(axis=1) > 0]  # a constant donor: no variation
        lag1 = [np.corrcoef(x[:-1], x[1:])[0, 1] for x in varying]
        assert np.median(lag1) > 0.6, "the surrogate keeps the autocorrelation of the cycle"


def test_radar_skill_is_checked_and_reaches_the_scene():
    from fusecube.config import SyntheticSource
    from fusecube.sources.readers import SyntheticReader

    with pytest.raises(ValueError, match="radar_skill"):
        SceneConfig(radar_skill=1.5)
    with pytest.raises(ValueError):
        SyntheticSource(radar_skill=-0.1)
    assert SyntheticSource().radar_skill == 1.0
    assert SyntheticReader(SyntheticSource(radar_skill=0.4)).scene.radar_skill == 0.4
