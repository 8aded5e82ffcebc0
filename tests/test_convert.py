"""`fusecube convert`: NetCDF/GeoTIFF/zarr → validated, checksummed zarr cube; integrity checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import fusecube
from fusecube.cli import main
from fusecube.cube import NDVI, VH, VV, read_cube, validate_cube
from fusecube.errors import ConfigError, CubeSchemaError, IntegrityError, OutputWriteError
from fusecube.sources.convert import choose_chunks, convert, parse_chunks, verify_cube
from fusecube.storage.manifest import dataset_manifest, manifest_path


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict[str, Path]:
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize

    return synthesize(SceneConfig(width=32, height=24, seed=5, n_periods=24),
                      tmp_path_factory.mktemp("scene32"))


@pytest.fixture(scope="module")
def netcdf(scene, tmp_path_factory) -> Path:
    """The scene as a NetCDF file the way other tools write it: upper-case names, VV/VH in dB."""
    ds = read_cube(scene["cube"]).load()
    ds = ds[[VV, VH, NDVI]]
    for name in (VV, VH):
        ds[name] = (10 * np.log10(ds[name])).astype(np.float32)
        ds[name].attrs["units"] = "dB"
    ds = ds.rename({VV: "VV", VH: "VH", NDVI: "NDVI"})
    path = tmp_path_factory.mktemp("nc") / "stack.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def test_parse_and_choose_chunks():
    assert parse_chunks("time=-1,y=256,x=128") == {"time": -1, "y": 256, "x": 128}
    with pytest.raises(ConfigError, match="DIM=SIZE"):
        parse_chunks("band=3")
    with pytest.raises(ConfigError):
        parse_chunks("y=0")
    ts = choose_chunks({"time": 62, "y": 5000, "x": 5000}, access="timeseries", target_mb=16)
    assert ts["time"] == -1 and ts["y"] == ts["x"] and ts["y"] % 64 == 0
    assert 8 <= 62 * ts["y"] ** 2 * 4 / 2**20 <= 32  # near the 16 MB target
    maps = choose_chunks({"time": 62, "y": 5000, "x": 5000}, access="maps", target_mb=16)
    assert maps["time"] == 1 and maps["y"] > ts["y"]
    assert choose_chunks({"time": 24, "y": 24, "x": 32}) == {"time": -1, "y": -1, "x": -1}


def test_netcdf_round_trip(scene, netcdf, tmp_path):
    result = convert(netcdf, tmp_path / "cube.zarr", chunks="time=-1,y=16,x=16")
    src = read_cube(scene["cube"]).load()
    out = read_cube(result.path).load()
    assert out[VV].dims == ("time", "y", "x") and out[VV].dtype == np.float32
    assert out[VV].encoding["chunks"] == (24, 16, 16)
    # dB → linear back to the source values; NDVI exact, NaN where it was NaN
    np.testing.assert_allclose(out[VV].values, src[VV].values, rtol=1e-5)
    np.testing.assert_array_equal(out[NDVI].values, src[NDVI].values)
    assert out.odc.geobox == src.odc.geobox
    manifest = json.loads(manifest_path(result.path).read_text())
    assert manifest["sizes"] == {"time": 24, "y": 24, "x": 32}
    assert manifest["statistics"][NDVI]["count"] == int(np.isfinite(src[NDVI].values).sum())
    assert any(k.startswith("vv/c/") for k in manifest["files"])
    assert verify_cube(result.path)["digest"] == manifest["digest"]


def test_integrity_check_catches_a_corrupted_chunk(netcdf, tmp_path):
    path = convert(netcdf, tmp_path / "cube.zarr", chunks={"time": -1, "y": 16, "x": 16}).path
    chunk = sorted((path / "ndvi" / "c").rglob("*"))[-1]
    assert chunk.is_file()
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"changed \['ndvi/c/"):
        verify_cube(path)


def test_integrity_check_catches_a_missing_chunk(netcdf, tmp_path):
    path = convert(netcdf, tmp_path / "cube.zarr", chunks="time=-1,y=16,x=16").path
    next(p for p in (path / "vh" / "c").rglob("*") if p.is_file()).unlink()
    with pytest.raises(IntegrityError, match="missing"):
        verify_cube(path)


def test_statistics_check_catches_consistent_rewrite(netcdf, tmp_path):
    """Values changed and checksums re-recorded (e.g. a tool that rewrites the manifest)."""
    from fusecube.storage.manifest import store_checksums

    path = convert(netcdf, tmp_path / "cube.zarr", chunks="time=-1,y=16,x=16").path
    ds = read_cube(path).load()
    ds[NDVI] = ds[NDVI] * np.float32(0.5)
    ds.drop_encoding().to_zarr(path, mode="a", zarr_format=3, consolidated=False)
    manifest = json.loads(manifest_path(path).read_text())
    manifest["files"] = store_checksums(path)
    manifest_path(path).write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="statistics"):
        verify_cube(path)


def test_geotiff_stack_and_zarr_rechunk(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    folder = tmp_path / "tifs"
    folder.mkdir()
    transform = from_origin(500000, 9240000, 50, 50)
    for p in range(1, 7):
        bands = np.stack([rng.normal(-12, 1, (20, 24)), rng.normal(-18, 1, (20, 24)),
                          rng.uniform(0.1, 0.8, (20, 24))]).astype(np.float32)
        bands[2, :3, :3] = -np.inf  # masked NDVI, as exports write it
        with rasterio.open(folder / f"period_{p:02d}.tif", "w", driver="GTiff", width=24, height=20,
                           count=3, dtype="float32", crs="EPSG:32749", transform=transform) as dst:
            dst.write(bands)
    result = convert(folder, tmp_path / "cube.zarr", start="2024-01-01", period_days=12)
    out = read_cube(result.path).load()
    assert out.sizes == {"time": 6, "y": 20, "x": 24}
    assert np.isnan(out[NDVI].values[:, :3, :3]).all() and np.isfinite(out[NDVI].values[:, 5:, 5:]).all()
    assert out.odc.geobox.crs.epsg == 32749
    verify_cube(result.path)
    rechunked = convert(result.path, tmp_path / "maps.zarr", access="maps").path
    assert read_cube(rechunked)[VV].encoding["chunks"] == (1, 20, 24)
    a, b = dataset_manifest([result.path]), dataset_manifest([rechunked])
    assert a["digest"] != b["digest"] and a == dataset_manifest([result.path])


def test_refusals(netcdf, tmp_path):
    out = convert(netcdf, tmp_path / "cube.zarr").path
    with pytest.raises(OutputWriteError, match="--overwrite"):
        convert(netcdf, out)
    ds = xr.open_dataset(netcdf, engine="h5netcdf").load()
    bare = ds.drop_vars([v for v in ds.variables if v in ("spatial_ref",)])
    for name in bare.data_vars:
        bare[name].attrs.pop("grid_mapping", None)
    bare.attrs.clear()
    for dim in ("x", "y"):
        bare[dim].attrs.pop("crs", None)
    nocrs = tmp_path / "nocrs.nc"
    bare.to_netcdf(nocrs, engine="h5netcdf")
    with pytest.raises(CubeSchemaError, match="--crs"):
        convert(nocrs, tmp_path / "x.zarr")
    assert convert(nocrs, tmp_path / "x.zarr", crs="EPSG:32749").path.exists()
    with pytest.raises(CubeSchemaError, match="missing variable"):
        convert(netcdf, tmp_path / "y.zarr", required=("vv", "vh", "ndvi", "cloud"))
    assert not (tmp_path / "y.zarr").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_cli_convert_and_verify(netcdf, tmp_path, capsys):
    out = tmp_path / "cli.zarr"
    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        return exc.value.code

    assert run("convert", str(netcdf), "--out", str(out), "--chunks", "time=-1,y=8,x=8") == 0
    assert "EPSG:32749" in capsys.readouterr().out
    assert read_cube(out)[VV].encoding["chunks"] == (24, 8, 8)
    assert run("verify-cube", str(out)) == 0
    assert "ok" in capsys.readouterr().out
    chunk = next(p for p in (out / "vv" / "c").rglob("*") if p.is_file())
    data = chunk.read_bytes()
    chunk.write_bytes(data[:-1] + bytes([data[-1] ^ 0x01]))
    assert run("verify-cube", str(out)) == 2
    assert "does not match its manifest" in capsys.readouterr().err


# ------------------------------------------------------------------------------- real data as users have it


def _openeo_netcdf(path: Path, *, chunked: bool = True, s1_dtype=None) -> dict[str, np.ndarray]:
    """An openEO-style NetCDF: dim ``t``, S1-SIGMA0-VV/VH in dB, S2-L2A-B04/B08 in DN, (1, y, x) chunks."""
    rng = np.random.default_rng(11)
    n_t, n_y, n_x = 5, 12, 10
    bands = {"S1-SIGMA0-VV": rng.uniform(-18, -6, (n_t, n_y, n_x)).astype(np.float32),
             "S1-SIGMA0-VH": rng.uniform(-26, -12, (n_t, n_y, n_x)).astype(np.float32),
             "S2-L2A-B04": rng.integers(1, 1500, (n_t, n_y, n_x)).astype(np.uint16),
             "S2-L2A-B08": rng.integers(1500, 5000, (n_t, n_y, n_x)).astype(np.uint16)}
    bands["S2-L2A-B04"][1, :3, :3] = 0  # nodata
    ds = xr.Dataset({name: (("t", "y", "x"), values, {"_FillValue": 0} if values.dtype.kind == "u" else {})
                     for name, values in bands.items()},
                    coords={"t": pd.date_range("2024-03-01", periods=n_t, freq="10D"),
                            "y": 9_240_000.0 - 20 * np.arange(n_y), "x": 500_000.0 + 20 * np.arange(n_x)})
    ds = ds.odc.assign_crs("EPSG:32749")
    encoding = {name: {"chunksizes": (1, n_y, n_x)} if chunked else {} for name in bands}
    for name in bands:  # keep the raw values and the declared fill value on disk
        encoding[name].update(ds[name].attrs)
        ds[name].attrs = {}
    ds.to_netcdf(path, engine="h5netcdf", encoding=encoding)
    return bands


def test_time_chunked_netcdf_converts(netcdf, tmp_path):
    """openEO and xarray's default write (1, y, x) chunks: convert rechunks instead of crashing."""
    src = xr.open_dataset(netcdf, engine="h5netcdf").load()
    n_y, n_x = src.sizes["y"], src.sizes["x"]
    chunked = tmp_path / "chunked.nc"
    src.to_netcdf(chunked, engine="h5netcdf",
                  encoding={name: {"chunksizes": (1, n_y, n_x)} for name in src.data_vars})
    assert xr.open_dataset(chunked, engine="h5netcdf")["VV"].encoding["chunksizes"] == (1, n_y, n_x)
    out = read_cube(convert(chunked, tmp_path / "cube.zarr", chunks="time=-1,y=16,x=16").path).load()
    plain = read_cube(convert(netcdf, tmp_path / "plain.zarr", chunks="time=-1,y=16,x=16").path).load()
    assert out[VV].encoding["chunks"] == (24, 16, 16)
    for name in (VV, VH, NDVI):
        np.testing.assert_array_equal(out[name].values, plain[name].values)


