"""Every product of a small run opens georeferenced in GDAL (through rasterio) and xarray.

GDAL's netCDF driver (``NETCDF:file:var``), xarray + odc-geo for ``result.zarr`` and the GTiff
driver for the COGs must all give the run's CRS, transform and nodata; CF attributes, season
names, dates a GIS can average and ``fusecube inspect`` on stores are checked too.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
import xarray as xr
from typer.testing import CliRunner

from fusecube.config import CubeSource, RunConfig
from fusecube.cube import read_cube
from fusecube.grid.periods import season_label, season_name
from fusecube.products.cf import COUNT_NODATA, GRID_MAPPING
from fusecube.products.season_days import with_season_days
from fusecube.runner import run


@pytest.fixture(scope="module")
def finished(small_scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("gis")
    result = run(RunConfig(source=CubeSource(path=small_scene["cube"]), out=out, block_size=48,
                           gapfill="linear"))
    return result, read_cube(small_scene["cube"]).odc.geobox


def _strict_json(text: str):
    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def _same_grid(src, geobox) -> None:
    assert src.crs is not None and src.crs.to_epsg() == geobox.crs.epsg
    assert src.transform.almost_equals(geobox.affine)
    assert (src.height, src.width) == geobox.shape


def _spatial(ds: xr.Dataset) -> list[str]:
    return [str(n) for n, v in ds.data_vars.items() if {"y", "x"} <= set(v.dims)]


def test_season_slots_are_never_named_like_satellites():
    assert season_name(2) == "season2"
    assert season_label(2023, 1, 11) == "2023/24 season1"
    assert season_label(2023, 3, 11, for_file=True) == "2023-24_season3"
    assert season_label(2024, 1, 1) == "2024 season1"


def test_every_netcdf_layer_opens_in_gdal_on_the_run_grid(finished):
    result, geobox = finished
    path = result.out / "phenology.nc"
    with xr.open_dataset(path, mask_and_scale=False, decode_times=False) as raw:
        names = _spatial(raw)
        dtypes = {n: raw[n].dtype for n in names}
    assert {"sos_doy", "sos_days", "season_count", "paddy_mask"} <= set(names)
    with warnings.catch_warnings():
        warnings.simplefilter("error", rasterio.errors.NotGeoreferencedWarning)
        for name in names:
            with rasterio.open(f"NETCDF:{path}:{name}") as src:
                _same_grid(src, geobox)
                if name == "season_count":
                    assert src.dtypes[0] == "uint8" and src.nodata == COUNT_NODATA
                elif np.issubdtype(dtypes[name], np.floating):
                    assert src.nodata is not None and np.isnan(src.nodata), name
    import rioxarray

    sos = rioxarray.open_rasterio(f"NETCDF:{path}:sos_days", masked=True)  # as docs/open-results.md
    assert sos.rio.crs.to_epsg() == geobox.crs.epsg and sos.rio.transform().almost_equals(geobox.affine)
    assert sos.sizes["season"] == 6


def test_netcdf_follows_cf(finished):
    result, _ = finished
    with xr.open_dataset(result.out / "phenology.nc", decode_times=False) as ds:
        assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["fusecube_version"]
        assert ds.attrs["title"] and ds.attrs["history"] and ds.attrs["source"]
        for dim, std in (("x", "projection_x_coordinate"), ("y", "projection_y_coordinate")):
            assert ds[dim].attrs["standard_name"] == std
            assert ds[dim].attrs["axis"] == dim.upper() and ds[dim].attrs["units"] == "m"
        ref = ds[GRID_MAPPING].attrs
        assert "crs_wkt" in ref and "spatial_ref" in ref and len(ref["GeoTransform"].split()) == 6
        for name in ds.data_vars:
            attrs = ds[name].attrs
            assert attrs.get("units") and attrs.get("long_name"), name
            if {"y", "x"} <= set(ds[name].dims):
                assert attrs["grid_mapping"] == GRID_MAPPING, name
        count = ds["season_count"]
        assert list(count.attrs["flag_values"]) == [0, 1, 2, 3]
        assert count.attrs["flag_meanings"].split()[0] == "no_season"
        assert list(ds["paddy_mask"].attrs["flag_values"]) == [0, 1]
        assert ds["season_label"].values[0] == "2023/24 season1"
        assert ds["sos_days"].attrs["reference_date"] == "season_start"


def test_result_zarr_is_consolidated_georeferenced_and_described(finished):
    result, geobox = finished
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "consolidated metadata" RuntimeWarning
        ds = xr.open_zarr(result.out / "result.zarr")
    assert ds.odc.geobox == geobox
    assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["fusecube_version"]
    assert ds.attrs["season_labels"][0] == "2023/24 season1"
    assert ds["season"].attrs["labels"] == ds.attrs["season_labels"]
    for name in _spatial(ds):
        assert ds[name].attrs["grid_mapping"] == GRID_MAPPING, name
        assert ds[name].attrs.get("long_name"), name
    assert ds["x"].attrs["standard_name"] == "projection_x_coordinate"
    meta = json.loads((result.out / "result.zarr" / "season_count" / "zarr.json").read_text())
    assert meta["data_type"] == "uint8" and meta["fill_value"] == COUNT_NODATA
    count = ds["season_count"].values  # decoded: NaN outside paddy, as before
    assert np.isnan(count).any() and np.nanmax(count) <= 3


def test_every_cog_has_grid_nodata_units_and_description(finished):
    result, geobox = finished
    cogs = sorted((result.out / "cogs").glob("*.tif"))
    assert cogs and not [p.name for p in cogs if "_S1" in p.name or "_S2" in p.name]
    for path in cogs:
        with rasterio.open(path) as src:
            _same_grid(src, geobox)
            assert src.descriptions[0] and src.units[0], path.name
            tags = src.tags()
            if path.name.startswith("season_count"):
                assert src.dtypes[0] == "uint8" and src.nodata == COUNT_NODATA
                colours = src.colormap(1)
                assert colours[3] != colours[0] and colours[COUNT_NODATA][3] == 0
                assert tags["flag_meanings"].startswith("no_season")
            else:
                assert src.dtypes[0] == "float32" and np.isnan(src.nodata)
                assert tags["season"].split()[1].startswith("season")
            if "_days_" in path.name:
                year = int(path.name.split("_")[2][:4])
                assert tags["reference_date"] == f"{year}-11-01", path.name
            if "_doy_" in path.name:
                assert "1 January" in tags["day_of_year_reference"]


def test_season_days_average_across_new_year():
    # two plantings either side of 1 January: day of year 364 and 3, days since 1 Nov 59 and 63
    dates = np.array(["2023-12-30", "2024-01-03"], dtype="datetime64[ns]").reshape(1, 1, 2)
    ds = xr.Dataset({"planting": (("season", "y", "x"), dates)},
                    coords={"season": [0], "season_year": ("season", [2023])})
    days = with_season_days(ds, 11)["planting_days"].values.ravel()
    np.testing.assert_array_equal(days, [59.0, 63.0])
    mean = np.datetime64("2023-11-01") + np.timedelta64(int(days.mean()), "D")
    assert mean == np.datetime64("2024-01-01")  # the true middle; day of year would say 183


def test_inspect_lists_the_layers_of_netcdf_and_zarr(finished):
    from fusecube.cli.app import app

    result, _ = finished
    runner = CliRunner()
    for name in ("phenology.nc", "result.zarr"):
        answer = runner.invoke(app, ["inspect", str(result.out / name), "--json"])
        assert answer.exit_code == 0, answer.output
        info = _strict_json(answer.stdout)
        layers = {layer["name"]: layer for layer in info["layers"]}
        assert layers["sos_doy"]["crs"] == "EPSG:32749" and layers["sos_doy"]["units"] == "day"
        assert layers["season_count"]["dtype"] == "uint8"
        assert layers["season_count"]["dims"] == ["year", "y", "x"]
        text = runner.invoke(app, ["inspect", str(result.out / name)])
        assert text.exit_code == 0 and "sos_doy" in text.stdout and "EPSG:32749" in text.stdout
        assert "512" not in text.stdout


def test_geographic_grid_is_georeferenced_too(tmp_path):
    from odc.geo.geobox import GeoBox

    from fusecube.products.cf import cf_dataset

    geobox = GeoBox.from_bbox((110.0, -7.0, 110.4, -6.6), "EPSG:4326", resolution=0.1)
    count = np.full((1, *geobox.shape), np.nan, dtype=np.float32)
    count[0, 0, :2] = [1, 2]
    ds = xr.Dataset({"season_count": (("year", "y", "x"), count)},
                    coords={"year": [2023], "season_number": ("season", [1, 2])})
    cf_dataset(ds, geobox, title="test").to_netcdf(
        tmp_path / "geo.nc", engine="h5netcdf", encoding={"season_count": {"dtype": "uint8",
                                                                           "_FillValue": 255}})
    with xr.open_dataset(tmp_path / "geo.nc") as back:
        assert back["x"].attrs["standard_name"] == "longitude"
        assert back["y"].attrs["units"] == "degrees_north"
        assert list(back["season_count"].attrs["flag_values"]) == [0, 1, 2]
    with rasterio.open(f"NETCDF:{tmp_path / 'geo.nc'}:season_count") as src:
        _same_grid(src, geobox)
        assert src.nodata == COUNT_NODATA and src.read(1)[0, :3].tolist() == [1, 2, COUNT_NODATA]
