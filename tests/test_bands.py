"""Band names, scalings and units of openEO / Planetary Computer / Earth Search data → the cube's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from fusecube.cube import NDVI, VH, VV
from fusecube.errors import ConfigError, CubeSchemaError
from fusecube.sources.bands import (
    GFMAP_DB_OFFSET,
    NIR,
    RED,
    SCL,
    backscatter_units,
    band_role,
    decode_backscatter,
    is_cube_model,
    mask_ndvi_with_scl,
    rename_dims,
    standardise_bands,
)
from fusecube.sources.common_periods import common_starts, composite_onto_periods, needs_compositing
from fusecube.sources.stac.catalogues import DEFAULT_VALID_SCL
from fusecube.units import from_db

SHAPE = (6, 5, 4)


def _dataset(variables: dict, *, time_dim: str = "t", start: str = "2024-01-01", step: str = "5D") -> xr.Dataset:
    n_t, n_y, n_x = SHAPE
    coords = {time_dim: pd.date_range(start, periods=n_t, freq=step),
              "y": 9_000_000.0 - 10 * np.arange(n_y), "x": 500_000.0 + 10 * np.arange(n_x)}
    return xr.Dataset({name: ((time_dim, "y", "x"), values, attrs) for name, (values, attrs) in variables.items()},
                      coords=coords)


def _db(rng, low=-22.0, high=-6.0) -> np.ndarray:
    return rng.uniform(low, high, SHAPE).astype(np.float32)


@pytest.mark.parametrize(("names", "role"), [
    (("S1-SIGMA0-VV", "VV", "vv", "sigma0_vv"), VV),
    (("S1-SIGMA0-VH", "VH", "vh", "sigma0_vh"), VH),
    (("S2-L2A-B04", "B04", "B4", "red"), RED),
    (("S2-L2A-B08", "B08", "B8", "nir"), NIR),
    (("ndvi", "NDVI", "S2-L2A-NDVI"), NDVI),
    (("SCL", "scl", "S2-L2A-SCL"), SCL),
])
def test_alias_table(names, role):
    assert [band_role(n) for n in names] == [role] * len(names)


def test_unknown_bands_have_no_role_and_dims_are_renamed():
    assert band_role("B8A") is None and band_role("nir08") is None and band_role("CLM") is None
    for time_dim in ("t", "time", "date", "timestamp"):
        ds = _dataset({"VV": (np.ones(SHAPE, np.float32), {})}, time_dim=time_dim)
        assert set(rename_dims(ds, source="x").dims) == {"time", "y", "x"}
    geographic = _dataset({"VV": (np.ones(SHAPE, np.float32), {})}).rename({"y": "lat", "x": "lon"})
    assert set(rename_dims(geographic, source="x").dims) == {"time", "y", "x"}
    with pytest.raises(CubeSchemaError, match="needs"):
        rename_dims(_dataset({"VV": (np.ones(SHAPE, np.float32), {})}).rename({"x": "col"}), source="x")
    assert not is_cube_model(_dataset({"VV": (np.ones(SHAPE, np.float32), {})}))
    assert is_cube_model(rename_dims(_dataset({"vv": (np.ones(SHAPE, np.float32), {})}), source="x"))


def test_ndvi_from_red_and_nir_with_cf_and_plain_scale_offset():
    rng = np.random.default_rng(0)
    red = rng.integers(1200, 2500, SHAPE).astype(np.uint16)  # baseline 04.00: DN = 10000 x refl + 1000
    nir = rng.integers(2500, 6000, SHAPE).astype(np.uint16)
    red[0, 0, 0] = 0  # L2A nodata
    cf = {"scale_factor": 1e-4, "add_offset": -0.1, "_FillValue": 0}
    plain = {"scale": 1e-4, "offset": -0.1, "nodata": 0}
    red_refl, nir_refl = red * 1e-4 - 0.1, nir * 1e-4 - 0.1
    expected = (nir_refl - red_refl) / (nir_refl + red_refl)
    for red_attrs, nir_attrs in ((cf, cf), (plain, plain)):
        out = standardise_bands(_dataset({"S2-L2A-B04": (red, red_attrs), "S2-L2A-B08": (nir, nir_attrs)}))
        assert set(out.data_vars) == {NDVI}  # red and nir are consumed
        assert np.isnan(out[NDVI].values[0, 0, 0])
        np.testing.assert_allclose(out[NDVI].values[1:], expected[1:], rtol=1e-5, atol=1e-6)
    # no attributes: digital numbers are recognised from the values, the offset cannot be
    out = standardise_bands(_dataset({"B04": (red, {}), "B08": (nir, {})}))
    np.testing.assert_allclose(out[NDVI].values[1:], ((nir - red) / (nir + red.astype(float)))[1:], rtol=1e-5)
    assert np.isnan(out[NDVI].values[0, 0, 0])  # DN 0 is nodata


def test_reflectance_already_in_zero_one_is_not_rescaled():
    rng = np.random.default_rng(1)
    red, nir = rng.uniform(0.02, 0.15, SHAPE), rng.uniform(0.2, 0.5, SHAPE)
    out = standardise_bands(_dataset({"red": (red.astype(np.float32), {}), "nir": (nir.astype(np.float32), {})}))
    np.testing.assert_allclose(out[NDVI].values, (nir - red) / (nir + red), rtol=1e-5)


def test_scl_masks_non_clear_classes_of_computed_and_given_ndvi():
    rng = np.random.default_rng(2)
    scl = rng.choice([0, 3, 4, 5, 6, 8, 9, 10, 11], SHAPE).astype(np.uint8)
    red, nir = rng.uniform(0.02, 0.1, SHAPE), rng.uniform(0.3, 0.5, SHAPE)
    clear = np.isin(scl, DEFAULT_VALID_SCL)
    assert 0 < clear.sum() < clear.size
    out = standardise_bands(_dataset({"B04": (red, {}), "B08": (nir, {}), "SCL": (scl, {"_FillValue": 0})}))
    assert set(out.data_vars) == {NDVI}
    np.testing.assert_array_equal(np.isfinite(out[NDVI].values), clear)
    given = standardise_bands(_dataset({"NDVI": ((nir - red) / (nir + red), {}), "scl": (scl, {})}))
    np.testing.assert_array_equal(np.isfinite(given[NDVI].values), clear)
    # SCL in a second input (the 20 m file) masks the NDVI of the first
    alone = standardise_bands(_dataset({"SCL": (scl, {})}))
    assert SCL in alone.data_vars
    ndvi = standardise_bands(_dataset({"NDVI": ((nir - red) / (nir + red), {})}))
    masked, rest = mask_ndvi_with_scl([ndvi, alone])
    np.testing.assert_array_equal(np.isfinite(masked[NDVI].values), clear)
    assert SCL not in rest.data_vars


def test_scaled_ndvi_is_rescaled_or_refused():
    ndvi = np.linspace(-0.2, 0.9, np.prod(SHAPE)).reshape(SHAPE)
    out = standardise_bands(_dataset({"NDVI": ((ndvi * 10000).round().astype(np.int16), {})}))
    np.testing.assert_allclose(out[NDVI].values, ndvi, atol=1e-4)
    with pytest.raises(CubeSchemaError, match="NDVI lies"):
        standardise_bands(_dataset({"NDVI": ((ndvi * 200 + 50).astype(np.uint8), {})}))


def test_units_decided_from_values_both_ways():
    rng = np.random.default_rng(3)
    db = _db(rng)
    linear = from_db(db).astype(np.float32)
    for values in (db, linear):
        for attrs in ({}, {"units": "dB"} if values is db else {"units": "1"}):
            out = standardise_bands(_dataset({"S1-SIGMA0-VV": (values, attrs)}))
            np.testing.assert_allclose(out[VV].values, linear, rtol=1e-5)
    assert backscatter_units(xr.DataArray(db), name="VV", source="s") == "db"
    assert backscatter_units(xr.DataArray(linear), name="VV", source="s") == "linear"


def test_a_label_that_contradicts_the_values_is_an_error():
    rng = np.random.default_rng(4)
    db = _db(rng)
    with pytest.raises(CubeSchemaError, match=r"'VH'.*labelled units='1'.*dB"):
        standardise_bands(_dataset({"VH": (db, {"units": "1"})}))
    with pytest.raises(CubeSchemaError, match=r"'VV'.*labelled units='dB'.*linear"):
        standardise_bands(_dataset({"VV": (from_db(db).astype(np.float32), {"units": "dB"})}))
    with pytest.raises(CubeSchemaError, match="neither dB"):  # linear x 10000 in floats
        standardise_bands(_dataset({"VV": (from_db(db).astype(np.float32) * 10000, {})}))


def test_integer_s1_refused_without_convention_decoded_with_one():
    rng = np.random.default_rng(5)
    db = _db(rng)
    with pytest.raises(CubeSchemaError, match=r"'VV'.*integers.*--s1-encoding gfmap"):
        standardise_bands(_dataset({"VV": ((db * 100).round().astype(np.int16), {})}))
    # scale_factor attributes (WorldCereal: int32 dB x 1e-4)
    scaled = (db * 10000).round().astype(np.int32)
    out = standardise_bands(_dataset({"VV": (scaled, {"scale_factor": 1e-4, "_FillValue": 0})}))
    np.testing.assert_allclose(out[VV].values, from_db(scaled * 1e-4), rtol=1e-5)
    # openEO GFMap compress_backscatter_uint16: DN = 10 ** ((dB + 83) / 20)
    dn = np.clip(np.round(10 ** ((db + GFMAP_DB_OFFSET) / 20)), 1, 65534).astype(np.uint16)
    dn[0, 0, 0] = 0  # nodata
    out = standardise_bands(_dataset({"VV": (dn, {})}), s1_encoding="gfmap")
    expected = from_db(20 * np.log10(np.where(dn > 0, dn, np.nan)) - GFMAP_DB_OFFSET)
    assert np.isnan(out[VV].values[0, 0, 0])
    np.testing.assert_allclose(out[VV].values.ravel()[1:], expected.ravel()[1:], rtol=1e-4)
    np.testing.assert_allclose(out[VV].values.ravel()[1:], from_db(db).ravel()[1:], rtol=2e-3)  # DN rounding
    with pytest.raises(ConfigError, match="uint16"):
        decode_backscatter(xr.DataArray(db), name="VV", source="s", s1_encoding="gfmap")
    with pytest.raises(ConfigError, match="Unknown S1 encoding"):
        decode_backscatter(xr.DataArray(dn), name="VV", source="s", s1_encoding="db100")  # type: ignore[arg-type]


def test_two_bands_with_one_role_are_refused():
    with pytest.raises(CubeSchemaError, match="both mean 'vv'"):
        standardise_bands(_dataset({"VV": (np.ones(SHAPE, np.float32) * 0.1, {}),
                                    "S1-SIGMA0-VV": (np.ones(SHAPE, np.float32) * 0.1, {})}))


def test_s1_and_s2_on_their_own_dates_are_composited_with_the_median():
    rng = np.random.default_rng(6)
    times = pd.to_datetime(["2024-01-01", "2024-01-03", "2024-01-05", "2024-01-08",
                            "2024-01-13", "2024-01-14"])
    s1_dates, s2_dates = np.array([1, 0, 1, 0, 1, 0], bool), np.array([0, 1, 0, 1, 0, 1], bool)
    vv = np.where(s1_dates[:, None, None], rng.uniform(0.01, 0.3, SHAPE), np.nan).astype(np.float32)
    ndvi = np.where(s2_dates[:, None, None], rng.uniform(0.1, 0.9, SHAPE), np.nan).astype(np.float32)
    ds = xr.Dataset({VV: (("time", "y", "x"), vv), NDVI: (("time", "y", "x"), ndvi)},
                    coords={"time": times, "y": np.arange(5.0), "x": np.arange(4.0)})
    assert needs_compositing(ds)
    subset = ds.assign({NDVI: ds[NDVI].where(ds[VV].notnull())})  # cloudy S2 on S1's dates
    assert not needs_compositing(subset)
    starts = common_starts([ds["time"].values], period_days=10)
    assert [str(s)[:10] for s in starts] == ["2024-01-01", "2024-01-11"]
    out = composite_onto_periods(ds.chunk({"time": 1}), starts, 10).compute()
    np.testing.assert_allclose(out[VV].values[0], np.nanmedian(vv[:4], axis=0))
    np.testing.assert_allclose(out[NDVI].values[0], np.nanmedian(ndvi[:4], axis=0))
    np.testing.assert_allclose(out[VV].values[1], vv[4])
    np.testing.assert_allclose(out[NDVI].values[1], ndvi[5])
    assert out["n_s1_dates"].values.tolist() == [2, 1] and out["n_s2_dates"].values.tolist() == [2, 1]
    assert str(out["time"].values[0])[:13] == "2024-01-06T00"  # period centres
