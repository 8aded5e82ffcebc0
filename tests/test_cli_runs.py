"""The CLI's first hour: refusals with a hint, run ids by part or folder, strict JSON, reruns.

- ``fusecube run`` without a config and a choice out of range refuse in one line, no traceback;
- run ids are accepted whole, by a unique start or end, or by the run's output (or staging)
  folder; an ambiguous part names the candidates;
- every ``--json`` output parses as strict JSON (NaN and inf are null);
- a rerun into a folder holding a finished run asks for ``--overwrite``; with it, the older
  run is listed as superseded (ledger, ``status``, API), not as done with the new run's files.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from fusecube.cli import main
from fusecube.cli.app import app
from fusecube.cli.console import print_json
from fusecube.errors import LedgerError
from fusecube.runner.ledger import Ledger


def strict_json(text: str):
    """``json.loads`` refusing NaN/Infinity, which are not JSON."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``fusecube ARGS`` in-process as the console script does: (exit code, stdout, stderr)."""
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- refusals ------------------------------------------------------------------------------
def test_run_without_a_config_refuses_with_a_hint(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "run")
    assert code == 2 and "needs a run config" in err and "fusecube demo" in err
    assert "Traceback" not in err and not (tmp_path / "fusecube-out").exists()
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("args, option", [
    (["demo", "--gapfill", "magic"], "--gapfill"),
    (["run", "x.yaml", "--gapfill", "magic"], "--gapfill"),
    (["fuse", "train", "c.zarr", "--device", "gpu0"], "--device"),
    (["fuse", "train", "c.zarr", "--arch", "transformer"], "--arch"),
    (["patches", "export", "c.zarr", "--out", "p", "--fill", "zero"], "--fill"),
    (["cube-model", "train"], "SUBCOMMAND"),
])
def test_a_choice_out_of_range_is_a_one_line_usage_error(capsys, tmp_path, monkeypatch, args,
                                                         option):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, *args)
    assert code == 2, err
    text = " ".join(err.replace("│", " ").split())  # the message, unwrapped from its box
    assert f"Invalid value for {option}" in text or f"Invalid value for '{option}'" in text
    assert "is not one of" in text or "is not a device" in text
    assert "Traceback" not in err and "ValidationError" not in err
    assert not list(tmp_path.iterdir())


def test_device_accepts_cuda_with_an_index():
    from fusecube.cli.layout import device_choice

    assert [device_choice(d) for d in ("auto", "cpu", "cuda", "cuda:1")] == [
        "auto", "cpu", "cuda", "cuda:1"]


# -- run ids -------------------------------------------------------------------------------
IDS = ("20250101-000000-aaaaaa", "20250101-000001-bbbbbb", "20250102-000000-ccaaaa")


@pytest.fixture()
def ledger(tmp_path):
    """A ledger with three runs: two into ``a`` (the newer unfinished), one into ``b``."""
    book = Ledger(str(tmp_path / "ledger.sqlite"))
    for run_id, folder in zip(IDS, ("a", "a", "b"), strict=True):
        (tmp_path / folder).mkdir(exist_ok=True)
        book.create_run(run_id=run_id, out=str(tmp_path / folder), store="", fingerprint="f",
                        config="{}", memory_limit=0, scheduler="")
    book.set_status(IDS[0], "done")
    book.set_status(IDS[1], "stopped")
    book.set_status(IDS[2], "done")
    yield book
    book.dispose()


def test_a_run_is_found_by_id_start_end_or_folder(ledger, tmp_path, monkeypatch):
    assert ledger.get_run(IDS[1]).id == IDS[1]
    assert ledger.get_run("bbbbbb").id == IDS[1]  # the end: what a user reads off the id
    assert ledger.get_run("20250102").id == IDS[2]  # the start
    assert ledger.get_run(str(tmp_path / "a")).id == IDS[1]  # the newest run into the folder
    staging = tmp_path / f".a.run-{IDS[0]}"
    staging.mkdir()
    assert ledger.get_run(str(staging)).id == IDS[0]  # its staging folder names the run
    monkeypatch.chdir(tmp_path)
    assert ledger.get_run("b").id == IDS[2]  # a relative folder
    with pytest.raises(LedgerError, match=f"matches 2 runs .*{IDS[0]}.*{IDS[1]}"):
        ledger.get_run("20250101")
    with pytest.raises(LedgerError, match=f"matches 2 runs .*{IDS[0]}.*{IDS[2]}"):
        ledger.get_run("aaaa")  # the end of one, the end of another
    with pytest.raises(LedgerError, match="No run 'zzz'"):
        ledger.get_run("zzz")
    with pytest.raises(LedgerError, match="No run"):
        ledger.get_run("%")  # a LIKE wildcard is a character, not "anything"


def test_status_and_control_commands_take_a_suffix_or_folder(ledger, tmp_path, capsys):
    url = str(tmp_path / "ledger.sqlite")
    code, out, err = cli(capsys, "status", "bbbbbb", "--ledger", url, "--json")
    assert code == 0, err
    assert strict_json(out)["id"] == IDS[1] and strict_json(out)["state"] == "stopped"
    code, out, _ = cli(capsys, "status", str(tmp_path / "b"), "--ledger", url)
    assert code == 0 and IDS[2] in out
    code, _, err = cli(capsys, "pause", str(tmp_path / "a"), "--ledger", url)
    assert code == 2 and f"Run {IDS[1]} is not running" in err  # found by folder, then refused
    code, _, err = cli(capsys, "stop", "20250101", "--ledger", url)
    assert code == 2 and "ambiguous" in err and IDS[0] in err and IDS[1] in err
    code, out, _ = cli(capsys, "status", "--ledger", url, "--json")
    assert code == 0 and {r["id"] for r in strict_json(out)} == set(IDS)


