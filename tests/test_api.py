"""HTTP API: every endpoint through FastAPI's TestClient, with good and bad inputs.

One tiny synthetic run (24 x 24 px, 2 x 2 blocks) is executed through ``POST /runs`` and
shared by the read-only tests; a second one (48 x 48, slowed by the runner's test hook) is
paused, resumed, stopped and resumed again through the API.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from fusecube.api import Settings, create_app, is_loopback  # noqa: E402
from fusecube.cube import NDVI, NDVI_FUSED, read_cube  # noqa: E402
from fusecube.errors import ConfigError  # noqa: E402
from fusecube.products import catalog, overlays  # noqa: E402

RUN = {"source": {"kind": "synthetic", "width": 24, "height": 24, "seed": 1}, "block_size": 16,
       "memory_limit": "1GB"}
WAIT_S = 300.0


def wait_for(client: TestClient, run_id: str, states: tuple[str, ...], *, limit_s: float = WAIT_S,
             headers: dict | None = None) -> dict:
    """Poll GET /runs/{id} until its state is one of ``states`` (bounded)."""
    deadline = time.monotonic() + limit_s
    while True:
        status = client.get(f"/runs/{run_id}", headers=headers).json()
        if status["state"] in states:
            if status["state"] not in ("running", "paused", "pausing", "stopping"):
                # the ledger says it ended: let its thread return too, so the slot is free
                while run_id in client.app.state.manager.active():
                    assert time.monotonic() < deadline, f"thread of run {run_id} did not end"
                    time.sleep(0.05)
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} did not reach {states} in {limit_s} s: {status}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """App settings, a TestClient kept open for the module, and the server folder."""
    root = tmp_path_factory.mktemp("api")
    settings = Settings(data_dir=root, min_free_disk_mb=0, max_active_runs=1,
                        max_predict_pixels=16 * 16, max_predict_times=100, max_upload_mb=2)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield {"client": client, "root": root, "app": app}


@pytest.fixture(scope="module")
def client(server) -> TestClient:
    return server["client"]


@pytest.fixture(scope="module")
def finished(client) -> dict:
    """A run submitted through the API and followed until done."""
    response = client.post("/runs", json=RUN)
    assert response.status_code == 202, response.text
    started = response.json()
    assert started["state"] in ("running", "done")
    status = wait_for(client, started["id"], ("done", "failed", "crashed"))
    assert status["state"] == "done", status
    out = Path(status["out"])
    return {"id": status["id"], "out": out, "status": status}


@pytest.fixture(scope="module")
def result(finished) -> xr.Dataset:
    return read_cube(finished["out"] / "result.zarr").load()


@pytest.fixture(scope="module")
def small_cube(finished) -> xr.Dataset:
    """An 8 x 8 x 62 piece of the run's input cube (vv, vh, ndvi, quality)."""
    cube = read_cube(finished["out"] / "input" / "cube.zarr")
    return cube[["vv", "vh", "ndvi", "ndvi_quality"]].isel(y=slice(4, 12), x=slice(4, 12)).load()


def as_json(cube: xr.Dataset) -> dict:
    def arr(name):
        values = cube[name].values.astype(float)
        return np.where(np.isfinite(values), values, None).tolist()

    return {"time": [str(np.datetime_as_string(t, unit="D")) for t in cube.time.values],
            "x": cube.x.values.tolist(), "y": cube.y.values.tolist(), "crs": "EPSG:32749",
            "vv": arr("vv"), "vh": arr("vh"), "ndvi": arr("ndvi")}


# ---------------------------------------------------------------------------------- health
def test_health_reports_version_models_ledger_disk(client):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["reasons"] == []
    assert body["version"] and body["ledger"]["reachable"] is True
    assert body["models"] == [] and body["predict_method"].startswith("baseline")
    assert body["disk"]["free_mb"] > 0


def test_health_is_503_with_reasons(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "broken.pt").write_bytes(b"not a model")
    app = create_app(Settings(data_dir=tmp_path, min_free_disk_mb=1e12))
    with TestClient(app) as c:
        response = c.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert any("free" in r for r in body["reasons"])
    assert any("broken" in r and "cannot be loaded" in r for r in body["reasons"])
    assert body["models"][0] == {**body["models"][0], "name": "broken", "loadable": False}


