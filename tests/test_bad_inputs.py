"""A catalogue of broken inputs: each gives its own FusecubeError, a one-line CLI error and
leaves earlier outputs untouched.

Each case builds its broken input from the small synthetic scene (or writes a broken mask,
config or output path) and returns the ``fusecube`` arguments that must fail. The CLI runs
in-process through ``fusecube.cli.app.main`` (the code path of the console script; the error
class is the context of the ``SystemExit``), and a few cases also run as a real subprocess.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import xarray as xr
from affine import Affine
from catalogue import Case, Env, argv_with_out, check, previous_output, run_case, strict, tree_hashes  # noqa: F401

from fusecube.cli import main
from fusecube.cube import NDVI, TIME, VH, VV
from fusecube.errors import (
    ConfigError,
    CubeSchemaError,
    GateFailed,
    GridError,
    InputFileError,
    MaskError,
    OutputWriteError,
)

gpd = pytest.importorskip("geopandas")


def _time(env: Env, times, drop_period_start: bool = False) -> str:
    ds = env.cube.drop_vars("period_start") if drop_period_start else env.cube
    return env.write(ds.assign_coords({TIME: times}))


def _truncated_chunk(env: Env) -> list[str]:
    store = env.tmp / "truncated.zarr"
    shutil.copytree(env.scene["cube"], store)
    chunk = next(p for p in (store / NDVI).rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    return check(str(store), "--mask", "none")


def _corrupt_store(env: Env) -> list[str]:
    store = env.tmp / "corrupt.zarr"
    shutil.copytree(env.scene["cube"], store)
    (store / "zarr.json").write_text("{ this is not json")
    return check(str(store))


def _no_crs(env: Env) -> list[str]:
    ds = env.cube.drop_vars("spatial_ref")
    for var in ds.variables.values():
        var.attrs.pop("crs", None)
        var.attrs.pop("grid_mapping", None)
        var.encoding.pop("grid_mapping", None)
    return check(env.write(ds, "nocrs.zarr"), "--mask", "none")


def _duplicate_date(env: Env) -> list[str]:
    times = env.cube[TIME].values.copy()
    times[10] = times[9]
    return strict(_time(env, times, drop_period_start=True))


def _irregular(env: Env) -> list[str]:
    keep = [i for i in range(env.cube.sizes[TIME]) if i != 20]
    return strict(env.write(env.cube.isel({TIME: keep})))


def _long_gap(env: Env) -> list[str]:
    hidden = xr.DataArray((np.arange(env.cube.sizes[TIME]) // 10) == 1, dims=TIME)
    return strict(env.variant(ndvi=env.cube[NDVI].where(~hidden)))


def _s1_half(env: Env) -> list[str]:
    vv = env.cube[VV].copy()
    vv[30, :24] = np.nan
    return strict(env.variant(vv=vv))


def _far_mask(env: Env) -> list[str]:
    blocks = gpd.read_file(env.scene["blocks"])
    return check(str(env.scene["cube"]), "--mask",
                 env.mask_file(gpd.GeoDataFrame(geometry=blocks.translate(xoff=4e5),
                                                crs=blocks.crs), "far.gpkg"))


def _no_crs_mask(env: Env) -> list[str]:
    blocks = gpd.read_file(env.scene["blocks"])[["block_id", "geometry"]]
    path = Path(env.mask_file(blocks, "nocrs.shp"))
    path.with_suffix(".prj").unlink()
    return check(str(env.scene["cube"]), "--mask", str(path))


def _lines_mask(env: Env) -> list[str]:
    x0, y0, x1, y1 = env.cube.odc.geobox.extent.boundingbox
    gdf = gpd.GeoDataFrame(geometry=[shapely.LineString([(x0, y0), (x1, y1)])], crs="EPSG:32749")
    return check(str(env.scene["cube"]), "--mask", env.mask_file(gdf, "lines.gpkg"))


def _tif(env: Env, name: str, data: np.ndarray, crs: str | None, transform: Affine) -> str:
    kwargs = {"crs": crs, "transform": transform} if crs else {}
    with rasterio.open(env.tmp / name, "w", driver="GTiff", width=data.shape[1],
                       height=data.shape[0], count=1, dtype=data.dtype, **kwargs) as dst:
        dst.write(data, 1)
    return str(env.tmp / name)


def _raster_mask(env: Env, kind: str) -> list[str]:
    x0, _, _, y1 = env.cube.odc.geobox.extent.boundingbox
    transform = Affine(10, 0, x0 - 100, 0, -10, y1 + 100)
    if kind == "nocrs":
        path = _tif(env, "nocrs.tif", np.ones((50, 50), np.uint8), None, transform)
    elif kind == "zeros":
        path = _tif(env, "zeros.tif", np.zeros((400, 400), np.uint8), "EPSG:32749", transform)
    else:
        good = _tif(env, "good.tif", np.ones((400, 400), np.uint8), "EPSG:32749", transform)
        path = str(env.tmp / "trunc.tif")
        Path(path).write_bytes(Path(good).read_bytes()[:3000])
    return check(str(env.scene["cube"]), "--mask", path)


def _tiny_mask(env: Env) -> list[str]:
    blocks = gpd.read_file(env.scene["blocks"])
    x0, _, _, y1 = env.cube.odc.geobox.extent.boundingbox
    speck = gpd.GeoDataFrame(geometry=[shapely.box(x0, y1 - 50, x0 + 50, y1)], crs=blocks.crs)
    return strict(env.write(env.cube), "--mask", env.mask_file(speck, "speck.gpkg"))


def _config(env: Env, text: str) -> list[str]:
    path = env.tmp / "cfg.yaml"
    path.write_text(text)
    return ["run", str(path)]


def _run_strict(env: Env) -> list[str]:
    return _config(env, f"source: {{kind: cube, path: '{env.scene['cube']}'}}\nstrict: true\n"
                        "report: false\n")


def _run_corrupt(env: Env) -> list[str]:
    store = env.tmp / "corrupt.zarr"
    shutil.copytree(env.scene["cube"], store)
    (store / "zarr.json").write_text("{ broken")
    return _config(env, f"source: {{kind: cube, path: '{store}'}}\n")


def _unwritable(env: Env) -> list[str]:
    (env.tmp / "a_file").write_text("not a folder")
    return ["check", str(env.scene["cube"]), "--out", str(env.tmp / "a_file" / "quality")]


CASES = [
    # --- cube files
    Case("cube_missing", lambda e: check(str(e.tmp / "nope.zarr")), InputFileError, "nope.zarr"),
    Case("zarr_corrupt_metadata", _corrupt_store, InputFileError, "corrupt.zarr"),
    Case("zarr_truncated_chunk", _truncated_chunk, InputFileError, "truncated.zarr"),
    Case("missing_band", lambda e: check(e.write(e.cube.drop_vars(VH))), CubeSchemaError, "'vh'"),
    Case("band_wrong_dims", lambda e: check(e.variant(ndvi=e.cube[NDVI].isel(time=0))),
         CubeSchemaError, "'ndvi'"),
    Case("cube_without_crs", _no_crs, CubeSchemaError, "no CRS"),
    # --- values
    Case("all_nan_ndvi", lambda e: strict(e.variant(ndvi=e.cube[NDVI] * np.nan)), GateFailed,
         "s2_valid_fraction"),
    Case("minus_inf_ndvi", lambda e: strict(e.variant(ndvi=e.cube[NDVI].fillna(-np.inf))),
         GateFailed, "ndvi_finite"),
    Case("nodata_sentinel_vv",
         lambda e: strict(e.variant(vv=e.cube[VV].where(e.cube[VV] > 0.05, -9999.0))),
         GateFailed, "vv_finite"),
    Case("ndvi_scaled_x10000", lambda e: strict(e.variant(ndvi=e.cube[NDVI] * 10000)),
         GateFailed, "ndvi_range"),
    Case("backscatter_in_db", lambda e: strict(e.variant(vv=10 * np.log10(e.cube[VV]))),
         GateFailed, "looks like dB"),
    Case("period_of_zeros", lambda e: strict(str(e.scene["cube"])), GateFailed,
         "ndvi_zero_periods"),
    Case("constant_vh_period",
         lambda e: strict(e.variant(vh=e.cube[VH].where(e.cube[TIME] != e.cube[TIME][9], 0.01))),
         GateFailed, "vh_constant_periods"),
    Case("all_cloud_season", _long_gap, GateFailed, "s2_longest_gap"),
    Case("s1_half_missing", _s1_half, GateFailed, "s1_valid_fraction"),
    Case("mismatched_s1_s2_grids",
         lambda e: strict(e.variant(ndvi=e.cube[NDVI].shift(y=2))), GateFailed,
         "(dy, dx) = (2, 0)"),
    # --- time axis
    # a time axis a run refuses at input: check refuses it with the run's message
    Case("reversed_dates", lambda e: strict(e.write(e.cube.isel(time=slice(None, None, -1)))),
         CubeSchemaError, "not strictly increasing"),
    Case("duplicated_date", _duplicate_date, CubeSchemaError, "not strictly increasing"),
    Case("year_shifted_time",
         lambda e: strict(_time(e, e.cube[TIME].values + np.timedelta64(365, "D"))),
         GateFailed, "time_in_periods"),
    Case("epoch_1970_time",
         lambda e: strict(_time(e, e.cube[TIME].values - np.datetime64("2023-11-01", "ns")
                                + np.datetime64("1970-01-01", "ns"), drop_period_start=True)),
         CubeSchemaError, "before the Sentinel era"),
    Case("series_outside_expected_years",
         lambda e: strict(str(e.scene["cube"]), "--years", "2019:2020"), GateFailed,
         "2019-2020"),
    Case("irregular_time_step", _irregular, GateFailed, "time_regular"),
    # --- areas of interest (fusecube check --aoi)
    Case("aoi_outside_the_data",
         lambda e: check(str(e.scene["cube"]), "--aoi", "120.0,-5.3,120.2,-5.1"), GridError,
         "AOI does not overlap"),
    Case("aoi_empty", lambda e: check(str(e.scene["cube"]), "--aoi", "110.6,-6.9,110.6,-6.9"),
         GridError, "(110.6, -6.9, 110.6, -6.9) is empty"),
    Case("aoi_in_wrong_crs",
         lambda e: check(str(e.scene["cube"]), "--aoi", "456800,9237200,459200,9239600"),
         GridError, "look like projected coordinates"),
    Case("aoi_not_a_bbox", lambda e: check(str(e.scene["cube"]), "--aoi", "1,2,3"), GridError,
         "'1,2,3'"),
    # --- masks
    Case("mask_missing", lambda e: check(str(e.scene["cube"]), "--mask", str(e.tmp / "no.gpkg")),
         InputFileError, "no.gpkg"),
    Case("mask_without_crs", _no_crs_mask, MaskError, "nocrs.shp"),
    Case("mask_no_overlap", _far_mask, MaskError, "far.gpkg"),
    Case("mask_nothing_left_after_repair", _lines_mask, MaskError, "lines.gpkg"),
    Case("mask_corrupt_file",
         lambda e: (e.tmp.joinpath("junk.gpkg").write_bytes(b"junk" * 64),
                    check(str(e.scene["cube"]), "--mask", str(e.tmp / "junk.gpkg")))[1],
         InputFileError, "junk.gpkg"),
    Case("mask_unknown_format",
         lambda e: (e.tmp.joinpath("mask.csv").write_text("a,b\n"),
                    check(str(e.scene["cube"]), "--mask", str(e.tmp / "mask.csv")))[1],
         MaskError, "mask.csv"),
    Case("raster_mask_without_crs", lambda e: _raster_mask(e, "nocrs"), MaskError, "nocrs.tif"),
    Case("raster_mask_all_zero", lambda e: _raster_mask(e, "zeros"), MaskError, "zeros.tif"),
    Case("raster_mask_truncated", lambda e: _raster_mask(e, "trunc"), InputFileError,
         "trunc.tif"),
    Case("mask_too_small", _tiny_mask, GateFailed, "speck.gpkg"),
    # --- configuration and flags
    Case("config_nan", lambda e: _config(e, "smooth: {lam: .nan}\n"), ConfigError, "smooth.lam"),
    Case("config_negative_size", lambda e: _config(e, "block_size: -256\n"), ConfigError,
         "block_size"),
    Case("config_unknown_key", lambda e: _config(e, "gapfil: linear\n"), ConfigError,
         "did you mean 'gapfill'"),
    Case("config_unparsable", lambda e: _config(e, "smooth: [unclosed\n"), ConfigError,
         "cfg.yaml"),
    Case("years_flag_reversed", lambda e: check(str(e.scene["cube"]), "--years", "2025:2023"),
         ConfigError, "--years"),
    # --- runs and outputs
    Case("run_strict_on_zero_period", _run_strict, GateFailed, "ndvi_zero_periods"),
    Case("run_on_corrupt_cube", _run_corrupt, InputFileError, "corrupt.zarr"),
    Case("run_strict_flag_on_zero_period",
         lambda e: [*_config(e, f"source: {{kind: cube, path: '{e.scene['cube']}'}}\n"
                                "report: false\n"), "--strict"], GateFailed, "NDVI period(s)"),
    Case("output_dir_unwritable", _unwritable, OutputWriteError, "a_file"),
]


def test_catalogue_is_large_and_distinct():
    import importlib

    cases = [c for path in sorted(Path(__file__).parent.glob("test_bad_inputs*.py"))
             for c in importlib.import_module(path.stem).CASES]
    assert len(cases) >= 60, f"{len(cases)} cases"
    assert len({c.name for c in cases}) == len(cases)


@pytest.fixture
def base(catalogue_base):
    return catalogue_base


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, base, tmp_path, capsys, monkeypatch):
    run_case(case, base, tmp_path, capsys, monkeypatch)


def test_disk_full_keepsprevious_output(base, tmp_path, capsys, monkeypatch):
    scene, _ = base
    out = previous_output(tmp_path / "out")
    before = tree_hashes(out)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("fusecube.quality.gates.QualityReport.write_json", disk_full)
    with pytest.raises(SystemExit) as info:
        main(["check", str(scene["cube"]), "--out", str(out / "quality")])
    assert info.value.code != 0 and type(info.value.__context__) is OutputWriteError
    assert "No space left" in capsys.readouterr().err
    assert tree_hashes(out) == before


@pytest.mark.parametrize("name", ["period_of_zeros", "mask_no_overlap"])
def test_console_script_exit_code_and_one_line(name, base, tmp_path):
    scene, cube = base
    case = next(c for c in CASES if c.name == name)
    env = Env(tmp_path, scene, cube)
    argv = case.build(env)
    proc = subprocess.run([sys.executable, "-m", "fusecube", *argv], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "60"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and case.names in errors[0]


def test_check_writes_diagnostics_on_a_good_cube(base, tmp_path, capsys):
    scene, _ = base
    main_ok = ["check", str(scene["cube"]), "--mask", str(scene["blocks"]),
               "--out", str(tmp_path / "q")]
    from fusecube.cli.app import app

    app(args=main_ok, standalone_mode=False)
    printed = capsys.readouterr().out
    assert "ndvi_zero_periods | input | fail" in printed and "1 failed" in printed
    assert {p.name for p in (tmp_path / "q").iterdir()} == {
        "quality.json", "quality.md", "quality.html", "valid_fraction.png", "availability.png",
        "mask_overlay.png"}
    assert "blocks.gpkg:" in printed and "km²" in printed


def test_check_aoi_crops_the_cube_on_its_own_pixels(base):
    scene, cube = base
    from fusecube.cube import read_cube as open_cube
    from fusecube.grid.crop import crop_to_aoi

    full = open_cube(scene["cube"])
    west, south, east, north = full.odc.geobox.extent.to_crs("EPSG:4326").boundingbox
    half = f"{west},{south},{(west + east) / 2},{north}"
    part = crop_to_aoi(full, half)
    assert part.sizes["y"] == full.sizes["y"]
    assert abs(part.sizes["x"] - full.sizes["x"] / 2) <= 2  # the bbox edge falls within a pixel
    np.testing.assert_array_equal(part["x"].values, full["x"].values[: part.sizes["x"]])
