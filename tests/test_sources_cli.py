"""The data-in commands: fetch, import-geotiff, inspect (loopback server only)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fusecube.cli.app import app
from fusecube.cube import NDVI, read_cube, validate_cube
from fusecube.errors import InputFileError, SourceError
from fusecube.sources.inspection import inspect_raster
from fusecube.testing import Fault, FaultPlan, LoopbackServer
from fusecube.testing.scenes import expected_ndvi, make_scene

runner = CliRunner()
AOI = "402000,9216000,404000,9218000"  # UTM 49S, inside the 5 km scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("cogs"), size=512,
                      s2_dates=("2022-01-05", "2022-01-30"), s1_dates=("2022-01-09",))


def invoke(args):
    result = runner.invoke(app, args, catch_exceptions=True)
    return result


def test_fetch_command_writes_a_runnable_cube(scene, tmp_path):
    out = tmp_path / "cube.zarr"
    with LoopbackServer(scene.root) as srv:
        srv.items = scene.items(srv.url)
        result = invoke(["fetch", "--aoi", AOI, "--aoi-crs", "EPSG:32749", "--start",
                         "2022-01-01", "--end", "2022-01-31", "--out", str(out), "--catalogue",
                         srv.stac_url, "--retries", "3", "--log-json"])
    assert result.exit_code == 0, result.output
    items = [json.loads(line) for line in result.output.splitlines()
             if line.startswith('{"stage": "item"')]
    assert len(items) == 3 and all(i["ok"] and i["bytes_read"] > 0 for i in items)
    assert "failed 0" in result.output and "200 x 200 px" in result.output
    ds = validate_cube(read_cube(out).load())
    assert ds.sizes["time"] == 3
    truth = expected_ndvi(scene.s2[0])[200:400, 200:400]
    np.testing.assert_allclose(ds[NDVI][0], truth, atol=1e-6)
    # the cube is runnable by the pipeline as a cube source
    from fusecube.config import load_config

    assert load_config(None, source={"kind": "cube", "path": str(out)}).source.path == out


def test_fetch_command_reports_the_reason_without_traceback(scene, tmp_path):
    from fusecube.cli import main

    with LoopbackServer(scene.root) as srv:
        srv.items = scene.items(srv.url)
        with pytest.raises(SystemExit) as info:
            main(["fetch", "--aoi", AOI, "--aoi-crs", "EPSG:32749", "--start", "2021-01-01",
                  "--end", "2021-02-01", "--out", str(tmp_path / "x.zarr"), "--catalogue",
                  srv.stac_url, "--no-s1"])
    assert info.value.code == 2


def test_import_geotiff_command(tmp_path):
    import rasterio
    from odc.geo.geobox import GeoBox

    folder = tmp_path / "gee"
    folder.mkdir()
    gbox = GeoBox.from_bbox((110.60, -6.95, 110.62, -6.93), "EPSG:4326", resolution=0.0005)
    for p in (1, 2, 3):
        data = np.stack([np.full(gbox.shape.yx, -12.0 + p), np.full(gbox.shape.yx, -18.0),
                         np.full(gbox.shape.yx, 0.1 * p)]).astype("float32")
        data[:, 0, 0] = -np.inf
        with rasterio.open(folder / f"period_{p:02d}.tif", "w", driver="GTiff",
                           width=gbox.shape.x, height=gbox.shape.y, count=3, dtype="float32",
                           crs="EPSG:4326", transform=gbox.affine) as dst:
            dst.write(data)
    out = tmp_path / "cube.zarr"
    result = invoke(["import-geotiff", str(folder), "--out", str(out), "--start", "2023-12-20",
                     "--period-days", "12"])
    assert result.exit_code == 0, result.output
    ds = validate_cube(read_cube(out).load())
    assert [str(t)[:10] for t in ds.period_start.values] == ["2023-12-20", "2024-01-01",
                                                             "2024-01-13"]
    np.testing.assert_allclose(np.nanmedian(ds.vv[1]), 10 ** (-1.0), rtol=1e-4)
    np.testing.assert_allclose(np.nanmedian(ds[NDVI][2]), 0.3, rtol=1e-4)


def test_inspect_reads_only_the_header_of_a_remote_cog(scene):
    name = "S2_2022-01-05_B04.tif"
    with LoopbackServer(scene.root) as srv:
        info = inspect_raster(srv.file_url(name), timeout_s=5)
        sent = srv.total_bytes
        result = invoke(["inspect", srv.file_url(name), "--json"])
    assert info["width"] == info["height"] == 512 and info["crs"] == "EPSG:32749"
    assert info["resolution"] == [10.0, 10.0] and info["overviews"] == [2]
    assert info["tiled"] and info["block_shape"] == [256, 256] and info["layout"] == "COG"
    assert info["bounds"] == [400000.0, 9214880.0, 405120.0, 9220000.0]
    size = (scene.root / name).stat().st_size
    assert sent <= 65536 < size  # header chunk(s) only
    assert result.exit_code == 0 and json.loads(result.output)["dtypes"] == ["uint16"]


def test_inspect_timeout_and_errors(scene, tmp_path):
    name = "S2_2022-01-05_B04.tif"
    plan = FaultPlan(script={f"/files/{name}": [Fault.HANG] * 3}, hang_s=2.5)
    with LoopbackServer(scene.root, faults=plan) as srv:
        with pytest.raises(SourceError, match="timed out after 1 s"):
            inspect_raster(srv.file_url(name), timeout_s=1)
        with pytest.raises(SourceError, match="Check the URL"):
            inspect_raster(srv.file_url("nope.tif"), timeout_s=2)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(InputFileError, match="bad.tif cannot be opened"):
        inspect_raster(bad)


def test_run_reads_a_stac_source_with_the_settings_fetch_uses(scene, tmp_path):
    """`fusecube run` with a STAC source: the same StacSource `fetch` builds from its flags."""
    from fusecube.config import StacSource, load_config
    from fusecube.runner import run

    with LoopbackServer(scene.root) as srv:
        srv.items = scene.items(srv.url)
        source = {"kind": "stac", "aoi": AOI, "aoi_crs": "EPSG:32749", "start": "2022-01-01",
                  "end": "2022-01-31", "catalogue": srv.stac_url, "retries": 3}
        config = load_config(None, source=source, out=tmp_path / "run", mask="none",
                             report=False, block_size=64, ledger=str(tmp_path / "l.sqlite"),
                             result_gates=False)  # a month of data holds no season
        assert isinstance(config.source, StacSource)
        result = run(config)
    cube = validate_cube(read_cube(result.cube).load())
    assert result.cube == tmp_path / "run" / "input" / "cube.zarr"
    np.testing.assert_allclose(cube[NDVI][0], expected_ndvi(scene.s2[0])[200:400, 200:400],
                               atol=1e-6)
    assert read_cube(result.result)["ndvi_smooth"].sizes["x"] == 200


def test_fetch_restart_discards_a_partial_fetch_with_other_settings(scene, tmp_path, capsys):
    """A fetch that failed part-way keeps its items; other settings need --restart, which works."""
    from fusecube.cli import main

    out = tmp_path / "cube.zarr"
    parts = tmp_path / "cube.zarr.parts"

    def fetch(*extra):
        capsys.readouterr()
        try:
            main(["fetch", "--aoi", AOI, "--aoi-crs", "EPSG:32749", "--start", "2022-01-01",
                  "--end", "2022-01-31", "--out", str(out), "--catalogue", srv.stac_url,
                  "--retries", "2", *extra])
        except SystemExit as exit_:
            return exit_.code, capsys.readouterr().err
        return 0, capsys.readouterr().out

    with LoopbackServer(scene.root) as srv:
        s1_missing = [it for it in scene.items(srv.url + "/gone")
                      if it.collection_id == "sentinel-1-rtc"]
        srv.items = [it for it in scene.items(srv.url)
                     if it.collection_id != "sentinel-1-rtc"] + s1_missing
        code, text = fetch()
        assert code == 2 and "Every item of 'sentinel-1-rtc' failed" in text
        kept = sorted(p.name for p in (parts / "items").glob("*.npz"))
        assert len(kept) == 2 and not out.exists()  # the S2 items, for the rerun
        code, text = fetch("--period-days", "10")
        assert code == 2 and "--restart" in text and "Traceback" not in text
        assert sorted(p.name for p in (parts / "items").glob("*.npz")) == kept
        srv.items = scene.items(srv.url)
        code, text = fetch("--period-days", "10", "--restart")
        assert code == 0, text
        assert "items: 0/3" in text  # nothing resumed: the old items were discarded
    ds = validate_cube(read_cube(out).load())
    assert ds.sizes["time"] == 4 and not parts.exists()
    assert [str(t)[:10] for t in ds.period_start.values[:2]] == ["2022-01-01", "2022-01-11"]
