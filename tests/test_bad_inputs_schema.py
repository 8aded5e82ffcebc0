"""Bad inputs, area "schema": what a run refuses at input, ``check`` refuses with the same words.

One function holds the cube schema (:func:`fusecube.cube.check_schema`): dtype float32 (NDVI
as int16 or float64, S1 as uint16 are refused), dims ``(time, y, x)`` in that order, a
datetime64 time axis that is strictly increasing and inside the Sentinel era, and a CRS.
``fusecube run`` refuses such a cube at input; ``fusecube check`` refuses it with the run's own
message (and ±inf or nodata sentinels, which a run refuses too). The other cases here hold the
rest of the output rule: every command that writes checks its output first
(:func:`fusecube.storage.atomic.prepare_output`), a failed run leaves no staging folder, a
killed one's is removed by the next run, and the result gates are named in the ledger and on
the terminal.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from catalogue import Case, Env, check, run_case, strict

from fusecube.config import CubeSource, RunConfig
from fusecube.cube import NDVI, TIME, VH, VV, read_cube, write_cube
from fusecube.errors import CubeSchemaError, OutputWriteError, ResultGateFailed
from fusecube.runner import Ledger, run
from fusecube.runner.staging import staging_dir


# ----------------------------------------------------------------------------- builders
def _run(env: Env, cube: str) -> list[str]:
    path = env.tmp / "cfg.yaml"
    path.write_text(f"source: {{kind: cube, path: '{cube}'}}\nreport: false\ngapfill: linear\n")
    return ["run", str(path)]


def _int16_ndvi(env: Env) -> str:
    """The usual integer export: NDVI x 10000 with -32768 as nodata."""
    scaled = (env.cube[NDVI] * 10000).round().fillna(-32768).astype("int16")
    return env.variant("ndvi_int16.zarr", ndvi=scaled)


def _uint16_backscatter(env: Env, name: str) -> str:
    """openEO GFMap's compression of S1: 10 ** ((dB + 83) / 20) as uint16, 0 for nodata."""
    db = 10 * np.log10(env.cube[name])
    return env.variant(f"{name}_uint16.zarr",
                       **{name: (10 ** ((db + 83) / 20)).round().fillna(0).astype("uint16")})


def _dated(env: Env, start: str, name: str) -> str:
    """The cube with its time axis (and period starts) moved to begin at ``start``."""
    shift = np.datetime64(start, "ns") - env.cube["period_start"].values[0]
    ds = env.cube.assign_coords({TIME: env.cube[TIME].values + shift,
                                 "period_start": env.cube["period_start"].values + shift})
    return env.write(ds, name)


def _swapped(env: Env) -> str:
    order = list(range(env.cube.sizes[TIME]))
    order[20], order[21] = order[21], order[20]
    return env.write(env.cube.isel({TIME: order}), "unsorted.zarr")


def _duplicated(env: Env) -> str:
    times = env.cube[TIME].values.copy()
    times[10] = times[9]
    return env.write(env.cube.drop_vars("period_start").assign_coords({TIME: times}),
                     "duplicated.zarr")


def _integer_time(env: Env) -> str:
    ds = env.cube.drop_vars("period_start").assign_coords(
        {TIME: np.arange(env.cube.sizes[TIME], dtype="int64")})
    return env.write(ds, "int_time.zarr")


def _out(env: Env) -> Path:
    """The earlier output folder the harness checks (made after the case is built)."""
    return env.tmp.parent / "out"


def _foreign(env: Env) -> Path:
    folder = _out(env) / "thesis"
    folder.mkdir(parents=True)
    (folder / "chapter1.docx").write_text("years of work")
    return folder


def _series_table(env: Env) -> Path:
    dates = pd.date_range("2023-01-05", periods=30, freq="12D")
    ndvi = 0.5 + 0.3 * np.sin(np.arange(30) / 4)
    ndvi[5:9] = np.nan
    table = pd.DataFrame({"date": dates, "NDVI": ndvi, "RVI_DESC": 0.4 + 0.2 * np.sin(np.arange(30) / 4)})
    path = env.tmp / "field.csv"
    table.to_csv(path, index=False)
    return path