# ---------------------------------------------------------------------------------- runs
def test_finished_run_status(client, finished):
    status = client.get(f"/runs/{finished['id']}").json()
    assert status["state"] == "done" and status["has_results"]
    assert status["blocks_total"] == 4 and status["blocks_done"] == 4 and status["progress"] == 1.0
    assert status["eta_s"] is None
    assert status["gates"] and {"gate", "stage", "status", "message"} <= set(status["gates"][0])
    choice = status["gapfill"]  # the validated gap-fill choice, as in run.json
    assert choice["chosen"] in {s["method"] for s in choice["scores"]} and choice["verdict"]
    assert Path(status["out"]).is_relative_to(client.app.state.settings.runs_dir)
    listed = client.get("/runs").json()
    assert finished["id"] in [r["id"] for r in listed]


@pytest.mark.parametrize("path,code", [
    ("/runs/nope", 404), ("/runs/20990101-000000-abcdef", 404), ("/runs?limit=0", 422),
    ("/runs?limit=abc", 422), ("/runs/20990101-000000-abcdef/products", 404),
    ("/runs/..%2F..%2Fetc/pixel?row=0&col=0", 404),
])
def test_run_lookup_errors(client, path, code):
    response = client.get(path)
    assert response.status_code == code, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and "Traceback" not in body["detail"]


@pytest.mark.parametrize("config,needle", [
    ({"gapfil": "linear"}, "gapfil"),
    ({"gapfill": "magic"}, "gapfill"),
    ({"source": {"kind": "synthetic", "width": 4}}, "width"),
    ({"out": "../../elsewhere"}, "runs folder"),
    ({"out": "/tmp/x"}, "runs folder"),
    ({"source": {"kind": "cube", "path": "/etc/cube.zarr"}}, "data folder"),
    ({"source": {"kind": "cube", "path": "../outside.zarr"}}, "data folder"),
    ({"mask": "/etc/passwd"}, "data folder"),
    ({"ledger": "sqlite:////tmp/other.sqlite"}, "ledger"),
    ({"scheduler": "tcp://10.0.0.1:8786"}, "scheduler"),
    ({"source": {"kind": "synthetic", "width": 5000, "height": 5000}}, "larger"),
])
def test_submit_rejects_bad_configs(client, config, needle):
    response = client.post("/runs", json=config)
    assert response.status_code == 422, response.text
    assert needle in response.json()["detail"]


