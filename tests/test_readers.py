"""fusecube.load and the reader protocol: every kind of source gives the same cube, on one grid."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox

import fusecube
from fusecube.config import CubeSource, GeoTiffSource, RunConfig, SyntheticSource
from fusecube.cube import NDVI, VH, VV, read_cube, validate_cube
from fusecube.errors import ConfigError, InputFileError
from fusecube.sources.readers import (
    GeoTiffReader,
    Reader,
    StoreReader,
    SyntheticReader,
    reader_for,
)
from fusecube.testing.readers import FakeReader

GRID = GeoBox.from_bbox((110.60, -6.95, 110.62, -6.93), "EPSG:4326", resolution=0.0005)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Four per-period GeoTIFFs (VV dB, VH dB, NDVI) on a GEE-like lon/lat grid."""
    folder = tmp_path_factory.mktemp("stack")
    yy, xx = np.mgrid[0:GRID.shape.y, 0:GRID.shape.x].astype(np.float32)
    for period in range(1, 5):
        data = np.stack([-12 + 0.01 * xx + 0.2 * period, -19 + 0.01 * yy + 0.1 * period,
                         0.2 + 0.01 * xx + 0.05 * period]).astype(np.float32)
        with rasterio.open(folder / f"period_{period:02d}.tif", "w", driver="GTiff",
                           width=GRID.shape.x, height=GRID.shape.y, count=3, dtype="float32",
                           crs="EPSG:4326", transform=GRID.affine) as dst:
            dst.write(data)
            dst.descriptions = ("VV", "VH", "NDVI")
    return folder


def test_load_a_store_lazily_and_a_window_without_changing_values(small_scene):
    full = fusecube.load(small_scene["cube"], chunks={})
    assert isinstance(full[NDVI].data, da.Array)
    window = full.odc.geobox[8:20, 4:30]
    part = fusecube.load(small_scene["cube"], geobox=window)
    assert part.odc.geobox == window
    np.testing.assert_array_equal(part[VH].values, full[VH].isel(y=slice(8, 20),
                                                               x=slice(4, 30)).values)
    like = fusecube.load(small_scene["cube"], like=part)
    np.testing.assert_array_equal(like[NDVI].values, part[NDVI].values)


def test_load_netcdf_and_a_dataset(small_scene, tmp_path):
    cube = read_cube(small_scene["cube"]).load()
    path = tmp_path / "cube.nc"
    cube.drop_encoding().to_netcdf(path, engine="h5netcdf")
    again = fusecube.load(path)
    np.testing.assert_array_equal(again[VV].values, cube[VV].values)
    assert again.odc.geobox == cube.odc.geobox
    assert fusecube.load(cube) is cube  # a dataset on its own grid comes back as it is


def test_a_geotiff_folder_loads_like_its_import(stack, tmp_path):
    assert isinstance(reader_for(stack), GeoTiffReader)
    plan = reader_for(GeoTiffSource(folder=stack, start="2024-01-01")).plan()
    assert len(plan.times) == 4 and plan.geobox.crs.epsg != 4326  # a UTM grid by default
    cube = fusecube.load(GeoTiffSource(folder=stack, start="2024-01-01"))
    validate_cube(cube)
    imported = read_cube(GeoTiffReader(GeoTiffSource(folder=stack, start="2024-01-01"))
                         .write(tmp_path / "cube.zarr"))
    np.testing.assert_array_equal(imported[NDVI].values, cube[NDVI].values)
    assert cube.odc.geobox == plan.geobox


def test_plan_reads_no_pixels_and_readers_are_one_protocol(small_scene):
    cube = read_cube(small_scene["cube"]).load()
    fake = FakeReader(cube)
    plan = fake.plan()
    assert fake.reads == 0 and plan.geobox == cube.odc.geobox and len(plan.times) == cube.sizes["time"]
    out = fusecube.load(fake, geobox=plan.geobox[:10, :10])
    assert fake.reads == 1 and out.sizes["y"] == 10
    for reader in (fake, StoreReader(small_scene["cube"]), SyntheticReader(SyntheticSource()),
                   GeoTiffReader(GeoTiffSource(folder=small_scene["cube"]))):
        assert isinstance(reader, Reader)
    assert isinstance(reader_for(CubeSource(path=small_scene["cube"])), StoreReader)


def test_synthetic_plan_matches_what_it_writes(tmp_path):
    source = SyntheticSource(width=24, height=16, n_periods=8, seed=5)
    reader = SyntheticReader(source, tmp_path)
    plan = reader.plan()
    cube = reader.read()
    assert cube.odc.geobox == plan.geobox
    np.testing.assert_array_equal(cube["time"].values, plan.times)


def test_load_errors_name_the_input_and_the_fix(tmp_path):
    with pytest.raises(InputFileError, match="nowhere.zarr does not exist"):
        fusecube.load(tmp_path / "nowhere.zarr")
    with pytest.raises(ConfigError, match="geobox= or like="):
        fusecube.load(tmp_path, geobox=GRID, like=object())
    with pytest.raises(ConfigError, match="Cannot read 'int'"):
        fusecube.load(3)


def test_a_run_reads_a_geotiff_stack_source(stack, tmp_path):
    from fusecube.runner import run

    config = RunConfig(source=GeoTiffSource(folder=stack, start="2024-01-01", resolution=100),
                       out=tmp_path / "out", ledger=str(tmp_path / "l.sqlite"), mask="none",
                       report=False, block_size=16,
                       result_gates=False)  # 3 periods: no season can exist, not the point here
    result = run(config)
    assert result.cube == tmp_path / "out" / "input" / "cube.zarr"
    out, cube = read_cube(result.result), read_cube(result.cube)
    seen = np.isfinite(cube[NDVI].values).any(axis=0)  # the UTM grid's corners lie off the stack
    assert seen.mean() > 0.8
    assert np.isfinite(out["ndvi_smooth"].values[:, seen]).all()
    assert not np.isfinite(out["ndvi_smooth"].values[:, ~seen]).any()  # nothing made up