def _plot_is_a_folder(env: Env) -> list[str]:
    """``fuse series`` writes its plot beside the table: there is a folder of that name."""
    (_out(env) / "fused.png").mkdir(parents=True)
    return ["fuse", "series", str(_series_table(env)), "--out", str(_out(env) / "fused.csv")]


def _demo_scene_is_a_file(env: Env) -> list[str]:
    scene = env.tmp.parent / "out-scene"  # the demo makes its scene beside --out
    scene.write_text("not a scene")
    return ["demo", "--size", "16x16", "--mask", "blocks"]


DTYPE = "variable 'ndvi' has dtype"
ERA = "before the Sentinel era"
ORDER = "time axis is not strictly increasing"
FILE = "is a file; refusing"
FOREIGN = "fusecube did not write"

CASES = [
    # --- dtype: a run refuses it at input; check refuses it with the run's message
    Case("schema_check_ndvi_float64",
         lambda e: check(e.variant("ndvi_f64.zarr", ndvi=e.cube[NDVI].astype("float64"))),
         CubeSchemaError, f"ndvi_f64.zarr: {DTYPE} float64"),
    Case("schema_run_ndvi_float64",
         lambda e: _run(e, e.variant("ndvi_f64.zarr", ndvi=e.cube[NDVI].astype("float64"))),
         CubeSchemaError, f"ndvi_f64.zarr: {DTYPE} float64"),
    Case("schema_check_ndvi_int16", lambda e: check(_int16_ndvi(e)), CubeSchemaError,
         f"ndvi_int16.zarr: {DTYPE} int16"),
    Case("schema_run_ndvi_int16", lambda e: _run(e, _int16_ndvi(e)), CubeSchemaError,
         f"ndvi_int16.zarr: {DTYPE} int16"),
    Case("schema_check_ndvi_float16",
         lambda e: strict(e.variant("ndvi_f16.zarr", ndvi=e.cube[NDVI].astype("float16"))),
         CubeSchemaError, f"ndvi_f16.zarr: {DTYPE} float16"),
    Case("schema_check_vv_uint16", lambda e: check(_uint16_backscatter(e, VV)), CubeSchemaError,
         "vv_uint16.zarr: variable 'vv' has dtype uint16"),
    Case("schema_run_vh_uint16", lambda e: _run(e, _uint16_backscatter(e, VH)), CubeSchemaError,
         "vh_uint16.zarr: variable 'vh' has dtype uint16"),
    # --- dims: (time, y, x) in that order
    Case("schema_check_dims_y_x_time",
         lambda e: check(e.variant("yxt.zarr", vv=e.cube[VV].transpose("y", "x", "time"))),
         CubeSchemaError, "yxt.zarr: variable 'vv' has dims ('y', 'x', 'time')"),
    Case("schema_check_dims_time_x_y",
         lambda e: check(e.write(e.cube.transpose("time", "x", "y"), "txy.zarr")),
         CubeSchemaError, "has dims ('time', 'x', 'y')"),
    Case("schema_run_dims_time_x_y",
         lambda e: _run(e, e.write(e.cube.transpose("time", "x", "y"), "txy.zarr")),
         CubeSchemaError, "has dims ('time', 'x', 'y')"),
    # --- time axis: sorted, unique, datetime64, inside the Sentinel era
    Case("schema_check_unsorted_times", lambda e: check(_swapped(e)), CubeSchemaError,
         f"unsorted.zarr: {ORDER} at index 21"),
    Case("schema_run_unsorted_times", lambda e: _run(e, _swapped(e)), CubeSchemaError,
         f"unsorted.zarr: {ORDER} at index 21"),
    Case("schema_check_duplicate_time", lambda e: check(_duplicated(e)), CubeSchemaError,
         f"duplicated.zarr: {ORDER} at index 10"),
    Case("schema_run_duplicate_time", lambda e: _run(e, _duplicated(e)), CubeSchemaError,
         f"duplicated.zarr: {ORDER} at index 10"),
    Case("schema_check_integer_time", lambda e: check(_integer_time(e)), CubeSchemaError,
         "int_time.zarr has no datetime64 'time' coordinate"),
    Case("schema_check_float32_cube_dated_1970",
         lambda e: check(_dated(e, "1970-01-01", "epoch.zarr")), CubeSchemaError,
         "epoch.zarr: the time axis has 62 date(s) before the Sentinel era"),
    Case("schema_run_float32_cube_dated_1970",
         lambda e: _run(e, _dated(e, "1970-01-01", "epoch.zarr")), CubeSchemaError,
         "a 1970 date is a zero read as a date"),
    Case("schema_check_cube_dated_2012", lambda e: check(_dated(e, "2012-11-01", "y2012.zarr")),
         CubeSchemaError, f"{ERA} (which starts 2014-10-01), the earliest 2012-11-07"),
    Case("schema_check_cube_half_before_the_era",
         lambda e: check(_dated(e, "2013-06-01", "half.zarr"), "--years", "2013:2015"),
         CubeSchemaError, f"{ERA} (which starts 2014-10-01), the earliest 2013-06-07"),
    Case("schema_run_cube_dated_2012", lambda e: _run(e, _dated(e, "2012-11-01", "y2012.zarr")),
         CubeSchemaError, f"{ERA} (which starts 2014-10-01), the earliest 2012-11-07"),
    Case("schema_fuse_train_on_a_cube_dated_1970",
         lambda e: ["fuse", "train", _dated(e, "1970-01-01", "epoch.zarr"), "--out",
                    str(e.tmp / "model.pt")], CubeSchemaError, f"epoch.zarr: the time axis has 62 date(s) {ERA}"),
    # --- values a run refuses (check's report counts them; without --strict it exits non-zero)
    Case("schema_check_minus_inf_without_strict",
         lambda e: check(e.variant("inf.zarr", ndvi=e.cube[NDVI].fillna(-np.inf))),
         CubeSchemaError, "inf.zarr: variable 'ndvi' contains +/-inf"),
    Case("schema_check_sentinel_without_strict",
         lambda e: check(e.variant("sentinel.zarr", vh=e.cube[VH].where(e.cube[VH] > 0.01, -9999.0))),
         CubeSchemaError, "sentinel.zarr: variable 'vh' contains a nodata sentinel"),
    Case("schema_run_minus_inf",
         lambda e: _run(e, e.variant("inf.zarr", ndvi=e.cube[NDVI].fillna(-np.inf))),
         CubeSchemaError, "inf.zarr: variable 'ndvi' contains +/-inf"),
    # --- the output rule on the remaining writers: refused before any work
    Case("schema_out_synth_out_is_a_file",
         lambda e: ["synth", "--size", "16x16", "--out", str(_out(e) / "report.html")],
         OutputWriteError, FILE),
    Case("schema_out_synth_into_a_foreign_folder",
         lambda e: ["synth", "--size", "16x16", "--out", str(_foreign(e))], OutputWriteError,
         FOREIGN),
    Case("schema_out_demo_scene_is_a_file", _demo_scene_is_a_file, OutputWriteError,
         "out-scene is a file"),
    Case("schema_out_paddy_out_is_a_file",
         lambda e: ["paddy", str(e.scene["cube"]), "--out", str(_out(e) / "report.html")],
         OutputWriteError, FILE),
    Case("schema_out_paddy_into_a_foreign_folder",
         lambda e: ["paddy", str(e.scene["cube"]), "--out", str(_foreign(e))], OutputWriteError,
         FOREIGN),
    Case("schema_out_fuse_train_out_is_a_folder",
         lambda e: ["fuse", "train", str(e.scene["cube"]), "--out", str(_out(e) / "quality")],
         OutputWriteError, "quality is a folder; refusing"),
    Case("schema_out_fuse_train_out_under_a_file",
         lambda e: ["fuse", "train", str(e.scene["cube"]), "--out",
                    str(_out(e) / "report.html" / "model.pt")], OutputWriteError,
         "report.html is a file, not a folder"),
    Case("schema_out_fuse_series_out_under_a_file",
         lambda e: ["fuse", "series", str(_series_table(e)), "--out",
                    str(_out(e) / "run.json" / "fused.csv")], OutputWriteError,
         "run.json is a file, not a folder"),
    Case("schema_out_fuse_series_plot_is_a_folder", _plot_is_a_folder, OutputWriteError,
         "fused.png is a folder; refusing"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, catalogue_base, tmp_path, capsys, monkeypatch):
    run_case(case, catalogue_base, tmp_path, capsys, monkeypatch)
    assert not list(tmp_path.glob(".out.run-*")), "a failed run left its staging folder"


def test_check_and_run_refuse_with_one_message(catalogue_base, tmp_path, monkeypatch):
    """The issue's example: a float32 cube dated 1970 passed both; now both stop, same words."""
    from fusecube.quality.cube_check import check_cube

    monkeypatch.setenv("FUSECUBE_LEDGER", str(tmp_path / "ledger.sqlite"))
    env = Env(tmp_path, catalogue_base[0], catalogue_base[1])
    cube = Path(_dated(env, "1970-01-01", "epoch.zarr"))
    with pytest.raises(CubeSchemaError) as checked:
        check_cube(cube)
    with pytest.raises(CubeSchemaError) as ran:
        run(RunConfig(source=CubeSource(path=cube), out=tmp_path / "out", report=False,
                      gapfill="linear"))
    assert str(checked.value) == str(ran.value)
    assert "1970-01-07" in str(ran.value) and "write the cube again" in str(ran.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.run-*"))


def test_a_clean_cube_still_passes_check(catalogue_base, capsys):
    from fusecube.cli import main

    with pytest.raises(SystemExit) as info:
        main(["check", str(catalogue_base[0]["cube"])])
    assert info.value.code in (0, None)
    assert "gates" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "work"), [
    (lambda e, out: ["synth", "--size", "16x16", "--out", str(out)],
     "fusecube.sources.synthetic.writer.synthesize"),
    (lambda e, out: ["paddy", str(e.scene["cube"]), "--out", str(out)],
     "fusecube.products.paddy_mapping.map_paddy"),
    (lambda e, out: ["fuse", "train", str(e.scene["cube"]), "--out", str(out / "model.pt")],
     "fusecube.fusion.neural.cube_training.train_on_cube"),
    (lambda e, out: ["fuse", "series", str(_series_table(e)), "--out", str(out / "fused.csv")],
     "fusecube.fusion.guided.series_table.fuse_series_table"),
], ids=["synth", "paddy", "fuse-train", "fuse-series"])
def test_refused_before_any_work(argv, work, catalogue_base, tmp_path, monkeypatch, capsys):
    """An output that is an ordinary file: refused before the command's work, the file kept."""
    from fusecube.cli import main

    env = Env(tmp_path / "inputs", *catalogue_base)
    env.tmp.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me")

    def must_not_run(*args, **kwargs):
        raise AssertionError(f"{work} ran before the output was checked")

    monkeypatch.setattr(work, must_not_run)
    with pytest.raises(SystemExit) as info:
        main(argv(env, target))
    assert type(info.value.__context__) is OutputWriteError
    assert target.read_text() == "keep me"
    assert "error:" in capsys.readouterr().err