def test_openeo_style_netcdf_becomes_a_valid_cube(tmp_path):
    path = tmp_path / "openeo.nc"
    bands = _openeo_netcdf(path)
    result = convert(path, tmp_path / "cube.zarr")
    cube = validate_cube(read_cube(result.path).load())
    red = np.where(bands["S2-L2A-B04"] > 0, bands["S2-L2A-B04"] * 1e-4, np.nan)
    nir = bands["S2-L2A-B08"] * 1e-4
    np.testing.assert_allclose(cube[NDVI].values, (nir - red) / (nir + red), rtol=1e-5)
    assert np.isnan(cube[NDVI].values[1, :3, :3]).all()
    np.testing.assert_allclose(cube[VV].values, 10 ** (bands["S1-SIGMA0-VV"] / 10), rtol=1e-5)
    assert set(cube.data_vars) == {VV, VH, NDVI} and cube.sizes["time"] == 5
    loaded = fusecube.load(path)  # the same standardisation behind fusecube.load
    np.testing.assert_array_equal(loaded[NDVI].values, cube[NDVI].values)


def test_s1_and_s2_files_on_their_own_dates_composite_onto_periods(tmp_path):
    rng = np.random.default_rng(12)
    n_y, n_x = 8, 6
    coords = {"y": 9_240_000.0 - 10 * np.arange(n_y), "x": 500_000.0 + 10 * np.arange(n_x)}
    s1_times = pd.to_datetime(["2024-01-02", "2024-01-08", "2024-01-14", "2024-01-20"])
    s2_times = pd.to_datetime(["2024-01-04", "2024-01-09", "2024-01-19", "2024-01-23"])
    vv_db = rng.uniform(-16, -8, (4, n_y, n_x)).astype(np.float32)
    vh_db = vv_db - 7
    ndvi = rng.uniform(0.2, 0.8, (4, n_y, n_x)).astype(np.float32)
    s1 = xr.Dataset({"VV": (("time", "y", "x"), vv_db), "VH": (("time", "y", "x"), vh_db)},
                    coords={"time": s1_times, **coords}).odc.assign_crs("EPSG:32749")
    s2 = xr.Dataset({"NDVI": (("date", "y", "x"), ndvi)},
                    coords={"date": s2_times, **coords}).odc.assign_crs("EPSG:32749")
    s1.to_netcdf(tmp_path / "s1.nc", engine="h5netcdf")
    s2.to_netcdf(tmp_path / "s2.nc", engine="h5netcdf")
    result = convert([tmp_path / "s1.nc", tmp_path / "s2.nc"], tmp_path / "cube.zarr", period_days=12)
    cube = validate_cube(read_cube(result.path).load())
    assert [str(t)[:10] for t in cube["period_start"].values] == ["2024-01-02", "2024-01-14"]
    assert cube["n_s1_dates"].values.tolist() == [2, 2] and cube["n_s2_dates"].values.tolist() == [2, 2]
    np.testing.assert_allclose(cube[VV].values[0], np.median(10 ** (vv_db[:2] / 10), axis=0), rtol=1e-5)
    np.testing.assert_allclose(cube[NDVI].values[1], np.median(ndvi[2:], axis=0), rtol=1e-6)
    # one file on the union of the dates, each sensor NaN on the other's: composited by itself
    union = xr.merge([s1.rename({"time": "t"}), s2.rename({"date": "t"})], join="outer")
    union.to_netcdf(tmp_path / "union.nc", engine="h5netcdf")
    single = read_cube(convert(tmp_path / "union.nc", tmp_path / "single.zarr").path).load()
    assert single.sizes["time"] == 2  # 12-day periods by default
    np.testing.assert_allclose(single[VV].values, cube[VV].values, rtol=1e-6)
    np.testing.assert_allclose(single[NDVI].values, cube[NDVI].values, rtol=1e-6)