def test_submit_rejects_non_json(client):
    response = client.post("/runs", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert client.post("/runs", json=[1, 2]).status_code == 422


def test_submit_of_missing_cube_fails_cleanly(client, finished):
    response = client.post("/runs", json={"source": {"kind": "cube", "path": "no/such.zarr"}})
    assert response.status_code == 202  # accepted: the runner finds out and records why
    status = wait_for(client, response.json()["id"], ("failed", "done", "crashed"))
    assert status["state"] == "failed" and "does not exist" in status["message"]


def test_control_of_finished_run_is_conflict(client, finished):
    for action in ("pause", "stop", "resume"):
        response = client.post(f"/runs/{finished['id']}/{action}")
        assert response.status_code == 409, response.text
    assert client.post(f"/runs/{finished['id']}/explode").status_code == 422


def test_pause_resume_stop_resume_through_the_api(client, finished, monkeypatch):
    monkeypatch.setenv("FUSECUBE_TEST_BLOCK_DELAY", "0.6")
    config = {"source": {"kind": "synthetic", "width": 48, "height": 48, "seed": 2},
              "block_size": 16, "memory_limit": "1GB", "report": False}
    response = client.post("/runs", json=config)
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    assert client.post(f"/runs/{run_id}/pause").status_code == 200
    paused = wait_for(client, run_id, ("paused",), limit_s=120)
    assert paused["blocks_done"] < 9
    busy = client.post("/runs", json=config)  # the server's one slot is taken by the paused run
    assert busy.status_code == 429 and "max_active_runs" in busy.json()["detail"]
    assert client.post(f"/runs/{run_id}/resume").status_code == 200
    assert client.get(f"/runs/{run_id}").json()["state"] in ("running", "paused")
    assert client.post(f"/runs/{run_id}/stop").status_code == 200
    stopped = wait_for(client, run_id, ("stopped",), limit_s=120)
    assert stopped["blocks_done"] < 9 and not stopped["has_results"]
    assert client.post(f"/runs/{run_id}/pause").status_code == 409
    monkeypatch.setenv("FUSECUBE_TEST_BLOCK_DELAY", "0")
    resumed = client.post(f"/runs/{run_id}/resume")
    assert resumed.status_code == 202, resumed.text
    done = wait_for(client, run_id, ("done", "failed", "crashed"))
    assert done["state"] == "done" and done["blocks_done"] == done["blocks_total"] == 9
    assert done["has_results"]


# ---------------------------------------------------------------------------------- products
def test_products_list_and_download(client, finished):
    body = client.get(f"/runs/{finished['id']}/products").json()
    names = {p["name"]: p for p in body["products"]}
    assert {"report.html", "run.json", "phenology.nc"} <= set(names)
    assert any(n.startswith("cogs/") and n.endswith(".tif") for n in names)
    assert any(n.startswith("figures/") for n in names)
    report = client.get(names["report.html"]["url"])
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert report.content == (finished["out"] / "report.html").read_bytes()
    cog = next(n for n in names if n.startswith("cogs/"))
    tif = client.get(f"/runs/{finished['id']}/products/{cog}")
    assert tif.status_code == 200 and tif.content[:2] in (b"II", b"MM")
    nc = client.get(f"/runs/{finished['id']}/products/phenology.nc")
    assert nc.content[:4] == b"\x89HDF"


@pytest.mark.parametrize("name", [
    "../../ledger.sqlite", "..%2F..%2F..%2Fledger.sqlite", "%2e%2e/%2e%2e/%2e%2e/ledger.sqlite",
    "%2Fetc%2Fpasswd", "input/cube.zarr/zarr.json", "cogs/%2e%2e/run.json", "result.zarr/zarr.json",
    "cogs", "figures/", "report.html%00.png",
])
def test_download_refuses_anything_not_listed(client, finished, name):
    response = client.get(f"/runs/{finished['id']}/products/{name}", follow_redirects=False)
    assert response.status_code in (404, 405), response.text  # 405: normalised onto another route
    assert b"SQLite" not in response.content and b"root:" not in response.content


# ---------------------------------------------------------------------------------- maps
def test_map_catalog(client, finished, result):
    cat = client.get(f"/runs/{finished['id']}/maps").json()
    names = [layer["name"] for layer in cat["layers"]]
    assert "sos" in names and "intensity" in names
    assert cat["width"] == result.sizes["x"] and cat["height"] == result.sizes["y"]
    assert len(cat["seasons"]) == result.sizes["season"] and len(cat["years"]) == result.sizes["year"]
    west, south, east, north = cat["bounds_lonlat"]
    assert west < east and south < north


def test_sos_png_is_the_map(client, finished, result):
    from PIL import Image

    slot = int(np.argmax(np.isfinite(result["sos_doy"].values).sum(axis=(1, 2))))
    response = client.get(f"/runs/{finished['id']}/maps/sos.png", params={"index": slot})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(response.content)))
    values = result["sos_doy"].values[slot]
    assert image.shape == (*values.shape, 4)
    assert np.isfinite(values).any()
    np.testing.assert_array_equal(image[..., 3] == 255, np.isfinite(values))
    np.testing.assert_array_equal(image[..., 3] == 0, ~np.isfinite(values))
    # the colours follow the day of year: two pixels with the same DOY have the same colour
    np.testing.assert_array_equal(image[..., :3], overlays._rgba(values, "sos")[..., :3])


