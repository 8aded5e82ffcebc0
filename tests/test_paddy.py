"""Paddy detection from the time series: features, rules, classifier, clean-up, area, products."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

from fusecube.cube import NDVI, PADDY_MASK, TIME, VH, VV, X, Y, read_cube
from fusecube.errors import CubeSchemaError, MaskError
from fusecube.masks.area import clean_mask, mmu_pixels, paddy_area_by_polygon, paddy_area_km2
from fusecube.masks.paddy import PaddyConfig, detect_paddy, paddy_mask_auto
from fusecube.masks.paddy_classifier import PaddyClassifier
from fusecube.masks.paddy_features import (
    FEATURE,
    FEATURE_NAMES,
    FeatureConfig,
    estimate_enl,
    features_array,
    ndvi_seasons,
    paddy_features,
    row_quantiles,
    speckle_window_for,
)
from fusecube.masks.paddy_labels import UNKNOWN, binary_scores, labels_from_vector, spatial_split
from fusecube.masks.paddy_rules import DEFAULT_RULES, PADDY_PROBABILITY, rule_probability_array
from fusecube.sources.synthetic.scene import CLASS_NAMES, PADDY, POND, SceneConfig
from fusecube.sources.synthetic.writer import synthesize

SIZE = 96
PIXEL_KM2 = 0.0025  # 50 m pixels


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 96 x 96 synthetic scene (seed 3: every class on both halves), cube loaded once."""
    out = tmp_path_factory.mktemp("paddy96")
    paths = synthesize(SceneConfig(width=SIZE, height=SIZE, seed=3), out)
    cube = read_cube(paths["cube"]).load()
    truth = read_cube(paths["truth"]).load()
    return {"paths": paths, "cube": cube, "land_class": truth["land_class"].values,
            "features": paddy_features(cube)}


def _fpr(mask: np.ndarray, land_class: np.ndarray, cls: int, region=None) -> float:
    sel = land_class == cls if region is None else (land_class == cls) & region
    return float(mask[sel].mean())


