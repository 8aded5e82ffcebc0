"""Bad-input catalogue, input defences: units, scales, dates, resolutions and AOI geometry.

Each case is an input whose label (a band role, a ``units`` attribute, ``--s1-units``) or
number (a date, a resolution, a polygon) says one thing while the data or geography says
another; fusecube must decide from the data and refuse with the fix instead of converting
twice, masking a whole band, or gridding in the wrong UTM zone. Ordinary tests below cover
what is not one CLI command (the UTM zone recorded from the AOI's centre, the decision rules).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from catalogue import Case, Env, check, run_case

from fusecube.cube import NDVI, VH, VV
from fusecube.errors import ConfigError, CubeSchemaError, GateFailed, GridError, InputFileError
from fusecube.testing import LoopbackServer
from fusecube.testing.scenes import make_scene
from fusecube.units import to_db

#: What the fetch cases need: the loopback server and its scene (set by the ``stac`` fixture).
STAC: dict = {}
SCENE_AOI = "400200,9219000,400800,9219600"  # EPSG:32749, inside the 1.28 km fake scene
ORIGIN = Affine(10, 0, 456000, 0, -10, 9240000)  # a 16 x 16 px UTM 49S grid near Demak
BOWTIE = [[110.60, -6.90], [110.70, -6.80], [110.70, -6.90], [110.60, -6.80], [110.60, -6.90]]


# ----------------------------------------------------------------------------- builders
def _tif(path: Path, bands: list[np.ndarray], dtype: str = "float32", nodata=-9999.0) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=len(bands),
                       dtype=dtype, crs="EPSG:32749", transform=ORIGIN, nodata=nodata) as dst:
        for index, band in enumerate(bands, start=1):
            dst.write(band.astype(dtype), index)


def _fields(period: int) -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[0:16, 0:16].astype(np.float32) / 16
    return {"vv": 0.06 + 0.02 * xx + 0.004 * period, "vh": 0.012 + 0.004 * yy,
            "ndvi": np.clip(0.3 + 0.4 * xx * yy + 0.02 * period, -1, 1)}


def _stack(env: Env, *, units: str = "linear", n: int = 3) -> Path:
    """Per-period files ``period_01.tif`` …: vv, vh (linear or dB) and float NDVI."""
    folder = env.tmp / "stack"
    folder.mkdir(exist_ok=True)
    for period in range(1, n + 1):
        f = _fields(period)
        s1 = [f["vv"], f["vh"]] if units == "linear" else [to_db(f["vv"]), to_db(f["vh"])]
        _tif(folder / f"period_{period:02d}.tif", [*s1, f["ndvi"]])
    return folder


def _import(env: Env, folder: Path, *extra: str) -> list[str]:
    return ["import-geotiff", str(folder), "--out", str(env.tmp / "cube.zarr"), *extra]


def _linear_as_db(env: Env) -> list[str]:  # default --bands vv_db,vh_db,ndvi
    return _import(env, _stack(env), "--start", "2022-01-01")


def _db_as_linear(env: Env) -> list[str]:
    return _import(env, _stack(env, units="db"), "--start", "2022-01-01", "--bands", "vv,vh,ndvi")


def _byte_ndvi(env: Env) -> list[str]:
    folder = env.tmp / "ndvi"
    folder.mkdir()
    for day in ("20220105", "20220117"):
        _tif(folder / f"S2_{day}_NDVI.tif", [(_fields(1)["ndvi"] + 1) * 127.5], "uint8", 255)
    return _import(env, folder, "--bands", "ndvi")


def _dates_file(env: Env, first: str) -> list[str]:
    dates = env.tmp / "dates.csv"
    dates.write_text("period,start\n" + "".join(
        f"{i},{d}\n" for i, d in enumerate([first, "2022-01-13", "2022-01-25"], start=1)))
    return _import(env, _stack(env, units="db"), "--dates", str(dates))


def _dated_files(env: Env) -> list[str]:
    folder = env.tmp / "dated"
    folder.mkdir()
    for day in ("20120105", "20220117"):  # a 2012 name: before Sentinel-1
        _tif(folder / f"S2_{day}_NDVI.tif", [_fields(1)["ndvi"]])
    return _import(env, folder, "--bands", "ndvi")


def _netcdf(env: Env, *, vv_units: str = "1", start: str = "2022-01-01") -> list[str]:
    f = _fields(1)
    times = np.datetime64(start, "ns") + np.arange(3) * np.timedelta64(12, "D")
    ds = xr.Dataset(
        {VV: (("time", "y", "x"), np.stack([f["vv"]] * 3), {"units": vv_units}),
         VH: (("time", "y", "x"), np.stack([f["vh"]] * 3), {"units": "1"}),
         NDVI: (("time", "y", "x"), np.stack([f["ndvi"]] * 3))},
        coords={"time": times, "y": 9240000 - 5 - 10 * np.arange(16.0),
                "x": 456000 + 5 + 10 * np.arange(16.0)})
    path = env.tmp / "openeo.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    return ["convert", str(path), "--out", str(env.tmp / "cube.zarr"), "--crs", "EPSG:32749"]


def _geojson(env: Env, coordinates: list, name: str) -> str:
    path = env.tmp / name
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {},
         "geometry": {"type": "Polygon", "coordinates": [coordinates]}}]}))
    return str(path)


def _fetch(env: Env, aoi: str, *extra: str, start: str = "2022-01-01", end: str = "2022-01-31",
           catalogue: str = "http://127.0.0.1:9/") -> list[str]:
    # the port-9 catalogue refuses connections: these cases must fail before any request
    return ["fetch", "--aoi", aoi, "--start", start, "--end", end, "--catalogue", catalogue,
            "--retries", "1", "--out", str(env.tmp / "fetched.zarr"), *extra]


def _fetch_scene(env: Env, s1_db: bool, *extra: str) -> list[str]:
    srv, scene = STAC["server"], STAC["scene"]
    srv.items = scene.items(srv.url, s1_db=s1_db)
    return _fetch(env, SCENE_AOI, "--aoi-crs", "EPSG:32749", "--no-s2", *extra,
                  catalogue=srv.stac_url)


def _config(env: Env, text: str) -> list[str]:
    path = env.tmp / "cfg.yaml"
    path.write_text(text)
    return ["run", str(path)]


def _batch(env: Env) -> list[str]:
    aois = env.tmp / "aois.csv"
    aois.write_text("id,lon,lat,size_km\ndemak,110.65,-6.85,1\n")
    return ["batch", "run", str(aois), "--start", "2022-01-01", "--end", "2022-03-01",
            "--out", str(env.tmp / "batch"), "--resolution", "0"]


CASES = [
    # --- Sentinel-1 units decided from the values, at every entry point
    Case("inputs_geotiff_linear_labelled_db", _linear_as_db, CubeSchemaError, "--bands vv,vh,ndvi"),
    Case("inputs_geotiff_db_labelled_linear", _db_as_linear, CubeSchemaError,
         "--bands vv_db,vh_db,ndvi"),
    Case("inputs_netcdf_units_db_on_linear", lambda e: _netcdf(e, vv_units="dB"), CubeSchemaError,
         "labelled units='dB'"),
    Case("inputs_fetch_s1_units_db_on_linear_assets",
         lambda e: _fetch_scene(e, False, "--s1-units", "db"), CubeSchemaError,
         "--s1-units linear"),
    Case("inputs_fetch_db_assets_read_as_linear", lambda e: _fetch_scene(e, True),
         CubeSchemaError, "--s1-units db"),
    Case("inputs_check_vv_in_db", lambda e: check(e.variant(vv=10 * np.log10(e.cube[VV]))),
         GateFailed, "looks like dB"),
    Case("inputs_check_vh_in_db", lambda e: check(e.variant(vh=10 * np.log10(e.cube[VH]))),
         GateFailed, "'vh_range'"),
    Case("inputs_check_vv_linear_x10000", lambda e: check(e.variant(vv=e.cube[VV] * 10000)),
         GateFailed, "neither dB"),
    Case("inputs_run_on_db_cube",
         lambda e: _config(e, f"source: {{kind: cube, path: '{e.variant(vv=10 * np.log10(e.cube[VV]))}'}}\n"
                              "report: false\n"), GateFailed, "10 ** (db / 10)"),
    # --- NDVI scale
    Case("inputs_check_ndvi_x10000", lambda e: check(e.variant(ndvi=e.cube[NDVI] * 10000)),
         GateFailed, "ds['ndvi'] / 10000"),
    Case("inputs_check_ndvi_0_255", lambda e: check(e.variant(ndvi=(e.cube[NDVI] + 1) * 127.5)),
         GateFailed, "stored scaled"),
    Case("inputs_run_on_ndvi_x10000_cube",
         lambda e: _config(e, f"source: {{kind: cube, path: '{e.variant(ndvi=e.cube[NDVI] * 1e4)}'}}\n"
                              "report: false\n"), GateFailed, "--ndvi-scale"),
    Case("inputs_geotiff_byte_ndvi", _byte_ndvi, InputFileError, "--ndvi-scale"),
    # --- dates inside the Sentinel era
    Case("inputs_dates_file_from_1970", lambda e: _dates_file(e, "1970-01-01"), InputFileError,
         "dates.csv (from line 2)"),
    Case("inputs_dated_file_names_before_2014", _dated_files, InputFileError, "S2_20120105_NDVI.tif"),
    Case("inputs_geotiff_start_1970",
         lambda e: _import(e, _stack(e, units="db"), "--start", "1970-01-01"), ConfigError,
         "--start 1970-01-01"),
    Case("inputs_netcdf_time_1970", lambda e: _netcdf(e, start="1970-01-01"), CubeSchemaError,
         "openeo.nc (its time coordinate)"),
    Case("inputs_fetch_start_1970",
         lambda e: _fetch(e, "110.6,-6.9,110.7,-6.8", start="1970-01-01", end="1970-03-01"),
         ConfigError, "start 1970-01-01"),
    # --- resolutions
    Case("inputs_fetch_zero_resolution",
         lambda e: _fetch(e, "110.6,-6.9,110.7,-6.8", "--resolution", "0"), ConfigError,
         "resolution"),
    Case("inputs_import_zero_resolution",
         lambda e: _import(e, _stack(e, units="db"), "--start", "2022-01-01", "--resolution", "0"),
         GridError, "resolution 0.0 is not a positive pixel size"),
    Case("inputs_import_negative_resolution_with_aoi",
         lambda e: _import(e, _stack(e, units="db"), "--start", "2022-01-01", "--resolution", "-10",
                           "--aoi", "110.6020,-6.8766,110.6030,-6.8757"),
         GridError, "resolution -10.0"),
    Case("inputs_run_geotiff_zero_resolution",
         lambda e: _config(e, f"source: {{kind: geotiff, folder: '{_stack(e, units='db')}', "
                              "start: '2022-01-01', resolution: 0}\n"), ConfigError, "source.geotiff.resolution"),
    Case("inputs_batch_zero_resolution", _batch, ConfigError, "resolution"),
    # --- geometry
    Case("inputs_aoi_bbox_across_antimeridian", lambda e: _fetch(e, "179.5,-17,-179.5,-16"),
         GridError, "antimeridian"),
    Case("inputs_aoi_bbox_beyond_180", lambda e: _fetch(e, "179.5,-17,180.5,-16"), GridError,
         "antimeridian"),
    Case("inputs_aoi_polygon_across_antimeridian",
         lambda e: _fetch(e, _geojson(e, [[179.5, -17], [-179.5, -17], [-179.5, -16], [179.5, -16],
                                          [179.5, -17]], "fiji.geojson")), GridError, "antimeridian"),
    Case("inputs_aoi_self_intersecting",
         lambda e: _fetch(e, _geojson(e, BOWTIE, "bowtie.geojson")), GridError, "Self-intersection"),
    Case("inputs_check_aoi_self_intersecting",
         lambda e: check(str(e.scene["cube"]), "--aoi", _geojson(e, BOWTIE, "bowtie.geojson")),
         GridError, "make_valid"),
]


@pytest.fixture(scope="module")
def stac(tmp_path_factory):
    """A tiny fake S1 scene (linear and dB copies) served on 127.0.0.1 for the fetch cases."""
    scene = make_scene(tmp_path_factory.mktemp("cogs"), size=128, s2_dates=("2022-01-05",),
                       s1_dates=("2022-01-09",), db_copies=True, blocksize=64)
    with LoopbackServer(scene.root) as srv:
        STAC.update(server=srv, scene=scene)
        yield srv
    STAC.clear()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, catalogue_base, stac, tmp_path, capsys, monkeypatch):
    run_case(case, catalogue_base, tmp_path, capsys, monkeypatch)


# ----------------------------------------------------------------------------- beside the cases
def test_utm_zone_is_picked_from_the_aoi_centre_and_recorded(tmp_path):
    from fusecube.grid.geobox import grid_attrs, resolve_geobox
    from fusecube.sources.geotiff import import_geotiff
    from fusecube.sources.stac.composite import build_cube

    # both boxes straddle 114°E (zones 49 | 50): the zone is the one of the centre
    west = resolve_geobox("113.0,-7.0,114.6,-6.9", resolution=100)
    east = resolve_geobox("113.6,-7.0,115.0,-6.9", resolution=100)
    assert (west.crs.epsg, east.crs.epsg) == (32749, 32750)
    assert grid_attrs(east)["utm_zone"] == "50S"
    starts = np.array(["2022-01-01"], dtype="datetime64[ns]")
    cube = build_cube({VV: np.zeros((1, *east.shape.yx), np.float32)}, starts, east, 12)
    lon, lat = map(float, cube.attrs["grid_centre_lonlat"].split(","))
    assert cube.attrs["utm_zone"] == "50S" and cube.attrs["grid_crs"] == "EPSG:32750"
    assert abs(lon - 114.3) < 0.01 and abs(lat + 6.95) < 0.01
    # an imported stack records the zone of its grid (Demak: 49S) in the cube
    env = Env(tmp_path, {}, xr.Dataset())
    out = import_geotiff(_stack(env, units="db"), tmp_path / "c.zarr", start="2022-01-01",
                         aoi="110.6020,-6.8766,110.6030,-6.8757", resolution=10)
    attrs = xr.open_zarr(out, consolidated=False).attrs
    assert attrs["utm_zone"] == "49S" and attrs["grid_crs"] == "EPSG:32749"


def test_units_that_agree_with_the_values_are_read_once(tmp_path):
    from fusecube.sources.geotiff import read_geotiff_stack

    env = Env(tmp_path, {}, xr.Dataset())
    linear = read_geotiff_stack(_stack(env), start="2022-01-01", bands=("vv", "vh", "ndvi"))
    (tmp_path / "stack").rename(tmp_path / "linear")
    db = read_geotiff_stack(_stack(env, units="db"), start="2022-01-01")
    for ds in (linear, db):  # same grid, same linear sigma0: never converted twice
        np.testing.assert_allclose(ds[VV].isel(time=0).values, _fields(1)["vv"], rtol=1e-4)


def test_a_few_negative_values_are_masked_not_refused(catalogue_base):
    from fusecube.quality.input_gates import input_gates

    _, cube = catalogue_base
    vv = cube[VV].copy()
    vv[:3] = -vv[:3]  # 3 periods of negative values: a defect to mask, not a unit
    screen, _ = input_gates(cube.assign({VV: vv}), mask=None)
    gate = next(g for g in screen.gates if g["gate"] == "vv_range")
    assert gate["status"] == "fail" and gate["action"] == "set to NaN"


def test_backscatter_unit_from_the_counts_when_the_window_is_empty():
    from fusecube.quality.scales import backscatter_problem, ndvi_problem

    empty = np.full((2, 4, 4), np.nan, np.float32)
    assert backscatter_problem("vv", empty, n_negative=90, n_usable=100) is not None
    assert backscatter_problem("vv", empty, n_negative=2, n_usable=100) is None
    sentinels = np.full((2, 4, 4), -9999.0)  # nodata, not dB: left to the vv_finite gate
    assert backscatter_problem("vv", sentinels, n_negative=0, n_usable=10) is None
    assert ndvi_problem(n_out=49, n_usable=100) is None and ndvi_problem(60, 100) is not None


def test_sentinel_era_check():
    from fusecube.grid.periods import SENTINEL_ERA_START, check_sentinel_era

    check_sentinel_era(np.array([SENTINEL_ERA_START, "NaT"], dtype="datetime64[ns]"), what="x", fix="y")
    with pytest.raises(InputFileError, match=r"^dates.txt has 1 date\(s\) .* 2014-09-30; fix it$"):
        check_sentinel_era(["2014-09-30", "2020-01-01"], what="dates.txt", fix="fix it",
                           error=InputFileError)


@pytest.mark.parametrize("aoi", [
    # a UTM 60S box whose east edge lies past 180°
    {"crs": "EPSG:32760", "bbox": (780000, 8110000, 860000, 8130000)},
    # the same place already split at 180° (RFC 7946): parts on both sides
    {"type": "MultiPolygon", "coordinates": [
        [[[179.5, -17], [180, -17], [180, -16], [179.5, -16], [179.5, -17]]],
        [[[-180, -17], [-179.5, -17], [-179.5, -16], [-180, -16], [-180, -17]]]]},
])
def test_aois_across_the_antimeridian_are_refused_in_any_form(aoi):
    from fusecube.grid.geobox import resolve_geobox

    if "bbox" in aoi:
        aoi = {"aoi": aoi["bbox"], "aoi_crs": aoi["crs"]}
    else:
        aoi = {"aoi": aoi}
    with pytest.raises(GridError, match="antimeridian"):
        resolve_geobox(**aoi, resolution=100)


def test_one_side_of_the_antimeridian_is_gridded_in_its_zone():
    from fusecube.grid.geobox import resolve_geobox

    assert resolve_geobox("179.5,-17,180,-16", resolution=100).crs.epsg == 32760
    assert resolve_geobox("-180,-17,-179.5,-16", resolution=100).crs.epsg == 32701


def test_zero_resolution_never_becomes_a_default(tmp_path):
    from fusecube.batch.aois import AOI, aoi_geobox
    from fusecube.sources.geotiff import read_geotiff_stack

    env = Env(tmp_path, {}, xr.Dataset())
    with pytest.raises(GridError, match="resolution 0 "):
        read_geotiff_stack(_stack(env, units="db"), start="2022-01-01", resolution=0,
                           aoi="110.6020,-6.8766,110.6030,-6.8757")
    with pytest.raises(GridError, match="resolution 0 "):
        aoi_geobox(AOI(id="p", lon=110.65, lat=-6.85, size_km=1.0), 0)


def test_s1_units_ignore_zero_fill():
    from fusecube.sources.stac.catalogues import s1_spec
    from fusecube.sources.stac.read import s1_units

    values = np.zeros((8, 8), np.float32)
    values[:3] = 0.08  # most of the window is 0 fill outside the swath
    assert s1_units(values, s1_spec(), "item", "vv") == "linear"
    assert s1_units(np.zeros((4, 4)), s1_spec(units="db"), "item", "vv") == "db"