# ----------------------------------------------------------------------------- staging folders
def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture
def empty_cube(catalogue_base, tmp_path) -> Path:
    """The scene without any NDVI observation: a run of it fails the result gates."""
    cube = catalogue_base[1]
    return write_cube(cube.assign({NDVI: cube[NDVI] * np.nan}), tmp_path / "empty.zarr")


def _config(cube: Path, out: Path, ledger: Path, **kwargs) -> RunConfig:
    return RunConfig(source=CubeSource(path=cube), out=out, gapfill="linear", ledger=str(ledger),
                     **{"report": False, **kwargs})


def test_a_failed_run_removes_its_staging_folder(catalogue_base, tmp_path, monkeypatch):
    """A run failing after its blocks (a product writer crashes): no staging left, out kept."""
    import fusecube.products.writers as writers

    cube, ledger, out = catalogue_base[0]["cube"], tmp_path / "l.sqlite", tmp_path / "out"
    run(_config(cube, out, ledger))
    before = _tree(out)
    seen = {}

    def crash(result, *args, **kwargs):
        seen["staged"] = sorted(p.name for p in Path(result.out).iterdir())
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(writers, "write_products", crash)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run(_config(cube, out, ledger, report=True))
    assert "result.zarr" in seen["staged"]  # the staging folder held the run's results
    assert not list(tmp_path.glob(".out.*")), "the failed run left its staging folder"
    assert _tree(out) == before
    failed = Ledger(str(ledger)).list_runs(1)[0]
    assert failed.status == "failed" and "disk on fire" in failed.message