# ----------------------------------------------------------------------------- kernels
def test_row_quantiles_match_numpy():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(50, 17))
    values[rng.random(values.shape) < 0.3] = np.nan
    values[3] = np.nan
    got = row_quantiles(values, (0.05, 0.5, 0.95))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN row
        want = np.nanpercentile(values, [5, 50, 95], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert np.isnan(got[:, 3]).all()


def _series(vh_db: np.ndarray, vv_db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return 10 ** (vh_db / 10), 10 ** (vv_db / 10)


def test_flood_features_count_dips_exactly():
    """Hand-made radar: a paddy with 2 floods a year, a pond, a settlement; no speckle."""
    t = np.arange(30) * 12.0 + 19000.0  # 360 days
    years = 360 / 365.25
    paddy_vh = np.full(30, -18.0)
    paddy_vh[[3, 4, 5, 18, 19]] = -28.0  # two flooding episodes
    paddy_vv = np.where(paddy_vh < -20, -21.0, -12.0)
    pond_vh, pond_vv = np.full(30, -27.0), np.full(30, -21.0)
    town_vh, town_vv = np.full(30, -13.0), np.full(30, -6.0)
    vh, vv = _series(np.stack([paddy_vh, pond_vh, town_vh]), np.stack([paddy_vv, pond_vv, town_vv]))
    ndvi = np.tile(np.linspace(0.1, 0.8, 30), (3, 1))
    cfg = FeatureConfig(speckle_window=1)
    f = features_array(vv, vh, ndvi, t, cfg)
    col = {name: f[:, i] for i, name in enumerate(FEATURE_NAMES)}
    np.testing.assert_allclose(col["flood_dips_per_year"], [2 / years, 1 / years, 0.0], rtol=1e-6)
    np.testing.assert_allclose(col["flood_fraction"], [5 / 30, 1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(col["dip_interval_days"][0], 15 * 12.0)
    assert np.isnan(col["dip_interval_days"][1:]).all()
    np.testing.assert_allclose(col["vh_rise_db"], [10.0, 0.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(col["vh_min_db"], [-28.0, -27.0, -13.0], atol=1e-4)
    np.testing.assert_allclose(col["vh_median_db"], [-18.0, -27.0, -13.0], atol=1e-4)


@pytest.mark.parametrize("enl", [1.0, 4.5, 50.0])
def test_estimate_enl_recovers_gamma_speckle(enl):
    rng = np.random.default_rng(7)
    level = 10 ** (rng.uniform(-2.5, -1.0, (3000, 1)))  # stable surfaces, -25..-10 dB
    series = level * rng.gamma(enl, 1 / enl, (3000, 62))
    assert estimate_enl(series) == pytest.approx(enl, rel=0.1)


def test_speckle_window_for_noise_levels():
    cfg = FeatureConfig()
    assert speckle_window_for(0.95, 12.0, cfg) == 4  # single look: capped by a 40-day flood
    assert speckle_window_for(3.1, 12.0, cfg) == 3
    assert speckle_window_for(28.0, 12.0, cfg) == 1  # multi-looked composites: no averaging
    assert speckle_window_for(0.95, 6.0, cfg) == 7
    assert speckle_window_for(float("nan"), 12.0, cfg) == 3


def test_ndvi_seasons_count_and_length():
    t = np.arange(61) * 12.0
    two = 0.45 - 0.35 * np.cos(2 * np.pi * t / 180.0)  # a season every 180 days, peak 0.8
    flat = np.full_like(t, 0.3)
    weak = 0.25 - 0.05 * np.cos(2 * np.pi * t / 180.0)  # below the zigzag amplitude
    count, length = ndvi_seasons(np.stack([two, flat, weak]), t)
    # complete seasons inside 720 days: troughs at 0, 180, 360, 540, 720 -> 4
    np.testing.assert_array_equal(count, [4, 0, 0])
    np.testing.assert_allclose(length[0], 180.0)
    assert np.isnan(length[1:]).all()


# ----------------------------------------------------------------------------- rules
def test_rules_are_documented_and_use_known_features():
    for rule in DEFAULT_RULES:
        assert rule.feature in FEATURE_NAMES
        assert len(rule.reason) > 40 and rule.width > 0


def test_rule_probability_evidence_and_missing_values():
    names = FEATURE_NAMES
    row = np.zeros((4, len(names)), dtype=np.float32)
    good = {"flood_dips_per_year": 2.0, "vh_median_db": -19.0, "vh_rise_db": 10.0, "ndvi_peak": 0.8}
    for k, v in good.items():
        row[:, names.index(k)] = v
    row[1, names.index("ndvi_peak")] = np.nan  # never clear: neutral
    row[2, names.index("vh_median_db")] = -27.0  # water most of the year: a pond
    row[3, names.index("vh_rise_db")] = np.nan  # no radar: unknown
    p = rule_probability_array(row)
    assert p[0] > 0.95 and p[1] == pytest.approx(p[0] / _ramp(0.8, 0.5, 0.05), rel=1e-5)
    assert p[2] < 0.01
    assert np.isnan(p[3])


def _ramp(v, thr, width):
    return 1 / (1 + np.exp(-(v - thr) / width))


def test_rules_on_scene_f1_and_false_positives(scene):
    result = detect_paddy(scene["cube"], features=scene["features"])
    mask = result[PADDY_MASK].values > 0
    lc = scene["land_class"]
    assert binary_scores(mask, lc == PADDY)["f1"] >= 0.9
    for cls in range(len(CLASS_NAMES)):
        if cls != PADDY:
            assert _fpr(mask, lc, cls) <= 0.05, CLASS_NAMES[cls]
    assert result[PADDY_PROBABILITY].dtype == np.float32
    assert result[PADDY_MASK].dtype == np.uint8
    assert result.attrs["paddy_km2"] == pytest.approx(mask.sum() * PIXEL_KM2)


def test_a_rule_missing_lets_ponds_or_crops_in(scene):
    """The rules are not decoration: without the VH-rise and flooding evidence other land
    passes as paddy."""
    weak = tuple(r for r in DEFAULT_RULES if r.feature in ("vh_median_db", "ndvi_peak"))
    result = detect_paddy(scene["cube"], features=scene["features"],
                          config=PaddyConfig(rules=weak, min_mapping_unit_ha=0))
    mask = result[PADDY_MASK].values > 0
    assert _fpr(mask, scene["land_class"], CLASS_NAMES.index("other_crop")) > 0.3


@pytest.mark.filterwarnings("ignore:The specified chunks separate")
def test_auto_mask_lazy_cube_equals_eager(scene):
    lazy = read_cube(scene["paths"]["cube"], chunks={Y: 40, X: 96, TIME: -1})
    mask = paddy_mask_auto(lazy)
    eager = detect_paddy(scene["cube"], features=scene["features"])[PADDY_MASK]
    assert mask.dims == (Y, X) and mask.dtype == np.uint8 and mask.name == PADDY_MASK
    np.testing.assert_array_equal(mask.values, eager.values)
    assert mask.attrs["method"] == "rules"


def test_features_of_cube_without_radar_fail(scene):
    with pytest.raises(CubeSchemaError, match="vv, vh"):
        paddy_features(scene["cube"].drop_vars(VH))


def test_features_layout(scene):
    f = scene["features"]
    assert f.dims == (FEATURE, Y, X) and f.dtype == np.float32
    assert list(f[FEATURE].values) == list(FEATURE_NAMES)
    assert np.isfinite(f.sel({FEATURE: "vh_median_db"}).values).all()
    assert f.attrs["speckle_window"] in (2, 3) and 2.5 < f.attrs["enl_estimate"] < 6


# ----------------------------------------------------------------------------- supervised
def _west_labels(scene):
    gb = scene["cube"].odc.geobox
    left, bottom, right, top = gb.extent.boundingbox
    return labels_from_vector(scene["paths"]["blocks"], gb,
                              region=(left, bottom, left + (right - left) / 2, top))


def test_labels_from_vector_region(scene):
    labels = _west_labels(scene).values
    lc = scene["land_class"]
    assert (labels[:, SIZE // 2:] == UNKNOWN).all()
    west = labels[:, : SIZE // 2]
    np.testing.assert_array_equal(west == 1, lc[:, : SIZE // 2] == PADDY)
    assert set(np.unique(west)) == {0, 1}
    with pytest.raises(MaskError, match="must be 'bbox', 'all'"):
        labels_from_vector(scene["paths"]["blocks"], scene["cube"].odc.geobox, region="west")
    with pytest.raises(MaskError, match="does not overlap"):
        labels_from_vector(scene["paths"]["blocks"], scene["cube"].odc.geobox,
                           region=(0.0, 0.0, 10.0, 10.0))


def test_spatial_split_is_disjoint_with_buffer():
    labels = np.zeros((96, 96), np.uint8)
    labels[:, 80:] = UNKNOWN
    train, validate = spatial_split(labels, tile=16, validation_fraction=0.3, buffer=2, seed=1)
    assert validate.any() and train.any() and not (train & validate).any()
    from scipy import ndimage

    near = ndimage.binary_dilation(validate, iterations=2)
    assert not (train & near).any()
    assert not (train | validate)[:, 80:].any()


def test_supervised_on_unseen_half(scene):
    """Trained on the west half, scored on the east half it never saw.

    In this scene the west holds only three-season blocks and the east mostly two-season ones:
    the classifier must not learn the calendar (see SUPERVISED_FEATURES).
    """
    clf = PaddyClassifier(n_threads=1, max_iter=80, tile=16).fit(scene["features"],
                                                                 _west_labels(scene))
    assert clf.n_train_ > 0 and clf.validation_["n"] > 0
    assert clf.validation_["f1"] >= 0.9
    result = detect_paddy(scene["cube"], features=scene["features"], classifier=clf,
                          config=PaddyConfig(method="supervised"))
    east = np.zeros((SIZE, SIZE), bool)
    east[:, SIZE // 2:] = True
    mask = result[PADDY_MASK].values > 0
    lc = scene["land_class"]
    assert binary_scores(mask[east], lc[east] == PADDY)["f1"] >= 0.95
    assert _fpr(mask, lc, POND, east) <= 0.05
    assert _fpr(mask, lc, CLASS_NAMES.index("other_crop"), east) <= 0.05


def test_calendar_features_teach_a_shortcut(scene):
    """Given the timing features, labels from three-season blocks teach the calendar: most
    two-season paddy of the unseen half is missed. The default feature set exists for this."""
    clf = PaddyClassifier(n_threads=1, max_iter=80, tile=16, features=FEATURE_NAMES).fit(
        scene["features"], _west_labels(scene))
    prob = clf.predict_proba(scene["features"]).values
    east = np.zeros((SIZE, SIZE), bool)
    east[:, SIZE // 2:] = True
    lc = scene["land_class"]
    assert binary_scores(prob[east] >= 0.5, lc[east] == PADDY)["recall"] < 0.8


def test_supervised_label_errors(scene):
    f = scene["features"]
    with pytest.raises(MaskError, match="needs labels"):
        detect_paddy(scene["cube"], features=f, config=PaddyConfig(method="supervised"))
    only_paddy = xr.full_like(_west_labels(scene), UNKNOWN)
    only_paddy.values[:10, :10] = 1
    with pytest.raises(MaskError, match="both paddy and not-paddy"):
        PaddyClassifier().fit(f, only_paddy)
    with pytest.raises(MaskError, match="do not match"):
        PaddyClassifier().fit(f, _west_labels(scene).isel({Y: slice(0, 50)}))
    with pytest.raises(MaskError, match="not trained"):
        PaddyClassifier().predict_proba(f)


# ----------------------------------------------------------------------------- clean-up, area
def test_clean_mask_sieve_is_exact():
    m = np.zeros((12, 12), np.uint8)
    m[1:7, 1:7] = 1  # 36 px field
    m[3, 3] = m[3, 4] = 0  # 2 px hole
    m[10, 10] = m[10, 11] = 1  # 2 px speck
    m[9, 0] = 1  # diagonal contact only: not joined (4-connectivity)
    cleaned = clean_mask(m, 4)
    want = np.zeros_like(m)
    want[1:7, 1:7] = 1
    np.testing.assert_array_equal(cleaned, want)
    np.testing.assert_array_equal(clean_mask(m, 1), m)


def test_mmu_pixels_and_area(scene):
    gb = scene["cube"].odc.geobox
    assert mmu_pixels(1.0, gb) == 4 and mmu_pixels(0.3, gb) == 2
    result = detect_paddy(scene["cube"], features=scene["features"])
    n = int(result[PADDY_MASK].values.sum())
    assert paddy_area_km2(result[PADDY_MASK]) == pytest.approx(n * PIXEL_KM2)
    table = paddy_area_by_polygon(result[PADDY_MASK], scene["paths"]["blocks"],
                                  id_column="block_id")
    inside = (result[PADDY_MASK].values > 0) & (scene["land_class"] == PADDY)
    assert table["paddy_km2"].sum() == pytest.approx(inside.sum() * PIXEL_KM2)
    assert table["polygon_km2"].sum() == pytest.approx((scene["land_class"] == PADDY).sum()
                                                       * PIXEL_KM2)
    with pytest.raises(MaskError, match="no column"):
        paddy_area_by_polygon(result[PADDY_MASK], scene["paths"]["blocks"], id_column="nope")


# ----------------------------------------------------------------------------- products
def test_products_and_report(scene, tmp_path):
    import rasterio

    from fusecube.products.paddy import (
        confusion_matrix,
        paddy_section_html,
        write_paddy_products,
    )

    result = detect_paddy(scene["cube"], features=scene["features"])
    written = write_paddy_products(result, tmp_path, polygons=scene["paths"]["blocks"])
    with rasterio.open(written["paddy_mask"]) as src:
        assert src.dtypes[0] == "uint8" and src.crs.to_epsg() == 32749
        np.testing.assert_array_equal(src.read(1), result[PADDY_MASK].values)
    with rasterio.open(written["paddy_probability"]) as src:
        np.testing.assert_allclose(src.read(1), result[PADDY_PROBABILITY].values)
    assert (tmp_path / "paddy_area_by_polygon.csv").exists()
    conf = confusion_matrix(result[PADDY_MASK].values, scene["land_class"], CLASS_NAMES)
    counts = np.array(conf["counts"])
    assert counts.sum() == SIZE * SIZE
    assert counts[PADDY].sum() == (scene["land_class"] == PADDY).sum()
    assert conf["scores"]["tp"] == counts[PADDY, 1]
    html = paddy_section_html(scene["cube"], result, reference=scene["land_class"],
                              class_names=CLASS_NAMES)
    assert html.startswith('<section id="paddy">') and html.count("data:image/png;base64") == 3
    assert "false-positive rate: fish_pond" in html


def test_confusion_matrix_skips_unknown_labels():
    from fusecube.products.paddy import confusion_matrix

    pred = np.array([1, 1, 0, 0, 1])
    ref = np.array([1, 0, 0, UNKNOWN, UNKNOWN])
    conf = confusion_matrix(pred, ref)
    assert conf["counts"] == [[1, 1], [0, 1]]
    assert conf["scores"]["f1"] == pytest.approx(2 / 3)


def test_cli_paddy(scene, tmp_path):
    from fusecube.cli import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as done:
        main(["paddy", str(scene["paths"]["cube"]), "--out", str(out), "--no-report",
              "--mmu-ha", "0.5"])
    assert done.value.code == 0
    assert (out / "paddy_mask.tif").exists() and (out / "paddy_probability.tif").exists()
    import json

    summary = json.loads((out / "paddy_summary.json").read_text())
    assert summary["method"] == "rules" and summary["mmu_pixels"] == 2
    with pytest.raises(SystemExit) as failed:
        main(["paddy", str(scene["paths"]["cube"]), "--out", str(out), "--method", "supervised"])
    assert failed.value.code == 2


def test_cli_supervised_with_truth_polygons_and_report(scene, tmp_path):
    from fusecube.cli import main

    out = tmp_path / "sup"
    with pytest.raises(SystemExit) as done:
        main(["paddy", str(scene["paths"]["cube"]), "--out", str(out), "--method", "supervised",
              "--labels", str(scene["paths"]["blocks"]), "--label-region", "all",
              "--polygons", str(scene["paths"]["blocks"]), "--id-column", "block_id",
              "--truth", str(scene["paths"]["truth"])])
    assert done.value.code == 0
    import json

    summary = json.loads((out / "paddy_summary.json").read_text())
    assert summary["method"] == "supervised" and summary["validation_f1"] >= 0.9
    page = (out / "paddy_report.html").read_text()
    assert "Confusion matrix" in page and "false-positive rate: fish_pond" in page
    table = (out / "paddy_area_by_polygon.csv").read_text().splitlines()
    assert table[0] == "id,paddy_km2,polygon_km2,paddy_fraction" and len(table) > 2


def test_missing_radar_gives_no_paddy_and_gaps_are_bridged(scene):
    cube = scene["cube"].copy(deep=True)
    cube[VH].values[:, 0, :5] = np.nan  # never observed (outside the swath)
    cube[VV].values[7, :, :] = np.nan  # one missing acquisition everywhere
    result = detect_paddy(cube)
    assert np.isnan(result[PADDY_PROBABILITY].values[0, :5]).all()
    assert (result[PADDY_MASK].values[0, :5] == 0).all()
    lc = scene["land_class"]
    assert binary_scores(result[PADDY_MASK].values[1:] > 0, lc[1:] == PADDY)["f1"] >= 0.9


def test_cube_fixture_has_radar_and_ndvi(scene):
    assert {VV, VH, NDVI} <= set(scene["cube"].data_vars)


# ----------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_klambu_glapan_labels_on_a_50m_grid(real_data):
    """The irrigation blocks of Demak rasterised at 50 m give the reference paddy coverage."""
    geopandas = pytest.importorskip("geopandas")
    from odc.geo.geobox import GeoBox

    path = real_data / "klambu_glapan" / "klambu-glapan.shp"
    if not path.exists():
        pytest.skip(f"{path} not found")
    blocks = geopandas.read_file(path).to_crs(32749)
    left, bottom, right, top = blocks.total_bounds
    gb = GeoBox.from_bbox((left - 500, bottom - 500, right + 500, top + 500), "EPSG:32749",
                          resolution=50)
    labels = labels_from_vector(path, gb)
    values = labels.values
    n_paddy = int((values == 1).sum())
    # the raster coverage matches the repaired polygon area to pixelation error
    assert labels.attrs["paddy_km2"] == pytest.approx(n_paddy * PIXEL_KM2)
    assert labels.attrs["paddy_km2"] == pytest.approx(labels.attrs["polygon_km2"], rel=0.02)
    assert 300 < labels.attrs["paddy_km2"] < 600
    # bbox region: every pixel of the polygons' box is known, the margin outside is unknown
    assert (values != UNKNOWN).sum() > n_paddy > 0
    assert (values[0] == UNKNOWN).all() and (values[:, -1] == UNKNOWN).all()
    # a label region in the cube's CRS keeps only that part known
    west = labels_from_vector(path, gb, region=(left, bottom, (left + right) / 2, top)).values
    assert (west[:, -20:] == UNKNOWN).all() and 0 < (west == 1).sum() < n_paddy
