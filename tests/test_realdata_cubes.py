"""The real datasets as fusecube cubes (fusecube.testing.realdata)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from fusecube.cube import DIMS, NDVI, VH, VV, validate_cube
from fusecube.testing.realdata import (
    CLEAR_SCL,
    REAL_CUBES,
    S1_WINDOW_DAYS,
    aggregate_2x2,
    correlation_summary,
    mode_2x2,
    ndvi_from_bands,
    real_data_root,
)

#: name → (y, x, resolution, EPSG, dates or None where the count comes from the cloud mask)
EXPECTED = {
    "worldcereal_31UDS": (32, 32, 20, 32631, None),
    "worldcereal_31UES": (32, 32, 20, 32631, None),
    "worldcereal_31UES_monthly": (32, 32, 20, 32631, 17),  # 2018-08-01..2019-11-30 in 30 d
    "fusets_field": (57, 56, 10, 32630, 33),
    "sen2rts_po": (7, 25, 10, 32632, 60),
}
PATCH = {"31UDS": "00002806639B424A", "31UES": "0000280849BAC91C"}


@pytest.fixture(scope="module")
def cubes(real_data):
    return {name: make() for name, make in REAL_CUBES.items()}


def _raw(real_data, tile: str, prefix: str, **kwargs) -> xr.Dataset:
    folder = real_data / "worldcereal_be" / PATCH[tile]
    return xr.open_dataset(next(folder.glob(f"{prefix}_*.nc")), **kwargs)


def test_aggregate_2x2_by_hand():
    ndvi = np.array([[[0.2, 0.4, np.nan, np.nan],
                      [np.nan, 0.6, np.nan, np.nan]]], np.float32)
    out = aggregate_2x2(ndvi)
    assert out.shape == (1, 1, 2)
    np.testing.assert_allclose(out[0, 0, 0], (0.2 + 0.4 + 0.6) / 3, rtol=1e-6)
    assert np.isnan(out[0, 0, 1])
    np.testing.assert_allclose(ndvi_from_bands([0.1, 0.0], [0.3, 0.0]), [0.5, np.nan], rtol=1e-6)


def test_mode_2x2_by_hand():
    labels = np.array([[1200, 1200, 9120, 1110, 7, 7],
                       [0, 1200, 9120, 1110, 1, 2]])
    np.testing.assert_array_equal(mode_2x2(labels), [[1200, 0, 7]])  # 3-1, 2-2 tie, 2-1-1


def test_real_data_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSECUBE_REAL_DATA", str(tmp_path))
    assert real_data_root() == tmp_path.resolve()


@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_cube_validates_with_its_grid_and_values(cubes, name):
    ds = validate_cube(cubes[name])
    ny, nx, res, epsg, dates = EXPECTED[name]
    geobox = ds.odc.geobox
    assert (ds.sizes["y"], ds.sizes["x"]) == (ny, nx)
    assert geobox.crs.epsg == epsg and abs(geobox.resolution.x) == res
    assert ds[NDVI].dims == DIMS and ds["time"].dtype == np.dtype("datetime64[ns]")
    if dates is not None:
        assert ds.sizes["time"] == dates
    ndvi = ds[NDVI].values
    observed = np.isfinite(ndvi)
    assert 0.05 < observed.mean() < 0.95
    assert ndvi[observed].min() >= -1 and ndvi[observed].max() <= 1
    if ds.attrs["radar"]:
        for band in (VV, VH):
            values = ds[band].values[np.isfinite(ds[band].values)]
            assert values.size > 0.9 * ds[band].size
            assert values.min() > 0 and np.median(values) < 1  # linear sigma0, not dB
    else:
        assert ds[VV].isnull().all() and ds[VH].isnull().all()


@pytest.mark.realdata
@pytest.mark.parametrize("tile", ["31UDS", "31UES"])
def test_worldcereal_dates_ndvi_and_s1_match_the_raw_files(cubes, real_data, tile):
    ds = cubes[f"worldcereal_{tile}"]
    s2 = _raw(real_data, tile, "S2_L2A_10m")
    scl = _raw(real_data, tile, "S2_L2A_20m", mask_and_scale=False)["SCL"].values
    s1 = _raw(real_data, tile, "S1_GRD-ASCENDING_20m")
    s2_days = s2["timestamp"].values.astype("datetime64[D]")
    # every S2 date with a clear 20 m pixel is kept, every other one dropped
    any_clear = np.isin(scl, CLEAR_SCL).any(axis=(1, 2))
    np.testing.assert_array_equal(ds["time"].values.astype("datetime64[D]"), s2_days[any_clear])
    # one clear and one masked 2 x 2 block of one date, by hand from the 10 m bands
    t = int(np.flatnonzero(any_clear & ~np.isin(scl, CLEAR_SCL).all(axis=(1, 2)))[0])
    k = int(np.flatnonzero(ds["time"].values.astype("datetime64[D]") == s2_days[t])[0])
    clear = np.isin(scl[t], CLEAR_SCL)
    (cy, cx), (my, mx) = np.argwhere(clear)[0], np.argwhere(~clear)[0]
    red = s2["B04"].values[t, 2 * cy:2 * cy + 2, 2 * cx:2 * cx + 2]
    nir = s2["B08"].values[t, 2 * cy:2 * cy + 2, 2 * cx:2 * cx + 2]
    expected = np.mean([(n - r) / (n + r) for n, r in zip(nir.ravel(), red.ravel(), strict=True)])
    np.testing.assert_allclose(ds[NDVI].values[k, cy, cx], expected, rtol=1e-5)
    assert np.isnan(ds[NDVI].values[k, my, mx])
    # S1: mean of linear VH within the window
    s1_days = s1["timestamp"].values.astype("datetime64[D]")
    near = np.abs((s1_days - s2_days[t]).astype(int)) <= S1_WINDOW_DAYS
    lin = 10 ** (s1["VH"].values[near, cy, cx] / 10)
    np.testing.assert_allclose(ds[VH].values[k, cy, cx], lin.mean(), rtol=1e-5)


@pytest.mark.realdata
def test_worldcereal_labels_sit_on_the_cube_grid(cubes, real_data):
    ds = cubes["worldcereal_31UES"]
    raw = _raw(real_data, "31UES", "OUTPUT_POLY-110_10m", mask_and_scale=False)
    assert ds["crop_type"].dims == ("y", "x")
    # 2 x 2 blocks of the 10 m labels, placed by their coordinates: pure blocks keep their label
    blocks = raw["CT"].astype("int32").coarsen(y=2, x=2)
    lo, hi = blocks.min(), blocks.max()
    np.testing.assert_allclose(lo["y"], ds["y"])
    np.testing.assert_allclose(lo["x"], ds["x"])
    pure = (lo == hi).values
    assert pure.mean() > 0.5
    np.testing.assert_array_equal(ds["crop_type"].values[pure], lo.values[pure])
    codes = ds["crop_type"].attrs["flag_values"]
    assert set(np.unique(ds["crop_type"].values)) - {0} == set(codes.tolist())
    assert len(ds["crop_type"].attrs["flag_meanings"].split()) == len(codes)


@pytest.mark.realdata
def test_worldcereal_periods_are_regular_composites(cubes):
    ds = cubes["worldcereal_31UES_monthly"]
    steps = np.diff(ds["time"].values) / np.timedelta64(1, "D")
    assert np.all(steps == 30)
    assert str(ds["time"].values[0])[:10] == "2018-08-16"  # centre of the first 30 days
    assert ds.attrs["period_days"] == 30


@pytest.mark.realdata
def test_correlation_summary_is_a_median_of_pixel_correlations(cubes):
    summary = correlation_summary(cubes["worldcereal_31UDS"])
    assert summary["shape"][1:] == (32, 32)
    for key in ("r_all", "r_maize", "r_grassland"):
        assert -1 <= summary[key] <= 1
    assert summary["n_maize"] > 0 and summary["n_winter_wheat"] == 0
    assert np.isnan(summary["r_winter_wheat"])