def test_integer_s1_needs_a_known_encoding(tmp_path, capsys):
    path = tmp_path / "int.nc"
    rng = np.random.default_rng(13)
    db = rng.uniform(-20, -5, (3, 6, 5))
    dn = np.round(10 ** ((db + 83) / 20)).astype(np.uint16)  # openEO GFMap compress_backscatter_uint16
    ds = xr.Dataset({"VV": (("t", "y", "x"), dn), "VH": (("t", "y", "x"), dn),
                     "NDVI": (("t", "y", "x"), rng.uniform(0, 1, dn.shape).astype(np.float32))},
                    coords={"t": pd.date_range("2024-01-01", periods=3, freq="12D"),
                            "y": 9_240_000.0 - 10 * np.arange(6), "x": 500_000.0 + 10 * np.arange(5)})
    ds.odc.assign_crs("EPSG:32749").to_netcdf(path, engine="h5netcdf")
    with pytest.raises(SystemExit) as info:
        main(["convert", str(path), "--out", str(tmp_path / "refused.zarr")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--s1-encoding gfmap" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as info:
        main(["convert", str(path), "--out", str(tmp_path / "ok.zarr"), "--s1-encoding", "gfmap"])
    assert info.value.code == 0
    cube = read_cube(tmp_path / "ok.zarr").load()
    np.testing.assert_allclose(cube[VV].values, 10 ** ((20 * np.log10(dn) - 83) / 10), rtol=1e-4)


@pytest.mark.realdata
def test_real_worldcereal_files_convert_as_downloaded(real_data, tmp_path):
    """WorldCereal's S1 (int32 dB x 1e-4, 20 m), S2 10 m (uint16 DN) and 20 m (SCL) files → one cube."""
    folder = real_data / "worldcereal_be" / "00002806639B424A"
    files = [next(folder.glob(f"{prefix}_*.nc")) for prefix in ("S1_GRD-ASCENDING_20m", "S2_L2A_10m", "S2_L2A_20m")]
    cube = validate_cube(read_cube(convert(files, tmp_path / "cube.zarr", period_days=30).path).load())
    assert cube.odc.geobox.resolution.x == 10 and cube.sizes["time"] == 17  # 2017-08-01..2018-11-30
    s1 = xr.open_dataset(files[0])  # CF-decoded by xarray: dB
    np.testing.assert_allclose(np.nanmedian(cube[VV].values), np.median(10 ** (s1["VV"].values[:, ::2, ::2] / 10)),
                               rtol=0.2)
    assert 0.2 < np.nanmedian(cube[NDVI].values) < 0.9
    assert 0.05 < float(np.isnan(cube[NDVI].values).mean()) < 0.9  # SCL clouds removed, not everything
    assert int(cube["n_s1_dates"].sum()) == s1.sizes["timestamp"]