def test_intensity_png_classes(client, finished, result):
    from PIL import Image

    response = client.get(f"/runs/{finished['id']}/maps/intensity.png", params={"index": 0})
    image = np.asarray(Image.open(io.BytesIO(response.content)))
    counts = result["season_count"].values[0]
    for k, colour in enumerate(overlays.INTENSITY_COLORS[:4]):
        where = counts == k
        if where.any():
            rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
            assert (image[where][:, :3] == rgb).all()


@pytest.mark.parametrize("path,code", [
    ("maps/nonsense.png", 404), ("maps/sos.png?index=99", 404), ("maps/sos.png?index=-1", 422),
    ("maps/intensity.png?index=5", 404), ("maps/sos.png?index=x", 422),
])
def test_map_errors(client, finished, path, code):
    assert client.get(f"/runs/{finished['id']}/{path}").status_code == code


def test_maps_of_an_unfinished_run_are_409(client, finished, server):
    from fusecube.runner.ledger import Ledger

    ledger = Ledger(client.app.state.settings.ledger)
    empty = client.app.state.settings.runs_dir / "empty"
    empty.mkdir(exist_ok=True)
    ledger.create_run(run_id="20000101-000000-aaaaaa", out=str(empty), store="", fingerprint="x",
                      config=json.dumps({"out": str(empty)}), memory_limit=1, scheduler="")
    ledger.set_status("20000101-000000-aaaaaa", "stopped", "test")
    response = client.get("/runs/20000101-000000-aaaaaa/maps")
    assert response.status_code == 409 and "no results yet" in response.json()["detail"]
    assert client.get("/runs/20000101-000000-aaaaaa/pixel?row=0&col=0").status_code == 409


# ---------------------------------------------------------------------------------- pixel
def test_pixel_series_and_seasons(client, finished, result):
    counts = np.nan_to_num(result["season_count"].values.sum(axis=0))
    row, col = (int(v[0]) for v in np.nonzero(counts > 0))
    body = client.get(f"/runs/{finished['id']}/pixel", params={"row": row, "col": col}).json()
    assert (body["row"], body["col"]) == (row, col)
    n = result.sizes["time"]
    assert len(body["time"]) == n
    for name in ("ndvi", "ndvi_fused", "ndvi_smooth", "vv_db", "vh_db"):
        assert len(body["series"][name]) == n, name
    fused = np.array([np.nan if v is None else v for v in body["series"]["ndvi_fused"]])
    np.testing.assert_allclose(fused, result[NDVI_FUSED].values[:, row, col], atol=1e-4)
    cube = read_cube(finished["out"] / "input" / "cube.zarr")
    observed = np.array([np.nan if v is None else v for v in body["series"]["ndvi"]])
    raw = cube[NDVI].values[:, row, col].astype(float)
    screened = [body["time"].index(d) for d in body["screened"]]  # the all-zero period
    assert screened and (raw[screened] == 0).all()
    raw[screened] = np.nan  # screened out: never answered as an observation
    np.testing.assert_allclose(observed, raw, atol=1e-4)
    assert body["seasons"], "a pixel with a counted season lists it"
    season = body["seasons"][0]
    sos = np.datetime64(season["sos"])
    expected = result["sos"].values[season["index"], row, col].astype("datetime64[D]")
    assert sos == expected
    assert sum(c["count"] or 0 for c in body["season_count"]) == counts[row, col]
    # the same pixel by lon/lat and by grid x/y
    by_lonlat = client.get(f"/runs/{finished['id']}/pixel",
                           params={"lon": body["lon"], "lat": body["lat"]}).json()
    by_xy = client.get(f"/runs/{finished['id']}/pixel", params={"x": body["x"], "y": body["y"]}).json()
    assert (by_lonlat["row"], by_lonlat["col"]) == (row, col) == (by_xy["row"], by_xy["col"])


@pytest.mark.parametrize("params,code", [
    ({}, 400), ({"lon": 110.6}, 400), ({"lon": 110.6, "lat": -6.9, "row": 1, "col": 1}, 400),
    ({"lon": 0, "lat": 0}, 404), ({"row": 24, "col": 0}, 404), ({"x": 1e9, "y": 1e9}, 404),
    ({"lat": 100, "lon": 0}, 422), ({"row": -1, "col": 0}, 422), ({"x": "nan", "y": 0}, 422),
])
def test_pixel_errors(client, finished, params, code):
    response = client.get(f"/runs/{finished['id']}/pixel", params=params)
    assert response.status_code == code, response.text