@pytest.mark.slow
def test_staging_of_killed_or_superseded_runs_goes_on_the_next_run(
        catalogue_base, empty_cube, tmp_path):
    cube, ledger, out = catalogue_base[0]["cube"], tmp_path / "l.sqlite", tmp_path / "out"
    run(_config(cube, out, ledger))
    before = _tree(out)
    with pytest.raises(ResultGateFailed):  # resumable: its results stay to be inspected
        run(_config(empty_cube, out, ledger))
    failed = Ledger(str(ledger)).list_runs(1)[0]
    assert (staging_dir(out, failed.id) / "result.zarr").exists()
    killed = staging_dir(out, "20250101-000000-0a0b0c")  # what a SIGKILLed run leaves
    (killed / "input").mkdir(parents=True)
    (killed / "input" / "half.bin").write_bytes(b"\0" * 64)
    assert _tree(out) == before

    # resuming the failed run (relaxed) removes the killed run's folder, keeps its own work
    resumed = run(_config(empty_cube, out, ledger, result_gates=False), resume=True)
    assert resumed.run_id == failed.id and resumed.blocks_resumed == resumed.n_blocks
    assert not killed.exists() and not list(tmp_path.glob(".out.*"))

    # a new run removes what a killed one left, whatever its id
    killed.mkdir()
    (killed / "run.json").write_text("{}")
    run(_config(cube, out, ledger))
    assert not killed.exists() and not list(tmp_path.glob(".out.*"))


