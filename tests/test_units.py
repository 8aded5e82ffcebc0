"""units: one dB conversion pair with one floor policy."""

from __future__ import annotations

import numpy as np
import xarray as xr

from fusecube.units import DB_FLOOR, from_db, to_db


def test_to_db_floor_policy():
    lin = np.array([1.0, 0.1, 0.01, 1e-7, 0.0, -1.0, np.nan, np.inf, -np.inf], np.float32)
    db = to_db(lin)
    assert db.dtype == np.float32
    expected = 10.0 * np.log10(np.maximum(lin[:4], np.float32(DB_FLOOR)))
    np.testing.assert_array_equal(db[:4], expected)  # bit for bit the float32 expression
    assert db[3] == to_db(np.float32(DB_FLOOR)) and -50.001 < db[3] < -49.999
    assert np.isnan(db[4:]).all()  # no backscatter: 0, negative, NaN, +-inf


def test_to_db_in_place_and_dtypes():
    rng = np.random.default_rng(3)
    grid = rng.gamma(2.0, 0.02, (3, 5, 7)).astype(np.float32)
    grid[0, 0, :3] = [0.0, np.nan, 2e-6]
    expected = to_db(grid)
    same = to_db(grid, out=grid)
    assert same is grid
    np.testing.assert_array_equal(grid, expected)
    assert to_db(np.array([1, 10, 0])).dtype == np.float32
    assert to_db(np.array([0.1])).dtype == np.float64


def test_from_db_inverts_and_keeps_kind():
    db = np.array([0.0, -10.0, -20.0, np.nan], np.float32)
    lin = from_db(db)
    assert lin.dtype == np.float32
    np.testing.assert_array_equal(lin[:3], np.array([1.0, 0.1, 0.01], np.float32))
    assert np.isnan(lin[3])
    assert from_db(-21.0) == 10 ** (-21.0 / 10) and isinstance(from_db(-21.0), float)
    assert from_db(np.array([-10, 0])).dtype == np.float32
    da = xr.DataArray(db, dims="time").chunk()
    out = from_db(da)
    assert isinstance(out, xr.DataArray) and out.chunks is not None
    np.testing.assert_array_equal(out.values, lin)
    np.testing.assert_allclose(to_db(from_db(db[:3])), db[:3], atol=1e-5)