# ---------------------------------------------------------------------------------- predict
def test_predict_json_uses_the_baseline_without_a_model(client, small_cube):
    from fusecube.fusion.baselines import gapfill

    response = client.post("/predict/datacube/json", json=as_json(small_cube))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["method"] == "baseline-linear" and "No fusion model" in body["note"]
    assert body["shape"] == [62, 8, 8]
    got = np.array(body[NDVI_FUSED], dtype=float)
    expected = gapfill(small_cube, method="linear")[NDVI_FUSED].values
    np.testing.assert_allclose(got, expected, atol=1e-4)
    observed = np.isfinite(small_cube[NDVI].values)
    assert (~observed).any()
    np.testing.assert_allclose(got[observed], small_cube[NDVI].values[observed], atol=1e-4)


def test_predict_datacube_takes_json_too(client, small_cube):
    direct = client.post("/predict/datacube/json", json=as_json(small_cube)).json()
    response = client.post("/predict/datacube", json=as_json(small_cube))
    assert response.status_code == 200 and response.json() == direct
    bad = client.post("/predict/datacube", json={**as_json(small_cube), "x": "abc"})
    assert bad.status_code == 422 and "x" in bad.json()["detail"]
    assert client.post("/predict/datacube", content=b"{", headers={
        "content-type": "application/json"}).status_code == 422
    other = client.post("/predict/datacube", content=b"abc", headers={"content-type": "text/csv"})
    assert other.status_code == 415 and "multipart" in other.json()["detail"]
    no_file = client.post("/predict/datacube", data={"model": "x"}, files={"other": ("a", b"b")})
    assert no_file.status_code == 422 and "'file'" in no_file.json()["detail"]
    broken = client.post("/predict/datacube", content=b"--zz\r\nnonsense",
                         headers={"content-type": "multipart/form-data; boundary=zz"})
    assert broken.status_code == 422


def test_predict_json_bad_inputs(client, small_cube):
    good = as_json(small_cube)
    cases = {
        "ragged": ({**good, "vv": good["vv"][:-1]}, 422, "ragged"),
        "bad time": ({**good, "time": ["yesterday"] * 62}, 422, "time"),
        "unsorted time": ({**good, "time": good["time"][::-1]}, 422, "increasing"),
        "uneven x": ({**good, "x": [0, 1, 3, 4, 5, 6, 7, 8]}, 422, "evenly spaced"),
        "bad crs": ({**good, "crs": "EPSG:99999999"}, 422, "CRS"),
        "sentinel": ({**good, "vv": [[[-9999.0] * 8] * 8] * 62}, 422, "sentinel"),
        "too many times": ({**good, "time": [f"2024-01-{d:02d}" for d in range(1, 32)] * 4}, 413,
                           "larger"),
        "missing ndvi": ({k: v for k, v in good.items() if k != "ndvi"}, 422, "ndvi"),
        "extra key": ({**good, "colour": 1}, 422, "colour"),
        "strings": ({**good, "vv": "abc"}, 422, "vv"),
    }
    for label, (body, code, needle) in cases.items():
        response = client.post("/predict/datacube/json", json=body)
        assert response.status_code == code, (label, response.text)
        assert needle in response.json()["detail"], (label, response.json())
    big = {**good, "x": list(range(33)), "vv": [[[0.1] * 33] * 8] * 62}
    assert client.post("/predict/datacube/json", json=big).status_code == 413


def _nc_bytes(cube: xr.Dataset, tmp_path: Path, engine: str = "h5netcdf") -> bytes:
    path = tmp_path / f"cube-{engine}.nc"
    cube.to_netcdf(path, engine=engine)
    return path.read_bytes()