@pytest.mark.slow
def test_result_gates_are_named_in_the_ledger_and_the_final_message(
        catalogue_base, empty_cube, tmp_path, monkeypatch, capsys):
    from fusecube.cli import main

    ledger = tmp_path / "l.sqlite"
    monkeypatch.setenv("FUSECUBE_LEDGER", str(ledger))
    good = run(_config(catalogue_base[0]["cube"], tmp_path / "good", ledger))
    passed = sum(g["status"] == "pass" for g in good.result_gates)
    assert passed >= 5
    message = Ledger(str(ledger)).get_run(good.run_id).message
    assert f"result gates: {passed} passed" in message

    config = tmp_path / "empty.yaml"
    config.write_text(f"source: {{kind: cube, path: '{empty_cube}'}}\nreport: false\n"
                      "gapfill: linear\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["run", str(config), "--out", str(tmp_path / "relaxed"), "--allow-empty-results"])
    assert info.value.code in (0, None)
    stdout = capsys.readouterr().out
    line = next(x for x in stdout.splitlines() if x.startswith("result gates:"))
    assert "relaxed, published anyway: ndvi_fused_all_nan" in line
    summary = json.loads((tmp_path / "relaxed" / "run.json").read_text())
    row = Ledger(str(ledger)).get_run(summary["run_id"])
    assert "relaxed, published anyway: ndvi_fused_all_nan" in row.message


def test_gates_line_counts_and_names():
    from fusecube.quality.result_gates import gates_line
    from fusecube.quality.results import GateResult

    gates = [GateResult("a", "result", "pass", 1, 0), GateResult("b", "result", "skip"),
             GateResult("paddy_without_season", "result", "warn", 0.93, 0.5)]
    assert gates_line(gates) == ("result gates: 1 passed, 1 skipped; relaxed, published anyway: "
                                 "paddy_without_season (0.93 vs 0.5)")
    assert gates_line([g.to_dict() for g in gates[:1]]) == "result gates: 1 passed"
    assert gates_line([]) == "result gates: not run"


def test_read_cube_keeps_the_source_named_in_schema_errors(catalogue_base, tmp_path):
    from fusecube.cube import check_schema

    path = write_cube(catalogue_base[1].assign({NDVI: catalogue_base[1][NDVI].astype("float64")}),
                      tmp_path / "named.zarr")
    with pytest.raises(CubeSchemaError, match=r"^Cube .*named\.zarr: variable 'ndvi'"):
        check_schema(read_cube(path))
    with pytest.raises(CubeSchemaError, match=r"^Cube elsewhere\.zarr: variable 'ndvi'"):
        check_schema(read_cube(path).load(), source="elsewhere.zarr")
