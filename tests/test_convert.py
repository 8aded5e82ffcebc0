"""`fusecube convert`: NetCDF/GeoTIFF/zarr → validated, checksummed zarr cube; integrity checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from fusecube.cli import main
from fusecube.cube import NDVI, VH, VV, read_cube
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