def _zarr_zip(cube: xr.Dataset, tmp_path: Path) -> bytes:
    from fusecube.cube import write_cube

    store = write_cube(cube, tmp_path / "up.zarr")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in store.rglob("*"):
            if path.is_file():
                archive.write(path, path.relative_to(store.parent).as_posix())
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["netcdf4", "netcdf3", "zarr-zip"])
def test_predict_upload_roundtrip(client, small_cube, tmp_path, kind):
    from fusecube.fusion.baselines import gapfill

    data = {"netcdf4": lambda: _nc_bytes(small_cube, tmp_path),
            "netcdf3": lambda: _nc_bytes(small_cube, tmp_path, "scipy"),
            "zarr-zip": lambda: _zarr_zip(small_cube, tmp_path)}[kind]()
    response = client.post("/predict/datacube", files={"file": ("cube.bin", data)})
    assert response.status_code == 200, response.text
    assert response.headers["x-fusecube-method"] == "baseline-linear"
    out = tmp_path / "answer.nc"
    out.write_bytes(response.content)
    with xr.open_dataset(out, engine="h5netcdf") as answer:
        expected = gapfill(small_cube, method="linear")[NDVI_FUSED].values
        np.testing.assert_allclose(answer[NDVI_FUSED].values, expected, atol=1e-6)
        assert answer.odc.geobox.crs.epsg == 32749
        assert answer.odc.geobox == small_cube.odc.geobox


def test_predict_upload_bad_files(client, small_cube, tmp_path):
    cases = {
        "garbage": (b"hello world, not a cube", 415),
        "truncated nc": (_nc_bytes(small_cube, tmp_path)[:3000], 422),
        "float64": (_nc_bytes(small_cube.astype("float64"), tmp_path), 422),
        "no vh": (_nc_bytes(small_cube.drop_vars("vh"), tmp_path), 422),
        "wrong dims": (_nc_bytes(small_cube.transpose("y", "x", "time"), tmp_path), 422),
        "no crs": (_nc_bytes(small_cube.drop_vars("spatial_ref").assign_coords(
            x=small_cube.x.values, y=small_cube.y.values), tmp_path), 422),
        "too big": (_nc_bytes(xr.concat([small_cube] * 5, "x").assign_coords(
            x=np.arange(40) * 50.0), tmp_path), 413),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../evil/zarr.json", "{}")
    cases["zip slip"] = (buffer.getvalue(), 422)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "no cube here")
    cases["zip without zarr"] = (buffer.getvalue(), 422)
    for label, (data, code) in cases.items():
        response = client.post("/predict/datacube", files={"file": ("x.nc", data)})
        assert response.status_code == code, (label, response.text)
        detail = response.json()["detail"]
        assert "Traceback" not in detail and len(detail) > 20, (label, detail)
    assert client.post("/predict/datacube").status_code == 415  # no body at all