# -- JSON ----------------------------------------------------------------------------------
def test_print_json_writes_nan_and_inf_as_null(capsys):
    print_json({"a": float("nan"), "b": [np.float32(np.inf), -math.inf, 1.5], "c": np.arange(2),
                "d": np.float64(2.0), "path": tmp_path_like()})
    assert strict_json(capsys.readouterr().out) == {"a": None, "b": [None, None, 1.5],
                                                    "c": [0, 1], "d": 2.0, "path": "/x/y"}


def test_log_json_lines_are_strict_json():
    import io

    from fusecube.runner.progress import JsonLinesReporter

    stream = io.StringIO()
    reporter = JsonLinesReporter(stream)
    reporter.event("stage", "train", stage="fusion_train", step=3, total=10, loss=float("nan"),
                   eta_s=float("inf"))
    line = strict_json(stream.getvalue().splitlines()[-1])
    assert line["loss"] is None and line["eta_s"] is None and line["step"] == 3


def tmp_path_like():
    from pathlib import PurePosixPath

    return PurePosixPath("/x/y")


def test_every_json_option_is_tested_here():
    """A new ``--json`` option must come with a strict-JSON check in this file."""
    import typer

    def walk(cmd, path=()):
        if any("--json" in getattr(p, "opts", ()) for p in cmd.params):
            yield " ".join(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, (*path, name))

    assert set(walk(typer.main.get_command(app))) == {"status", "inspect", "plan", "batch run",
                                                      "batch status"}


def test_inspect_json_of_a_raster_with_nan_nodata(tmp_path, capsys):
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path / "nan.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype="float32",
                       crs="EPSG:32749", transform=from_origin(400000, 9220000, 10, 10),
                       nodata=float("nan")) as dst:
        dst.write(np.full((1, 4, 4), np.nan, dtype="float32"))
    code, out, err = cli(capsys, "inspect", str(path), "--json")
    assert code == 0, err
    info = strict_json(out)
    assert info["crs"] == "EPSG:32749" and info["nodata"] in (None, [None])


def test_plan_and_batch_json(small_scene, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"source": {"kind": "cube", "path": str(small_scene["cube"])},
                                      "out": str(tmp_path / "o")}))
    code, out, err = cli(capsys, "plan", str(config), "--json")
    assert code == 0, err
    assert strict_json(out)["pixels"] == 48 * 48
    aois = tmp_path / "aois.csv"
    aois.write_text("id,lon,lat,size_km\nloc00,110.6,-6.9,0.32\n")
    args = ["--start", "2023-11-01", "--end", "2024-01-31", "--out", str(tmp_path / "b")]
    code, out, err = cli(capsys, "batch", "run", str(aois), *args, "--produce", "cube", "--json")
    assert code == 0, err
    assert strict_json(out)["totals"]
    code, out, err = cli(capsys, "batch", "status", str(tmp_path / "b"), "--json")
    assert code == 0, err
    assert strict_json(out)["records"][0]["aoi_id"] == "loc00"


# -- reruns --------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_rerun_asks_for_overwrite_and_supersedes_the_older_run(small_scene, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from fusecube.api.app import create_app
    from fusecube.api.settings import Settings
    from fusecube.storage.run_manifest import read_run_manifest

    ledger, out = str(tmp_path / "ledger.sqlite"), tmp_path / "out"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"source": {"kind": "cube", "path": str(small_scene["cube"])},
                                      "out": str(out), "gapfill": "linear", "report": False,
                                      "ledger": ledger}))
    code, _, err = cli(capsys, "run", str(config))
    assert code == 0, err
    first = read_run_manifest(out)["run_id"]
    for extra in ([], ["--resume"]):  # nothing unfinished to resume: a new run, refused too
        code, _, err = cli(capsys, "run", str(config), *extra)
        assert code == 2 and "--overwrite" in err and first in err and "Traceback" not in err
    assert [r.id for r in Ledger(ledger).list_runs()] == [first]  # the refusal started nothing
    code, _, err = cli(capsys, "run", str(config), "--overwrite")
    assert code == 0, err
    second = read_run_manifest(out)["run_id"]
    book = Ledger(ledger)
    assert second != first and book.get_run(second).state == "done"
    older = book.get_run(first)
    assert older.state == "superseded" and second in older.message
    assert book.find_resumable(str(out), older.fingerprint) is None  # superseded is finished
    code, text, _ = cli(capsys, "status", first[-6:], "--ledger", ledger, "--json")
    assert code == 0 and strict_json(text)["state"] == "superseded"

    app_ = create_app(Settings(data_dir=tmp_path / "api", ledger=ledger, min_free_disk_mb=0))
    with TestClient(app_) as client:
        listed = {r["id"]: r for r in client.get("/runs").json()}
        assert listed[first]["state"] == "superseded" and listed[second]["state"] == "done"
        assert listed[first]["has_results"] is False and listed[second]["has_results"] is True
        assert client.get(f"/runs/{first}/products").json()["products"] == []
