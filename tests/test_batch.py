"""fusecube batch: AOI lists, per-AOI states and reasons, resume, retry, report, STAC with faults.

No internet: the STAC path runs against the loopback STAC API + COG server of
``fusecube.testing``, with injected faults (server errors for one AOI, an all-cloudy AOI, an
AOI outside coverage, dates without Sentinel-2, an invalid geometry).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from odc.geo import geom
from odc.geo.geobox import GeoBox
from typer.testing import CliRunner

from fusecube.batch import BatchConfig, aoi_geobox, batch_status, read_aois, run_batch
from fusecube.batch.work import aoi_seed
from fusecube.cube import VH, read_cube
from fusecube.errors import BatchInputError, BatchStateError
from fusecube.ml.patches.patch_set import PatchSet

START, END = "2023-11-01", "2024-04-30"
SYN = {"start": START, "end": END, "patch_size": 16, "concurrency": 2}


def write_csv(path: Path, rows: list[dict]) -> Path:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = [",".join(cols)] + [",".join(str(r.get(c, "")) for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def points(n: int, lon0: float = 110.60, lat0: float = -6.90) -> list[dict]:
    return [{"id": f"loc{i:02d}", "lon": round(lon0 + 0.02 * i, 5), "lat": lat0, "size_km": 0.32}
            for i in range(n)]


def by_id(records) -> dict:
    return {getattr(r, "aoi_id", None) or r.id: r for r in records}


# -- AOI lists -------------------------------------------------------------------------------
def test_read_aois_csv_point_bbox_and_invalid_rows(tmp_path):
    path = write_csv(tmp_path / "aois.csv", [
        {"id": "p", "lon": 110.6, "lat": -6.9, "size_km": 0.32, "max_cloud": 40},
        {"id": "box", "bbox": '"110.60,-6.95,110.61,-6.94"'},
        {"id": "swapped", "lon": -6.9, "lat": 110.6, "size_km": 1},
        {"id": "huge", "lon": 110.6, "lat": -6.9, "size_km": 5000},
        {"id": "words", "lon": "east", "lat": -6.9, "size_km": 1},
        {"id": "inverted", "bbox": '"110.61,-6.95,110.60,-6.94"'},
    ])
    aois = by_id(read_aois(path))
    assert aois["p"].problem is None and aois["p"].overrides == {"max_cloud": "40"}
    assert aois["box"].problem is None and aois["box"].lon == pytest.approx(110.605)
    assert "lon before lat" in aois["swapped"].problem
    assert "5000" in aois["huge"].problem and "split" in aois["huge"].problem
    assert "not all numbers" in aois["words"].problem
    assert aois["inverted"].problem.startswith("invalid geometry") and "inverted" in aois["inverted"].problem
    gbox = aoi_geobox(aois["p"], 10.0)
    assert gbox.shape.yx == (32, 32) and gbox.crs.epsg == 32749
    assert gbox.affine.c % 10 == 0 and gbox.affine.f % 10 == 0
    centre = geom.point(110.6, -6.9, "EPSG:4326").to_crs(gbox.crs).coords[0]
    assert abs(gbox.affine.c + 160 - centre[0]) <= 5 and abs(gbox.affine.f - 160 - centre[1]) <= 5
    box = aoi_geobox(aois["box"], 10.0)
    assert 100 <= box.shape.x <= 112 and 100 <= box.shape.y <= 112  # ~1.1 km at 10 m


def test_read_aois_geojson_and_file_errors(tmp_path):
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": "poly", "start": "2024-01-01"},
         "geometry": {"type": "Polygon", "coordinates": [[[110.6, -6.9], [110.61, -6.9],
                                                          [110.61, -6.89], [110.6, -6.9]]]}},
        {"type": "Feature", "id": "pt", "properties": {"size_km": 0.5},
         "geometry": {"type": "Point", "coordinates": [110.7, -6.95]}},
        {"type": "Feature", "properties": {"id": "bowtie"},
         "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 1], [0, 0]]]}},
    ]}
    gj = tmp_path / "aois.geojson"
    gj.write_text(json.dumps(fc))
    aois = by_id(read_aois(gj))
    assert aois["poly"].problem is None and aois["poly"].overrides == {"start": "2024-01-01"}
    assert aois["pt"].problem is None and aois["pt"].size_km == 0.5
    assert aois["bowtie"].problem.startswith("invalid geometry")
    assert "self-intersecting" in aois["bowtie"].problem or "no area" in aois["bowtie"].problem
    with pytest.raises(BatchInputError, match="appears twice"):
        read_aois(write_csv(tmp_path / "dup.csv", points(2) + points(1)))
    with pytest.raises(BatchInputError, match="no 'id' column"):
        read_aois(write_csv(tmp_path / "noid.csv", [{"lon": 1, "lat": 2, "size_km": 1}]))
    with pytest.raises(BatchInputError, match="did you mean 'max_cloud'"):
        read_aois(write_csv(tmp_path / "typo.csv", [{**points(1)[0], "max_clouds": 3}]))
    with pytest.raises(BatchInputError, match="does not exist"):
        read_aois(tmp_path / "missing.csv")


# -- synthetic batches -----------------------------------------------------------------------
def test_synthetic_batch_states_tiles_report_and_training(tmp_path):
    rows = points(4) + [
        {"id": "bad", "lon": 110.6, "lat": -95, "size_km": 0.32},
        {"id": "again", "lon": 110.60, "lat": -6.90, "size_km": 0.32},  # same as loc00
        {"id": "slow", "lon": 110.9, "lat": -6.9, "size_km": 0.32, "time_budget_s": 0.001},
        {"id": "late", "lon": 111.0, "lat": -6.9, "size_km": 0.32, "start": "2024-01-01"},
        {"id": "tiny", "lon": 111.1, "lat": -6.9, "size_km": 0.32, "patch_size": 64},
    ]
    csv = write_csv(tmp_path / "aois.csv", rows)
    seen = []
    result = run_batch(csv, BatchConfig(out=tmp_path / "b", **SYN), on_aoi=lambda r: seen.append((r.aoi_id, r.state)))
    rec = by_id(result.records)
    for i in range(4):
        r = rec[f"loc{i:02d}"]
        assert (r.state, r.attempts, r.reason) == ("done", 1, "")
        ps = PatchSet.open(r.detail_dict["outputs"]["patches"])
        assert r.tiles == ps.count == 2 * 2 * 16  # 4 tiles of 16 px x 16 periods, all valid
        assert ps.variables == ["vv", "vh"]
    assert rec["bad"].state == "failed" and "invalid geometry" in rec["bad"].reason
    assert rec["again"].state == "skipped" and "loc00" in rec["again"].reason
    assert rec["slow"].state == "failed" and "time budget of 0.001 s exceeded" in rec["slow"].reason
    assert rec["late"].state == "done" and rec["late"].tiles == 4 * 11  # its own dates: 11 periods
    # an AOI that produced zero tiles is a failure with its reason, never a silent success
    assert rec["tiny"].state == "failed" and rec["tiny"].tiles == 0
    assert rec["tiny"].reason.startswith("zero tiles: No 64 x 64 patch fits") and "--patch-size" in rec["tiny"].reason
    assert result.totals["states"] == {"pending": 0, "fetching": 0, "processing": 0, "done": 5,
                                       "failed": 3, "skipped": 1}
    # per-AOI progress: each run AOI went fetching -> processing -> done
    assert [s for a, s in seen if a == "loc01"] == ["fetching", "processing", "done"]
    # seeded by AOI id: different places get different scenes, the same id the same seed
    vh = [read_cube(rec[f"loc{i:02d}"].detail_dict["outputs"]["cube"])[VH].values for i in (0, 1)]
    assert not np.allclose(vh[0], vh[1], equal_nan=True)
    assert rec["loc00"].detail_dict["seed"] == aoi_seed("loc00") != aoi_seed("loc01")
    # the summary report: map coloured by state, counts, every reason
    svg = Path(result.report["map"]).read_text()
    assert svg.count('fill="#2e7d32"') >= 5 and 'fill="#c62828"' in svg
    assert "1 AOI(s) not drawn: invalid coordinates" in svg  # "bad" (lat -95) has no place
    md = Path(result.report["markdown"]).read_text()
    assert "5 done, 3 failed, 1 skipped" in md and "time budget" in md and "map.svg" in md
    assert "<svg" in Path(result.report["html"]).read_text()
    # the status command reads the same ledger
    cli = CliRunner().invoke(_app(), ["batch", "status", str(tmp_path / "b"), "--json"])
    assert cli.exit_code == 0, cli.output
    status = json.loads(cli.output)
    assert status["state"] == "done" and status["totals"]["tiles"] == 4 * 64 + 44
    # a training stage on the tiles: held-out AOIs beat the mean predictor
    from fusecube.batch.train import train_on_batch

    report = train_on_batch(tmp_path / "b", epochs=3, seed=0)
    assert report["aois_val"] >= 1 and report["tiles_train"] > 0
    assert report["val_loss"] < 0.8 * report["val_baseline_loss"], report
    # the same folder again without --resume is refused
    with pytest.raises(BatchStateError, match="--resume"):
        run_batch(csv, BatchConfig(out=tmp_path / "b", **SYN))
    # resuming with other settings is refused, naming them
    with pytest.raises(BatchStateError, match="patch_size"):
        run_batch(csv, BatchConfig(out=tmp_path / "b", **{**SYN, "patch_size": 8}), resume=True)


def test_retry_failed_retries_only_failures(tmp_path):
    rows = points(2) + [{"id": "slow", "lon": 110.9, "lat": -6.9, "size_km": 0.32, "time_budget_s": 0.001}]
    csv = write_csv(tmp_path / "aois.csv", rows)
    first = by_id(run_batch(csv, BatchConfig(out=tmp_path / "b", **SYN)).records)
    assert first["slow"].state == "failed"
    resumed = run_batch(csv, BatchConfig(out=tmp_path / "b", **SYN), resume=True)
    assert resumed.ran == [] and by_id(resumed.records)["slow"].state == "failed"  # resume: pending only
    write_csv(csv, points(2) + [{"id": "slow", "lon": 110.9, "lat": -6.9, "size_km": 0.32}])
    retried = run_batch(csv, BatchConfig(out=tmp_path / "b", **SYN), retry_failed=True)
    rec = by_id(retried.records)
    assert retried.ran == ["slow"]
    assert (rec["slow"].state, rec["slow"].attempts) == ("done", 2) and rec["slow"].tiles == 64
    for i in range(2):
        r, before = rec[f"loc{i:02d}"], first[f"loc{i:02d}"]
        assert (r.attempts, r.finished) == (1, before.finished)


def test_kill_mid_batch_then_resume_redoes_no_finished_aoi(tmp_path):
    csv = write_csv(tmp_path / "aois.csv", points(5))
    out = tmp_path / "b"
    code = ("from fusecube.batch import run_batch, BatchConfig\n"
            f"run_batch({str(csv)!r}, BatchConfig(out={str(out)!r}, start={START!r}, end={END!r}, "
            "patch_size=16, concurrency=1))\n")
    env = {**os.environ, "FUSECUBE_TEST_KILL_AT": "batch_aoi_done:2"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    killed = by_id(batch_status(out)["records"])
    finished = {k for k, r in killed.items() if r.state == "done"}
    assert len(finished) == 2 and all(r.state == "pending" for k, r in killed.items() if k not in finished)
    assert batch_status(out)["state"] == "crashed"
    marks = {k: (Path(killed[k].detail_dict["outputs"]["patches"]) / "metadata.json").stat().st_mtime_ns
             for k in finished}
    result = run_batch(csv, BatchConfig(out=out, start=START, end=END, patch_size=16, concurrency=2),
                       resume=True)
    rec = by_id(result.records)
    assert sorted(result.ran) == sorted(set(rec) - finished)
    assert all(r.state == "done" and r.attempts == 1 for r in rec.values())
    for k in finished:
        assert rec[k].finished == killed[k].finished
        path = Path(rec[k].detail_dict["outputs"]["patches"]) / "metadata.json"
        assert path.stat().st_mtime_ns == marks[k]
    assert batch_status(out)["state"] == "done"


def test_interrupted_aoi_is_redone_on_resume(tmp_path):
    """An AOI left 'fetching' by a killed process goes back to pending and is run again."""
    from fusecube.batch.ledger import BatchLedger
    from fusecube.runner.ledger import Ledger

    csv = write_csv(tmp_path / "aois.csv", points(2))
    out = tmp_path / "b"
    run_batch(csv, BatchConfig(out=out, **SYN))
    manifest = json.loads((out / "batch.json").read_text())
    ledger = Ledger(manifest["ledger"])
    book = BatchLedger(ledger)
    book.start_attempt(manifest["batch_id"], "loc01")  # as if killed while fetching
    ledger.dispose()
    result = run_batch(csv, BatchConfig(out=out, **SYN), resume=True)
    rec = by_id(result.records)
    assert result.ran == ["loc01"] and rec["loc01"].attempts == 3 and rec["loc01"].state == "done"
    assert rec["loc00"].attempts == 1


def _app():
    from fusecube.cli.app import app

    return app


def test_cli_batch_run_prints_reasons(tmp_path):
    csv = write_csv(tmp_path / "aois.csv", points(1) + [{"id": "bad", "lon": 300, "lat": 0, "size_km": 1}])
    res = CliRunner().invoke(_app(), ["batch", "run", str(csv), "--start", START, "--end", END,
                                      "--out", str(tmp_path / "b"), "--patch-size", "16",
                                      "--produce", "patches"])
    assert res.exit_code == 0, res.output
    assert "loc00" in res.output and "done" in res.output and "outside -180..180" in res.output
    assert "1 done, 1 failed" in res.output
    # cube not asked for: only the tiles are kept
    aoi_dir = tmp_path / "b" / "aois" / "loc00"
    assert (aoi_dir / "patches" / "metadata.json").exists() and not (aoi_dir / "input" / "cube.zarr").exists()
    status = CliRunner().invoke(_app(), ["batch", "status", str(tmp_path / "b")])
    assert status.exit_code == 0 and "loc00" in status.output and "2 AOIs: 1 done, 1 failed" in status.output
    args = ["batch", "run", str(csv), "--start", START, "--end", END, "--out", str(tmp_path / "b"),
            "--patch-size", "16", "--produce", "patches"]
    again = CliRunner().invoke(_app(), args)
    assert isinstance(again.exception, BatchStateError)
    resumed = CliRunner().invoke(_app(), [*args, "--resume"])
    assert resumed.exit_code == 0 and "2 AOIs: 1 done, 1 failed" in resumed.output
    # the batch is a run of the runner's ledger too: `fusecube status` lists it
    runs = CliRunner().invoke(_app(), ["status", "--ledger", str(tmp_path / "b" / "ledger.sqlite"), "--json"])
    assert runs.exit_code == 0 and json.loads(runs.output)[0]["id"].startswith("batch-")


@pytest.mark.slow
def test_products_per_aoi_through_the_runner(tmp_path):
    csv = write_csv(tmp_path / "aois.csv", [{"id": "p1", "lon": 110.6, "lat": -6.9, "size_km": 0.48}])
    result = run_batch(csv, BatchConfig(out=tmp_path / "b", start=START, end="2025-10-31",
                                        produce=("cube", "products"), resolution=15.0))
    r = result.records[0]
    assert r.state == "done", r.reason
    outputs = r.detail_dict["outputs"]
    assert outputs["products_run"] and "product_report" in outputs
    assert Path(outputs["product_report"]).exists()


# -- STAC with faults ------------------------------------------------------------------------
SCENE_PX = 1024
AOI_PX = 32


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """Scene A (1024 px, 10 m, COG tiles of 256 px) plus items for fault cases."""
    from fusecube.testing.cog import write_cog
    from fusecube.testing.scenes import make_scene
    from fusecube.testing.stac import make_item

    root = tmp_path_factory.mktemp("batch-cogs")
    scene = make_scene(root, size=SCENE_PX, s2_dates=("2022-01-05", "2022-01-30"),
                       s1_dates=("2022-01-09",))
    a = scene.geobox
    # scene B: 256 px, 20 km east of A; its files will answer HTTP 500
    b_box = GeoBox((256, 256), a.affine * a.affine.translation(2000, 0), a.crs)
    b_files = []
    for acq in scene.s2:
        for band, key in (("B04", "red_dn"), ("B08", "nir_dn"), ("SCL", "scl")):
            name = f"B_{acq['id']}_{band}.tif"
            write_cog(root / name, acq[key][:256, :256], b_box, nodata=0)
            b_files.append(name)
    for acq in scene.s1:
        for band in ("vv", "vh"):
            name = f"B_{acq['id']}_{band}_lin.tif"
            write_cog(root / name, acq[band][:256, :256], b_box, nodata=-32768.0)
            b_files.append(name)
    c_box = GeoBox((256, 256), a.affine * a.affine.translation(4000, 0), a.crs)
    return {"scene": scene, "root": root, "b_box": b_box, "b_files": b_files, "c_box": c_box,
            "make_item": make_item}


def _items(cat, url: str) -> list:
    scene, make_item = cat["scene"], cat["make_item"]
    items = scene.items(url)
    for acq in scene.s2:
        assets = {band: f"{url}/files/B_{acq['id']}_{band}.tif" for band in ("B04", "B08", "SCL")}
        props = {"eo:cloud_cover": acq["cloud"], "s2:processing_baseline": acq["baseline"]}
        items.append(make_item(f"B_{acq['id']}", acq["time"], cat["b_box"], assets, properties=props))
        assets = {band: f"{url}/files/C_{acq['id']}_{band}.tif" for band in ("B04", "B08", "SCL")}
        items.append(make_item(f"C_{acq['id']}", acq["time"], cat["c_box"], assets,
                               properties={**props, "eo:cloud_cover": 97.0}))
    for acq in scene.s1:
        assets = {band: f"{url}/files/B_{acq['id']}_{band}_lin.tif" for band in ("vv", "vh")}
        items.append(make_item(f"B_{acq['id']}", acq["time"], cat["b_box"], assets,
                               collection="sentinel-1-rtc"))
    return items


def _lonlat(gbox: GeoBox, row: float, col: float) -> tuple[float, float]:
    x, y = gbox.affine * (col, row)
    lon, lat = geom.point(x, y, gbox.crs).to_crs("EPSG:4326").coords[0]
    return round(lon, 7), round(lat, 7)


def stac_aois(cat) -> list[dict]:
    a = cat["scene"].geobox
    rows = []
    for k in range(15):  # one 32 px AOI in the middle of each of 15 COG tiles
        lon, lat = _lonlat(a, (k // 4) * 256 + 128, (k % 4) * 256 + 128)
        rows.append({"id": f"ok{k:02d}", "lon": lon, "lat": lat, "size_km": 0.32})
    lon, lat = _lonlat(cat["b_box"], 128, 128)
    rows.append({"id": "server_errors", "lon": lon, "lat": lat, "size_km": 0.32})
    lon, lat = _lonlat(cat["c_box"], 128, 128)
    rows.append({"id": "cloudy", "lon": lon, "lat": lat, "size_km": 0.32})
    lon, lat = _lonlat(a, -3000, 500)  # 30 km north of everything
    rows.append({"id": "outside", "lon": lon, "lat": lat, "size_km": 0.32})
    lon, lat = _lonlat(a, 3 * 256 + 128, 3 * 256 + 128)
    rows.append({"id": "no_s2_dates", "lon": lon, "lat": lat, "size_km": 0.32,
                 "start": "2023-03-01", "end": "2023-03-20"})
    rows.append({"id": "bad_geometry", "lon": lon, "lat": -123.0, "size_km": 0.32})
    return rows


def test_stac_batch_with_faults_reads_only_aoi_windows(catalogue, tmp_path):
    from fusecube.testing import Fault, FaultPlan, LoopbackServer
    from fusecube.testing.cog import header_bytes, window_bytes

    root = catalogue["root"]
    script = {f"/files/{name}": [Fault.ERROR_500] * 200 for name in catalogue["b_files"]}
    csv = write_csv(tmp_path / "aois.csv", stac_aois(catalogue))
    with LoopbackServer(root, faults=FaultPlan(script=script)) as srv:
        srv.items = _items(catalogue, srv.url)
        config = BatchConfig(out=tmp_path / "b", source="stac", start="2022-01-01", end="2022-02-05",
                             stac_url=srv.stac_url, patch_size=16, concurrency=3, retries=2,
                             retry_backoff_s=0.01, gdal_retries=1, timeout_s=5)
        result = run_batch(csv, config)
        rec = by_id(result.records)
        assert len(rec) == 20
        assert all(r.state in ("done", "failed") and (r.state == "done") == (r.reason == "")
                   for r in rec.values())
        ok = [rec[f"ok{k:02d}"] for k in range(15)]
        assert all(r.state == "done" and r.attempts == 1 for r in ok), [(r.aoi_id, r.reason) for r in ok]
        # 4 tiles of 16 px in the one period with radar (the two others have no S1: skipped)
        assert [r.tiles for r in ok] == [4] * 15
        reasons = {k: rec[k].reason for k in ("server_errors", "cloudy", "outside", "no_s2_dates",
                                              "bad_geometry")}
        assert reasons["server_errors"].startswith("server errors: all 3 of 3 items failed after 2 tries")
        assert "500" in reasons["server_errors"] and "--retry-failed" in reasons["server_errors"]
        assert "above the cloud limit 80%" in reasons["cloudy"]
        assert "outside the footprints" in reasons["outside"]
        assert "No Sentinel-2 found" in reasons["no_s2_dates"] and "widen the dates" in reasons["no_s2_dates"]
        assert reasons["bad_geometry"].startswith("invalid geometry")
        # bytes: only the AOI windows of scene A's COGs (header + touched tiles), within 1.2x
        scene_a = {p: n for p, n in srv.bytes_sent.items() if p.startswith("/files/S")}
        windows = 0
        for k in range(15):
            iy, ix = k // 4, k % 4
            for path in scene_a:
                file = root / Path(path).name
                windows += header_bytes(file) + window_bytes(
                    file, slice(iy * 256 + 112, iy * 256 + 144), slice(ix * 256 + 112, ix * 256 + 144))
        sent = sum(scene_a.values())
        whole = sum((root / Path(p).name).stat().st_size for p in scene_a)
        assert 0 < sent <= 1.2 * windows, (sent, windows)
        assert sent / 15 < 0.1 * whole  # one AOI costs about one 256 px tile of the 16, never the scene
        assert all(r.bytes_read > 0 for r in ok)
        assert sum(r.bytes_read for r in ok) >= sent  # every byte sent is accounted to some AOI
        assert "count each other's bytes" in Path(result.report["markdown"]).read_text()
        # the faults cleared, --retry-failed redoes only the failures; B now succeeds
        srv.faults.script = {}
        srv.reset_counters()
        retried = run_batch(csv, config, retry_failed=True)
        rec2 = by_id(retried.records)
        assert sorted(retried.ran) == sorted(["server_errors", "cloudy", "outside", "no_s2_dates"])
        assert rec2["server_errors"].state == "done", rec2["server_errors"].reason
        assert rec2["server_errors"].attempts == 2
        assert rec2["cloudy"].state == "failed" and rec2["cloudy"].attempts == 2
        assert all(rec2[f"ok{k:02d}"].attempts == 1 for k in range(15))
        assert not any(p.startswith("/files/S") for p, n in srv.bytes_sent.items() if n)


def test_stop_request_from_another_shell_stops_between_aois(tmp_path):
    from fusecube.errors import RunInterrupted
    from fusecube.runner.ledger import Ledger

    csv = write_csv(tmp_path / "aois.csv", points(4))
    out = tmp_path / "b"
    config = BatchConfig(out=out, **{**SYN, "concurrency": 1})

    def stop_after_first(record):
        if record.state == "done" and record.aoi_id == "loc00":
            other = Ledger(json.loads((out / "batch.json").read_text())["ledger"])
            other.request(record.batch_id, "stop")  # what `fusecube stop BATCH_ID` does
            other.dispose()

    with pytest.raises(RunInterrupted, match="stopped cleanly by a stop request"):
        run_batch(csv, config, on_aoi=stop_after_first)
    status = batch_status(out)
    states = {r.aoi_id: r.state for r in status["records"]}
    assert status["state"] == "stopped"
    assert states == {"loc00": "done", "loc01": "pending", "loc02": "pending", "loc03": "pending"}
    assert "3 pending, 1 done" in (out / "summary.md").read_text()
    result = run_batch(csv, config, resume=True)
    assert result.ran == ["loc01", "loc02", "loc03"] and result.totals["states"]["done"] == 4


def test_stac_batch_killed_mid_way_resumes_without_redoing_finished_aois(catalogue, tmp_path):
    from fusecube.testing import Fault, FaultPlan, LoopbackServer

    script = {f"/files/{name}": [Fault.ERROR_500] * 200 for name in catalogue["b_files"]}
    csv = write_csv(tmp_path / "aois.csv", stac_aois(catalogue))
    out = tmp_path / "b"
    with LoopbackServer(catalogue["root"], faults=FaultPlan(script=script)) as srv:
        srv.items = _items(catalogue, srv.url)
        options = {"out": out, "source": "stac", "start": "2022-01-01", "end": "2022-02-05",
                   "stac_url": srv.stac_url, "patch_size": 16, "concurrency": 2, "retries": 2,
                   "retry_backoff_s": 0.01, "gdal_retries": 1, "timeout_s": 5}
        code = ("from fusecube.batch import run_batch, BatchConfig\n"
                f"run_batch({str(csv)!r}, BatchConfig(**{ {**options, 'out': str(out)}!r}))\n")
        env = {**os.environ, "FUSECUBE_TEST_KILL_AT": "batch_aoi_done:8"}
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == -9, proc.stderr[-2000:]
        before = by_id(batch_status(out)["records"])
        ended = {k for k, r in before.items() if r.state in ("done", "failed")}
        assert 8 <= len(ended) < 20
        result = run_batch(csv, BatchConfig(**options), resume=True)
    rec = by_id(result.records)
    assert not set(result.ran) & ended
    assert all(r.state in ("done", "failed") and (r.state == "done") == (r.reason == "") for r in rec.values())
    for k in ended:
        assert (rec[k].attempts, rec[k].finished, rec[k].state) == (
            before[k].attempts, before[k].finished, before[k].state)
    assert sum(r.state == "done" for r in rec.values()) == 15


def test_source_mistakes_fail_the_whole_batch_before_any_aoi(tmp_path):
    from fusecube.errors import ConfigError

    csv = write_csv(tmp_path / "aois.csv", points(1))
    with pytest.raises(ConfigError, match="Unknown catalogue 'nowhere'"):
        run_batch(csv, BatchConfig(out=tmp_path / "b", source="stac", catalogue="nowhere", **SYN))
    with pytest.raises(ConfigError, match="--sign 'no_such_module:sign'"):
        run_batch(csv, BatchConfig(out=tmp_path / "b", source="stac", sign="no_such_module:sign", **SYN))
    assert not (tmp_path / "b" / "batch.json").exists()