def test_upload_size_limit(client):
    big = b"\0" * (2 * 2**20 + 10)
    response = client.post("/predict/datacube", files={"file": ("big.nc", big)})
    assert response.status_code == 413 and "larger" in response.json()["detail"]

    def chunks():  # no Content-Length: counted while it streams
        for _ in range(40):
            yield b"\0" * 65536

    response = client.post("/predict/datacube/json", content=chunks(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_predict_with_a_fusion_model(tmp_path, small_cube):
    from fusecube.fusion.neural.features import Normalizer
    from fusecube.fusion.neural.model import NeuralFusion
    from fusecube.fusion.neural.train import TrainConfig

    names = ("vv_db", "vh_db")
    rng = np.random.default_rng(0)
    norm = Normalizer(names).fit(rng.normal(size=(16, 2, 62)).astype(np.float32))
    untrained = NeuralFusion(TrainConfig(radar_features=names, arch="conv", width=8)).build(norm)
    path = untrained.save(tmp_path / "models" / "tiny.pt")
    (tmp_path / "models" / "broken.pt").write_bytes(b"junk")
    app = create_app(Settings(data_dir=tmp_path, min_free_disk_mb=0))
    with TestClient(app) as c:
        health = c.get("/health").json()
        assert {m["name"]: m["loadable"] for m in health["models"]} == {"broken": False, "tiny": True}
        body = {**as_json(small_cube), "model": "tiny"}
        response = c.post("/predict/datacube/json", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["method"] == "fusion" and answer["model"] == "tiny"
        expected = NeuralFusion.load(path).predict(small_cube)[NDVI_FUSED].values
        np.testing.assert_allclose(np.array(answer[NDVI_FUSED], float), expected, atol=1e-4)
        assert c.post("/predict/datacube/json", json={**body, "model": "broken"}).status_code == 503
        assert c.post("/predict/datacube/json", json={**body, "model": "nope"}).status_code == 404


# ---------------------------------------------------------------------------------- security
def test_token_required_when_set(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, token="s3cret-token", host="0.0.0.0",
                              min_free_disk_mb=0))
    with TestClient(app) as c:
        missing = c.get("/runs")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert c.get("/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/runs", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert c.get("/runs?token=s3cret-token").status_code == 200
        assert c.post("/predict/datacube/json", json={}).status_code == 401
        assert c.get("/health").status_code == 200  # health and the viewer page stay open
        assert c.get("/").status_code == 200


def test_non_loopback_needs_a_token(tmp_path):
    with pytest.raises(ConfigError, match="token"):
        create_app(Settings(data_dir=tmp_path, host="0.0.0.0"))
    with pytest.raises(ConfigError, match="empty"):
        create_app(Settings(data_dir=tmp_path, token="  "))
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_internal_errors_hide_the_trace(server, finished, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("secret internal detail /home/user/.key")

    monkeypatch.setattr(catalog, "list_products", boom)
    response = server["client"].get(f"/runs/{finished['id']}/products")
    assert response.status_code == 500
    assert response.json()["error"] == "InternalError"
    assert "secret" not in response.text and "Traceback" not in response.text


def test_slow_requests_time_out(tmp_path, monkeypatch):
    import threading

    release = threading.Event()

    def slow(*args, **kwargs):
        release.wait(10)
        return []

    monkeypatch.setattr(catalog, "list_products", slow)
    app = create_app(Settings(data_dir=tmp_path, request_timeout_s=0.3, min_free_disk_mb=0))
    with TestClient(app) as c:
        c.app.state.ledger.create_run(run_id="20000101-000000-bbbbbb", out=str(tmp_path), store="",
                                      fingerprint="x", config="{}", memory_limit=1, scheduler="")
        response = c.get("/runs/20000101-000000-bbbbbb/products")
        release.set()
    assert response.status_code == 504 and "longer than" in response.json()["detail"]


def test_viewer_page_and_assets_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and "fusecube" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    for asset in ("/static/app.js", "/static/style.css"):
        response = client.get(asset)
        assert response.status_code == 200
        assert "https://" not in response.text and "http://" not in response.text.replace(
            "http://www.w3.org/2000/svg", "")
    assert client.get("/static/../settings.py").status_code == 404


# ---------------------------------------------------------------------------------- serve
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_refuses_open_host_without_token(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fusecube", "serve", "--host", "0.0.0.0",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "FUSECUBE_API_TOKEN": ""})
    assert proc.returncode == 2
    assert "needs a bearer token" in proc.stderr and "Traceback" not in proc.stderr


def test_serve_command_answers_on_loopback(tmp_path):
    import httpx

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fusecube", "serve", "--port", str(port),
                             "--data-dir", str(tmp_path), "--token", "tok"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        body = None
        for _ in range(240):  # bounded: up to ~60 s for the interpreter to start
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                body = response.json()
                break
            except httpx.TransportError:
                if proc.poll() is not None:
                    break
                time.sleep(0.25)
        assert body is not None, proc.stdout.read() if proc.poll() is not None else "no answer"
        assert body["auth"] is True
        assert httpx.get(f"http://127.0.0.1:{port}/runs", timeout=5).status_code == 401
        ok = httpx.get(f"http://127.0.0.1:{port}/runs", headers={"Authorization": "Bearer tok"},
                       timeout=5)
        assert ok.status_code == 200 and ok.json() == []
    finally:
        proc.terminate()
        proc.wait(timeout=30)
