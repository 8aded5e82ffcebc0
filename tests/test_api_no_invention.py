"""The API never invents values: pixels without any observation stay null, and models that do
not fit the posted cube are refused with the difference spelled out.

Rule (docs/api.md, "No invented values"): ``/predict/datacube`` answers 200 with ``ndvi_fused``
null (NaN) on every pixel without a single NDVI observation, whatever the method, and counts
them in ``unobserved_pixels`` and the note; ``/runs/{id}/pixel`` shows a never-observed pixel's
fused series only when the run's validation chose a radar method, labelled ``fused_from:
radar``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from odc.geo.geobox import GeoBox  # noqa: E402

from fusecube.api import Settings, create_app  # noqa: E402
from fusecube.config import RunConfig  # noqa: E402
from fusecube.cube import NDVI, NDVI_FUSED, NDVI_SMOOTH, TIME, VH, VV, with_geobox, write_cube  # noqa: E402
from fusecube.products.pixel import fused_source, pixel  # noqa: E402

N_TIMES, EDGE = 30, 8


def make_cube(step_days: int = 12, n_times: int = N_TIMES) -> xr.Dataset:
    """An 8 x 8 cube: S1 everywhere, a seasonal NDVI observed on about 60 % of the dates."""
    rng = np.random.default_rng(1)
    times = (np.datetime64("2024-01-06") + np.arange(n_times) * np.timedelta64(step_days, "D"))
    phase = np.linspace(0, 4 * np.pi, n_times)[:, None, None]
    ndvi = (0.45 + 0.3 * np.sin(phase) + rng.normal(0, 0.02, (n_times, EDGE, EDGE))).astype(np.float32)
    ndvi[rng.random(ndvi.shape) < 0.4] = np.nan
    vv = rng.uniform(0.02, 0.2, ndvi.shape).astype(np.float32)
    gbox = GeoBox.from_bbox((458000, 9238000, 458080, 9238080), "EPSG:32749", resolution=10)
    ds = xr.Dataset({VV: ((TIME, "y", "x"), vv), VH: ((TIME, "y", "x"), vv / 5),
                     NDVI: ((TIME, "y", "x"), ndvi)},
                    coords={TIME: times.astype("datetime64[ns]")})
    return with_geobox(ds, gbox)


def as_json(cube: xr.Dataset, **extra) -> dict:
    def arr(name):
        values = cube[name].values.astype(float)
        return np.where(np.isfinite(values), values, None).tolist()

    return {"time": [str(np.datetime_as_string(t, unit="D")) for t in cube.time.values],
            "x": cube.x.values.tolist(), "y": cube.y.values.tolist(), "crs": "EPSG:32749",
            "vv": arr(VV), "vh": arr(VH), "ndvi": arr(NDVI), **extra}


def tiny_model(folder: Path, name: str = "tiny", *, periods_of: xr.Dataset | None = None) -> Path:
    """An untrained radar network: it answers finite values wherever it is asked."""
    from fusecube.fusion.neural.compat import training_periods
    from fusecube.fusion.neural.features import Normalizer
    from fusecube.fusion.neural.model import NeuralFusion
    from fusecube.fusion.neural.train import TrainConfig

    names = ("vv_db", "vh_db")
    rng = np.random.default_rng(0)
    norm = Normalizer(names).fit(rng.normal(size=(16, 2, N_TIMES)).astype(np.float32))
    model = NeuralFusion(TrainConfig(radar_features=names, arch="conv", width=8)).build(norm)
    if periods_of is not None:  # what training on that cube would have recorded
        model.periods_ = training_periods(periods_of[TIME].values)
    return model.save(folder / "models" / f"{name}.pt")


@pytest.fixture()
def client(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, min_free_disk_mb=0))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture()
def fusion_client(tmp_path):
    tiny_model(tmp_path, periods_of=make_cube())
    app = create_app(Settings(data_dir=tmp_path, min_free_disk_mb=0))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _fused(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array(response.json()[NDVI_FUSED], dtype=float)


# ----------------------------------------------------------------------------- /predict
@pytest.mark.parametrize("with_model", [False, True], ids=["baseline", "fusion"])
def test_a_cube_without_any_observation_gets_no_values(with_model, request):
    c = request.getfixturevalue("fusion_client" if with_model else "client")
    cube = make_cube()
    blind = cube.assign({NDVI: cube[NDVI] * np.nan})
    response = c.post("/predict/datacube/json", json=as_json(blind))
    fused = _fused(response)
    body = response.json()
    assert body["method"] == ("fusion" if with_model else "baseline-linear")
    assert np.isnan(fused).all()
    assert body["unobserved_pixels"] == EDGE * EDGE
    assert f"None of the {EDGE * EDGE} pixels has an NDVI observation" in body["note"]


def test_only_the_never_observed_pixels_are_left_empty(fusion_client, tmp_path):
    from fusecube.fusion.neural.model import NeuralFusion

    cube = make_cube()
    ndvi = cube[NDVI].values.copy()
    ndvi[3] = 0.0  # a broken composite (all values exactly 0) is no observation
    ndvi[:, 2, 5] = np.nan  # never observed
    ndvi[:, 6, 1] = np.nan
    ndvi[3, 6, 1] = 0.0  # pixel (6, 1): only the broken composite
    cube = cube.assign({NDVI: (cube[NDVI].dims, ndvi)})
    response = fusion_client.post("/predict/datacube", json=as_json(cube, model="tiny"))
    fused = _fused(response)
    assert response.json()["unobserved_pixels"] == 2
    assert "2 of 64 pixels have no NDVI observation" in response.json()["note"]
    assert np.isnan(fused[:, 2, 5]).all() and np.isnan(fused[:, 6, 1]).all()
    model = NeuralFusion.load(tmp_path / "models" / "tiny.pt")
    expected = model.predict(cube)[NDVI_FUSED].values
    assert np.isfinite(expected[:, 2, 5]).all()  # what the network alone would have made up
    seen = np.ones((EDGE, EDGE), bool)
    seen[2, 5] = seen[6, 1] = False
    np.testing.assert_allclose(fused[:, seen], expected[:, seen], atol=1e-4)


def test_upload_answer_counts_the_unobserved_pixels(fusion_client, tmp_path):
    cube = make_cube()
    ndvi = cube[NDVI].values.copy()
    ndvi[:, 0, 0] = np.nan
    path = tmp_path / "cube.nc"
    cube.assign({NDVI: (cube[NDVI].dims, ndvi)}).to_netcdf(path, engine="h5netcdf")
    response = fusion_client.post("/predict/datacube", files={"file": ("cube.nc", path.read_bytes())})
    assert response.status_code == 200, response.text
    assert response.headers["X-Fusecube-Unobserved-Pixels"] == "1"
    assert "1 of 64 pixels" in response.headers["X-Fusecube-Note"]
    (tmp_path / "fused.nc").write_bytes(response.content)
    with xr.open_dataset(tmp_path / "fused.nc", engine="h5netcdf") as fused:
        values = fused[NDVI_FUSED].transpose(TIME, "y", "x").values
    assert np.isnan(values[:, 0, 0]).all() and np.isfinite(values[:, 1:, 1:]).all()


def test_a_model_trained_on_other_periods_is_refused(fusion_client):
    cube = make_cube(step_days=24, n_times=20)
    response = fusion_client.post("/predict/datacube/json", json=as_json(cube, model="tiny"))
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "FusionModelError"
    detail = response.json()["detail"]
    assert "trained on 12-day periods" in detail and "24-day periods" in detail


def test_a_model_of_another_feature_set_is_not_loadable_and_says_why(tmp_path):
    import torch

    path = tiny_model(tmp_path)
    state = torch.load(path, weights_only=True)
    state["optical_features"] = [n for n in state["optical_features"] if n != "gap_days"]
    state["state_dict"]["inp.weight"] = state["state_dict"]["inp.weight"][:, :-1]
    torch.save(state, path)
    app = create_app(Settings(data_dir=tmp_path, min_free_disk_mb=0))
    with TestClient(app, raise_server_exceptions=False) as c:
        (info,) = c.get("/health").json()["models"]
        assert info["loadable"] is False and "lacks ['gap_days']" in info["error"]
        response = c.post("/predict/datacube/json", json=as_json(make_cube(), model="tiny"))
        assert response.status_code == 503
        assert "another feature set" in response.json()["detail"]
        assert "size mismatch" not in response.json()["detail"]


# ----------------------------------------------------------------------------- /pixel
def test_fused_source_rules():
    seen = {"ndvi": [None, 0.4], NDVI_FUSED: [0.3, 0.4]}
    blind = {"ndvi": [None, None], NDVI_FUSED: [0.3, 0.4]}
    chose_fusion = {"chosen": "fusion", "verdict": "fusion beats linear"}
    assert fused_source(seen, "linear", {}) == ("observations", "")
    assert fused_source({NDVI_FUSED: [0.3]}, "fusion", chose_fusion) == (None, "")
    assert fused_source({"ndvi": [None], NDVI_FUSED: [None]}, "linear", {})[0] == "none"
    source, note = fused_source(blind, "fusion", chose_fusion)
    assert source == "radar" and "radar-only" in note and "fusion beats linear" in note
    assert fused_source(blind, "fusion", {})[0] == "none"  # not chosen by a validation
    assert fused_source(blind, "linear", {"chosen": "linear"})[0] == "none"  # not a radar method


def _run_folder(tmp_path: Path, choice: dict) -> tuple[Path, RunConfig]:
    """A finished run's folder: input cube with a never-observed pixel, result, run.json."""
    cube = make_cube()
    ndvi = cube[NDVI].values.copy()
    ndvi[:, 1, 1] = np.nan
    cube = cube.assign({NDVI: (cube[NDVI].dims, ndvi)})
    cube_path = write_cube(cube, tmp_path / "cube.zarr")
    out = tmp_path / "run"
    fused = np.full(ndvi.shape, 0.5, np.float32)  # a radar method filled every pixel
    result = cube.drop_vars([VV, VH, NDVI]).assign({NDVI_FUSED: (cube[NDVI].dims, fused, {"gapfill_method": "fusion"}),
                              NDVI_SMOOTH: (cube[NDVI].dims, fused)})
    write_cube(result, out / "result.zarr")
    (out / "run.json").write_text(json.dumps({"gapfill": choice}))
    config = RunConfig.model_validate({"source": {"kind": "cube", "path": str(cube_path)},
                                       "out": str(out)})
    return out, config


def test_pixel_never_observed_shows_radar_values_only_from_a_validated_choice(tmp_path):
    out, config = _run_folder(tmp_path / "a", {"chosen": "fusion", "verdict": "fusion chosen"})
    answer = pixel(out, config, row=1, col=1)
    assert answer["fused_from"] == "radar" and "radar-only" in answer["notes"][0]
    assert answer["series"][NDVI_FUSED][0] == 0.5
    assert pixel(out, config, row=0, col=0)["fused_from"] == "observations"

    out, config = _run_folder(tmp_path / "b", {})  # no validated choice recorded
    answer = pixel(out, config, row=1, col=1)
    assert answer["fused_from"] == "none" and "not a validated radar method" in answer["notes"][0]
    assert all(v is None for v in answer["series"][NDVI_FUSED])
    assert all(v is None for v in answer["series"][NDVI_SMOOTH])
    assert answer["seasons"] == []
    observed = pixel(out, config, row=0, col=0)
    assert observed["fused_from"] == "observations" and observed["series"][NDVI_FUSED][0] == 0.5
