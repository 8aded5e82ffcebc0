import numpy as np
import pandas as pd
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox

from fusecube.cube import DIMS, NDVI, VH, VV, read_cube, validate_cube, with_geobox, write_cube
from fusecube.errors import CubeSchemaError, InputFileError


def make_cube(t=5, ny=6, nx=7) -> xr.Dataset:
    gbox = GeoBox.from_bbox((450000, 9220000, 450000 + 50 * nx, 9220000 + 50 * ny), crs="EPSG:32749",
                            resolution=50)
    rng = np.random.default_rng(0)
    data = {v: (DIMS, rng.uniform(0.01, 0.5, (t, ny, nx)).astype("float32")) for v in (VV, VH, NDVI)}
    ds = xr.Dataset(data, coords={"time": pd.date_range("2023-11-07", periods=t, freq="12D")})
    return with_geobox(ds, gbox)


def test_valid_cube_passes_and_roundtrips(tmp_path):
    cube = make_cube()
    cube[NDVI][0, 0, 0] = np.nan
    validate_cube(cube)
    path = write_cube(cube, tmp_path / "c.zarr")
    back = read_cube(path)
    validate_cube(back)
    assert back.odc.geobox == cube.odc.geobox
    np.testing.assert_array_equal(back[NDVI].values, cube[NDVI].values)
    assert not list(tmp_path.glob(".c.*")), "temporary store left behind"


def test_write_replaces_existing_store_atomically(tmp_path):
    cube = make_cube()
    write_cube(cube, tmp_path / "c.zarr")
    write_cube(cube.isel(time=slice(0, 3)), tmp_path / "c.zarr")
    assert read_cube(tmp_path / "c.zarr").sizes["time"] == 3


@pytest.mark.parametrize(
    ("breaker", "match"),
    [
        (lambda c: c.drop_vars(VH), "missing variable"),
        (lambda c: c.assign({VV: c[VV].transpose("y", "x", "time")}), "dims"),
        (lambda c: c.assign({NDVI: c[NDVI].astype("float64")}), "float32"),
        (lambda c: c.isel(time=[0, 2, 1, 3, 4]), "not strictly increasing"),
        (lambda c: c.assign({NDVI: c[NDVI].where(c[NDVI] > 0.2, -np.inf)}), "inf"),
        (lambda c: c.assign({VV: c[VV].where(c[VV] > 0.2, -9999.0)}), "sentinel"),
        (lambda c: xr.Dataset({k: (DIMS, c[k].values) for k in (VV, VH, NDVI)},
                              coords={"time": c.time.values, "y": c.y.values, "x": c.x.values}), "no CRS"),
    ],
    ids=["missing-var", "wrong-dims", "float64", "time-order", "-inf", "sentinel", "no-crs"],
)
def test_bad_cubes_raise_specific_errors(breaker, match):
    with pytest.raises(CubeSchemaError, match=match):
        validate_cube(breaker(make_cube()))


def test_validate_is_lazy_safe(tmp_path):
    cube = make_cube()
    cube[VV][1, 2, 3] = np.inf
    write_cube(cube, tmp_path / "bad.zarr")
    with pytest.raises(CubeSchemaError, match="inf"):
        validate_cube(read_cube(tmp_path / "bad.zarr", chunks={}))


def test_read_missing_cube_names_the_path(tmp_path):
    with pytest.raises(InputFileError, match="nope.zarr"):
        read_cube(tmp_path / "nope.zarr")


def test_misaligned_dask_chunks_are_written_and_read_back_equal(tmp_path):
    """Dask chunks that straddle zarr chunks (xarray refuses them) are rechunked before writing."""
    import dask.array as da

    cube = make_cube(t=4, ny=300, nx=260)
    cube = cube.chunk({"time": 1, "y": 100, "x": 100})
    mask = (np.arange(300 * 260).reshape(300, 260) % 7 == 0).astype("uint8")
    cube["paddy_mask"] = (("y", "x"), da.from_array(mask, chunks=(100, 100)))
    path = write_cube(cube, tmp_path / "c.zarr", chunks={"time": -1, "y": 256, "x": 256})
    back = read_cube(path, chunks={})
    assert back["paddy_mask"].encoding["chunks"] == (256, 256)
    assert back[NDVI].encoding["chunks"] == (4, 256, 256)
    xr.testing.assert_equal(back.load(), cube.load())


def test_zarr_layout_keeps_dask_chunks_and_regularises_uneven_ones():
    from fusecube.cube import zarr_layout

    cube = make_cube(t=3, ny=50, nx=40).chunk({"time": -1, "y": (20, 10, 20), "x": 20})
    aligned, encoding = zarr_layout(cube)
    assert encoding[NDVI] == {"chunks": (3, 20, 20)}
    assert aligned[NDVI].chunks == ((3,), (20, 20, 10), (20, 20))
    in_memory, encoding = zarr_layout(make_cube())
    assert encoding == {} and in_memory[NDVI].chunks is None


def test_time_zone_aware_time_is_refused_with_the_fix(tmp_path):
    cube = make_cube()
    cube = cube.assign_coords(time=cube.indexes["time"].tz_localize("Asia/Jakarta"))
    with pytest.raises(CubeSchemaError, match=r"'time' is time-zone aware \(Asia/Jakarta\).*tz_convert\(None\)"):
        write_cube(cube, tmp_path / "c.zarr")
    assert not (tmp_path / "c.zarr").exists()
