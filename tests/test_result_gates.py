"""Result gates, the run's staging folder and its manifest: nothing lost, nothing mixed.

A run writes beside its output folder and swaps in only once its results passed the result
gates and every product is written; a run killed or failed on the way leaves the previous
output as it was, the API lists a run's products from its own manifest, and a resumed run
leaves no temporary file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from fusecube.config import CubeSource, RunConfig
from fusecube.cube import NDVI, NDVI_FUSED, NDVI_SMOOTH, PADDY_MASK, read_cube, write_cube
from fusecube.errors import OutputWriteError, ResultGateFailed
from fusecube.quality.result_gates import check_results, result_gates
from fusecube.quality.results import GateThresholds
from fusecube.runner import Ledger, run
from fusecube.runner.staging import staging_dir
from fusecube.storage.atomic import atomic_path, prepare_output, remove_leftovers
from fusecube.storage.run_manifest import read_run_manifest


def tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def by_name(gates) -> dict:
    return {g.gate: g for g in gates}


# -- the gates on small result datasets ------------------------------------------------------
def result_like(*, ndvi_scale: float = 1.0, seasons: bool = True, mask: bool = True,
                shift_days: int = 0) -> xr.Dataset:
    """A 2-year, 4 x 5 px result: NDVI layers, season maps, season counts and a paddy mask."""
    times = pd.date_range("2023-11-07", periods=24, freq="30D").values
    rng = np.random.default_rng(1)
    ndvi = (0.4 + 0.3 * rng.random((24, 4, 5))).astype("float32") * ndvi_scale
    sos = np.full((2, 4, 5), np.datetime64("NaT"), "datetime64[ns]")
    count = np.zeros((2, 4, 5), "float32")
    if seasons:
        sos[0] = times[3] + np.timedelta64(shift_days, "D")
        count[0] = 1
    ds = xr.Dataset({NDVI_FUSED: (("time", "y", "x"), ndvi),
                     NDVI_SMOOTH: (("time", "y", "x"), ndvi.copy()),
                     "sos": (("season", "y", "x"), sos),
                     "season_count": (("year", "y", "x"), count)},
                    coords={"time": times, "year": [2023, 2024], "season": [0, 1]})
    if mask:
        paddy = np.zeros((4, 5), "uint8")
        paddy[:2] = 1
        ds[PADDY_MASK] = (("y", "x"), paddy)
    return ds


def test_a_plausible_result_passes_every_gate():
    gates = result_gates(result_like())
    assert {g.gate for g in gates} == {"ndvi_fused_all_nan", "ndvi_fused_range",
                                       "ndvi_smooth_all_nan", "ndvi_smooth_range",
                                       "paddy_without_season", "season_dates_all_nan",
                                       "season_dates_range"}
    assert all(g.status == "pass" for g in gates), [g.message for g in gates]


def test_ndvi_outside_its_physical_range_fails_naming_the_values():
    gate = by_name(result_gates(result_like(ndvi_scale=10000)))["ndvi_fused_range"]
    assert gate.status == "fail" and gate.threshold == 1.0 and gate.value > 4000
    assert "outside the physical NDVI range [-1, 1]" in gate.message


def test_all_nan_layers_fail():
    ds = result_like()
    ds[NDVI_SMOOTH] = ds[NDVI_SMOOTH].where(ds[PADDY_MASK] == 0)  # NaN over the paddy only
    gates = by_name(result_gates(ds))
    assert gates["ndvi_smooth_all_nan"].status == "fail"
    assert gates["ndvi_fused_all_nan"].status == "pass"


def test_share_of_paddy_without_season_against_the_threshold():
    ds = result_like()
    ds["season_count"][0, 0, :3] = 0  # 3 of 10 paddy pixels lose their season
    gate = by_name(result_gates(ds))["paddy_without_season"]
    assert gate.status == "pass" and gate.value == pytest.approx(0.3) and gate.pixels == 3
    gate = by_name(result_gates(ds, GateThresholds(max_paddy_without_season=0.25)))[
        "paddy_without_season"]
    assert gate.status == "fail" and "3 of 10 paddy pixels (30.0 %)" in gate.message


def test_without_a_mask_only_a_result_without_any_season_fails():
    ds = result_like(mask=False)
    ds["season_count"][0, :3] = 0  # 15 of 20 pixels without season: non-rice land has none
    assert by_name(result_gates(ds))["paddy_without_season"].status == "pass"
    gates = by_name(result_gates(result_like(mask=False, seasons=False)))
    assert gates["paddy_without_season"].status == "fail"
    assert gates["season_dates_all_nan"].status == "fail"


def test_season_dates_outside_the_series_fail():
    gate = by_name(result_gates(result_like(shift_days=-400)))["season_dates_range"]
    assert gate.status == "fail" and gate.message.endswith("sos 2023-01-01 to 2023-01-01")


def test_check_results_raises_or_records_warnings(tmp_path):
    path = write_cube(result_like(seasons=False), tmp_path / "result.zarr")
    with pytest.raises(ResultGateFailed, match="paddy_without_season.*--allow-empty-results"):
        check_results(path, keep="The previous output in X is kept. ")
    relaxed = by_name(check_results(path, enforce=False))
    assert relaxed["paddy_without_season"].status == "warn"
    assert relaxed["paddy_without_season"].action.startswith("published anyway")


# -- the output rule -----------------------------------------------------------------------
def test_prepare_output_judges_by_kind(tmp_path):
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    (run_folder / "run.json").write_text("{}")
    assert prepare_output(run_folder, kind="run") == run_folder
    with pytest.raises(OutputWriteError, match="holds none of zarr.json"):
        prepare_output(run_folder, kind="store")  # a run folder is not a cube to replace
    with pytest.raises(OutputWriteError, match="is a folder"):
        prepare_output(run_folder, kind="file")
    with pytest.raises(OutputWriteError, match="did not write"), atomic_path(run_folder,
                                                                             folder=True):
        pass  # a plain atomic write (write_cube ...) never replaces a run folder either
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OutputWriteError, match="a_file is a file, not a folder"):
        prepare_output(tmp_path / "a_file" / "deeper" / "cube.zarr", kind="store")
    assert prepare_output(tmp_path / "new" / "deeper" / "cube.zarr", kind="store")
    assert not (tmp_path / "new").exists()  # prepare_output creates nothing
    assert not [p for p in tmp_path.rglob(".fusecube-probe-*")]


def test_remove_leftovers_keeps_everything_else(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / ".map.tmp-0123abcd.png").write_text("half")
    (tmp_path / ".result.old-89abcdef.zarr").mkdir()
    (tmp_path / ".result.zarr.partial-20250101-000000-abcdef").mkdir()
    (tmp_path / "figures" / "map.png").write_text("whole")
    assert sorted(remove_leftovers(tmp_path)) == [".map.tmp-0123abcd.png",
                                                  ".result.old-89abcdef.zarr"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        ".result.zarr.partial-20250101-000000-abcdef", "figures", "map.png"]


# -- runs ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cubes(small_scene, tmp_path_factory):
    """A good cube and one whose NDVI holds no observation (a run of it has no season)."""
    tmp = tmp_path_factory.mktemp("gate_cubes")
    cube = read_cube(small_scene["cube"]).load()
    return {"good": small_scene["cube"],
            "empty": write_cube(cube.assign({NDVI: cube[NDVI] * np.nan}), tmp / "empty.zarr")}


def test_a_run_failing_its_gates_keeps_the_previous_output_and_relaxing_publishes(
        cubes, tmp_path):
    ledger = str(tmp_path / "ledger.sqlite")
    out = tmp_path / "out"
    good = run(RunConfig(source=CubeSource(path=cubes["good"]), out=out, report=False,
                         gapfill="linear", ledger=ledger))
    assert good.result == out / "result.zarr"
    assert json.loads((out / "run.json").read_text())["out"] == str(out)
    assert {g["status"] for g in good.result_gates} == {"pass"}
    before = tree_hashes(out)

    bad = RunConfig(source=CubeSource(path=cubes["empty"]), out=out, report=False,
                    gapfill="linear", ledger=ledger, block_size=16)
    with pytest.raises(ResultGateFailed, match=f"The previous output in {out} is kept") as info:
        run(bad)
    assert info.value.gate == "ndvi_fused_all_nan"
    assert tree_hashes(out) == before
    failed = Ledger(ledger).list_runs(1)[0]
    assert failed.status == "failed" and (staging_dir(out, failed.id) / "result.zarr").exists()

    # relaxed on resume: the blocks are not computed again, the results are published
    relaxed = run(bad.model_copy(update={"result_gates": False}), resume=True)
    assert relaxed.run_id == failed.id and relaxed.blocks_resumed == relaxed.n_blocks == 9
    summary = json.loads((out / "run.json").read_text())
    statuses = {g["gate"]: g["status"] for g in summary["result_gates"]}
    assert statuses["ndvi_fused_all_nan"] == "warn"
    assert read_run_manifest(out)["run_id"] == failed.id
    assert not staging_dir(out, failed.id).exists()


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusecube", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def test_killed_during_products_leaves_the_finished_run_and_resume_cleans_up(cubes, tmp_path):
    """A run into a folder holding a finished run, SIGKILLed while writing its products."""
    from fastapi.testclient import TestClient

    from fusecube.api.app import create_app
    from fusecube.api.settings import Settings

    ledger = tmp_path / "ledger.sqlite"
    env = {"FUSECUBE_LEDGER": str(ledger)}
    out = tmp_path / "out"
    configs = []
    for name, lam in (("first", None), ("second", 10.0)):
        config = {"source": {"kind": "cube", "path": str(cubes["good"])}, "out": str(out),
                  "gapfill": "linear"} | ({"smooth": {"lam": lam}} if lam else {})
        configs.append(tmp_path / f"{name}.yaml")
        configs[-1].write_text(yaml.safe_dump(config))
    done = cli(env, "run", str(configs[0]))
    assert done.returncode == 0, done.stderr[-2000:]
    first = read_run_manifest(out)["run_id"]
    before = tree_hashes(out)

    killed = cli(env | {"FUSECUBE_TEST_KILL_AT": "products_written:1"}, "run", str(configs[1]),
                 "--overwrite")  # a rerun into a finished run must ask for it
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    second = next(r.id for r in Ledger(str(ledger)).list_runs(5) if r.id != first)
    work = staging_dir(out, second)
    assert (work / "phenology.nc").exists() and not (work / "report.html").exists()
    assert tree_hashes(out) == before  # nothing of the killed run in the finished one
    # writes cut short inside the staging folder, and a stray file in the finished run
    (work / ".phenology.tmp-0123abcd.nc").write_text("half a file")
    (work / "figures" / ".map_planting.tmp-89abcdef.png").write_text("half a figure")
    (out / "figures" / "stray.png").write_bytes(b"not a product of any run")

    app = create_app(Settings(data_dir=tmp_path / "api", ledger=str(ledger),
                              min_free_disk_mb=0))
    with TestClient(app) as client:
        listed = client.get(f"/runs/{first}/products").json()["products"]
        manifest = read_run_manifest(out)["files"]
        assert {p["name"] for p in listed} <= set(manifest)
        assert "report.html" in {p["name"] for p in listed}
        assert "figures/stray.png" not in {p["name"] for p in listed}
        assert client.get(f"/runs/{first}/products/figures/stray.png").status_code == 404
        assert client.get(f"/runs/{second}/products").json()["products"] == []

        resumed = cli(env, "run", str(configs[1]), "--resume")
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert read_run_manifest(out)["run_id"] == second
        assert not [p.name for p in out.rglob(".*")], "temporary files left in the run folder"
        assert not [p.name for p in tmp_path.glob(".out.*")], "staging or old folders left"
        assert not (out / "figures" / "stray.png").exists()  # the old folder went as a whole
        names = {p["name"] for p in client.get(f"/runs/{second}/products").json()["products"]}
        assert "report.html" in names and names <= set(read_run_manifest(out)["files"])
        assert client.get(f"/runs/{first}/products").json()["products"] == []
        report = client.get(f"/runs/{second}/products/report.html")
        assert report.status_code == 200 and b"fusecube run report" in report.content
