"""Block runner in-process: memory budget, ledger, resume bookkeeping, status, progress."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from fusecube.config import CubeSource, RunConfig
from fusecube.errors import ConfigError, LedgerError
from fusecube.runner import Ledger, run
from fusecube.runner.memory import (
    BASE_OVERHEAD,
    BYTES_PER_PIXEL_PERIOD,
    EDGE_STEP,
    block_edge_for,
    parse_memory,
)
from fusecube.runner.status import run_status
from fusecube.runner.tasks import sub_windows


def store_bytes(store: Path) -> dict[str, bytes]:
    """Every file of a zarr store, by relative path."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def make_config(scene: dict, out: Path, ledger: Path, **kw) -> RunConfig:
    return RunConfig(source=CubeSource(path=scene["cube"]), out=out, ledger=str(ledger),
                     report=False, **{"block_size": 16, "gapfill": "linear", **kw})


# ----------------------------------------------------------------------------- memory budget
@pytest.mark.parametrize("text, expected", [
    ("2GB", 2_000_000_000), ("512MiB", 512 * 1024**2), ("1.5 GiB", int(1.5 * 1024**3)),
    ("100", 100), (4096, 4096)])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["lots", "2XB", "-1GB", "0"])
def test_parse_memory_rejects(bad):
    with pytest.raises(ConfigError, match="Memory limit"):
        parse_memory(bad)


def test_block_edge_grows_with_budget_and_is_capped():
    edges = [block_edge_for(parse_memory(f"{gb}GB"), 62, 4096) for gb in (1, 2, 4, 8)]
    assert edges == sorted(edges) and len(set(edges)) == 4
    assert all(e % EDGE_STEP == 0 for e in edges)
    # the estimate of the largest block stays inside the budget
    for gb, edge in zip((1, 2, 4, 8), edges, strict=True):
        assert BASE_OVERHEAD + edge * edge * 62 * BYTES_PER_PIXEL_PERIOD <= gb * 1e9
    assert block_edge_for(parse_memory("8GB"), 62, 64) == 64
    with pytest.raises(ConfigError, match="Raise --memory-limit"):
        block_edge_for(parse_memory("200MB"), 62, 256)


def test_sub_windows_tile_the_block_exactly():
    windows = sub_windows(slice(16, 48), slice(0, 20), 3)
    covered = np.zeros((64, 64), int)
    for ys, xs in windows:
        covered[ys, xs] += 1
    assert len(windows) == 9
    assert covered[16:48, 0:20].min() == 1 and covered.sum() == 32 * 20


# ----------------------------------------------------------------------------- ledger
def test_ledger_records_and_controls(tmp_path):
    ledger = Ledger(str(tmp_path / "l.sqlite"))
    ledger.create_run(run_id="r1-abc", out="/o", store="/o/s", fingerprint="f", config="{}",
                      memory_limit=10**9, scheduler="")
    regions = [((0, 0), (slice(0, 16), slice(0, 16))), ((0, 1), (slice(0, 16), slice(16, 20)))]
    ledger.add_blocks("r1-abc", 16, regions)
    ledger.block_done("r1-abc", (0, 1), seconds=0.5, rss=1e8, worker="w")
    assert ledger.done_blocks("r1-abc") == {(0, 1)}
    record = ledger.get_run("r1")  # a unique prefix is enough
    assert (record.n_blocks, record.blocks_done, record.block_edge) == (2, 1, 16)
    assert record.alive and record.state == "running"
    ledger.request("r1-abc", "pause")
    assert ledger.control("r1-abc") == "pause"
    assert run_status(ledger, ledger.get_run("r1-abc"))["state"] == "pausing"
    with pytest.raises(LedgerError, match="No run 'nope'"):
        ledger.get_run("nope")
    # a run whose heartbeat stopped is shown as crashed
    with ledger.engine.begin() as conn:
        from sqlalchemy import update

        from fusecube.runner.ledger import runs
        conn.execute(update(runs).values(heartbeat=time.time() - 3600))
    assert ledger.get_run("r1-abc").state == "crashed"
    assert ledger.find_resumable("/o", "f").id == "r1-abc"
    assert ledger.find_resumable("/o", "other") is None


def test_bad_ledger_url_is_a_clear_error(tmp_path):
    with pytest.raises(LedgerError, match="Ledger URL"):
        Ledger("nosuchdialect://x/y")


def test_status_rate_and_eta(tmp_path):
    ledger = Ledger(str(tmp_path / "l.sqlite"))
    ledger.create_run(run_id="r2", out="/o", store="/o/s", fingerprint="f", config="{}",
                      memory_limit=10**9, scheduler="")
    ledger.add_blocks("r2", 16, [((0, i), (slice(0, 16), slice(16 * i, 16 * i + 16)))
                                 for i in range(10)])
    for i in range(4):
        ledger.block_done("r2", (0, i), seconds=1.0, rss=2e8, worker="w")
    from sqlalchemy import update

    from fusecube.runner.ledger import blocks
    t0 = time.time() - 10
    with ledger.engine.begin() as conn:  # blocks finished 2 s apart
        for i in range(4):
            conn.execute(update(blocks).where(blocks.c.ix == i).values(finished=t0 + 2 * i))
    status = run_status(ledger, ledger.get_run("r2"))
    assert status["blocks_done"] == 4 and status["blocks_total"] == 10
    assert status["rate_blocks_per_s"] == pytest.approx(0.5)
    assert status["eta_s"] == pytest.approx(12.0)


# ----------------------------------------------------------------------------- runs in-process
@pytest.fixture(scope="module")
def reference(small_scene, tmp_path_factory):
    """An uninterrupted in-process run (16 px blocks) of the 48 x 48 scene."""
    tmp = tmp_path_factory.mktemp("runner_ref")
    result = run(make_config(small_scene, tmp / "out", tmp / "ledger.sqlite"))
    return result, store_bytes(result.result)


def test_run_is_recorded_in_the_ledger(reference, tmp_path):
    result, _ = reference
    assert result.n_blocks == 9 and result.block_edge == 16
    ledger = Ledger(str(result.out.parent / "ledger.sqlite"))
    record = ledger.get_run(result.run_id)
    assert record.state == "done" and record.blocks_done == 9
    stages = {r["name"]: r["status"] for r in ledger.stage_rows(result.run_id)}
    assert {k: stages[k] for k in ("source", "mask", "screen", "blocks", "finalize")} == {
        k: "done" for k in ("source", "mask", "screen", "blocks", "finalize")}
    kinds = [e["kind"] for e in ledger.events(result.run_id, last=200)]
    assert kinds.count("done") >= 9 + 5 and kinds[-1] == "done"
    assert not list(result.out.glob(".result.zarr.partial-*"))
    run_json = json.loads((result.out / "run.json").read_text())
    assert run_json["run_id"] == result.run_id and run_json["peak_rss_mb"] > 0


def test_values_do_not_depend_on_block_size(reference, small_scene, tmp_path):
    result, _ = reference
    other = run(make_config(small_scene, tmp_path / "out", tmp_path / "l.sqlite", block_size=32))
    assert other.n_blocks == 4
    a = xr.open_zarr(result.result, consolidated=False)
    b = xr.open_zarr(other.result, consolidated=False)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_split_blocks_under_pressure_write_the_same_bytes(reference, small_scene, tmp_path,
                                                         monkeypatch):
    from fusecube.runner import execution as blocks
    from fusecube.runner import memory

    class Pressed(memory.MemoryGuard):
        def __init__(self, limit):
            super().__init__(limit, split=2)

    monkeypatch.setattr(blocks, "MemoryGuard", Pressed)
    split = run(make_config(small_scene, tmp_path / "out", tmp_path / "l.sqlite"))
    assert store_bytes(split.result) == reference[1]


def test_resume_refuses_other_config_and_finished_runs(reference, small_scene, tmp_path):
    ledger = tmp_path / "l.sqlite"
    config = make_config(small_scene, tmp_path / "out", ledger)
    done = run(config)
    with pytest.raises(LedgerError, match="already finished"):
        run(config, resume=done.run_id)
    # an unfinished run of one config blocks --resume of another in the same folder
    book = Ledger(str(ledger))
    book.set_status(done.run_id, "interrupted")
    with pytest.raises(LedgerError, match="different configuration"):
        run(make_config(small_scene, tmp_path / "out", ledger, block_size=32), resume=True)


def test_memory_limit_sets_the_block_edge(small_scene, tmp_path):
    limit = BASE_OVERHEAD + 40 * 40 * 62 * BYTES_PER_PIXEL_PERIOD  # room for 40 px -> 32 px
    result = run(make_config(small_scene, tmp_path / "out", tmp_path / "l.sqlite",
                             block_size=256, memory_limit=str(limit)))
    assert result.block_edge == 32 and result.n_blocks == 4


# ----------------------------------------------------------------------------- progress
def test_json_lines_reporter_is_hierarchical_and_quiet_heartbeats():
    from fusecube.runner.progress import JsonLinesReporter

    stream = io.StringIO()
    report = JsonLinesReporter(stream)
    report.event("run", "start", run="r")
    report.event("stage", "start", run="r", stage="blocks", total=4)
    report.event("block", "done", run="r", stage="blocks", done=1, total=4)
    report.event("run", "heartbeat", run="r", rss_mb=10.0)  # suppressed: not quiet yet
    report("synth", 1, 2)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(r["level"], r["kind"]) for r in lines] == [
        ("run", "start"), ("stage", "start"), ("block", "done"), ("stage", "progress")]
    report.last -= 10
    report.event("run", "heartbeat", run="r", rss_mb=10.0)
    assert json.loads(stream.getvalue().splitlines()[-1])["kind"] == "heartbeat"


def test_a_second_run_into_a_busy_folder_is_refused(small_scene, tmp_path):
    ledger = Ledger(str(tmp_path / "l.sqlite"))
    config = make_config(small_scene, tmp_path / "out", tmp_path / "l.sqlite")
    ledger.create_run(run_id="busy-1", out=str((tmp_path / "out").resolve()), store="s",
                      fingerprint="f", config=config.model_dump_json(), memory_limit=10**9,
                      scheduler="")  # alive: this pid, fresh heartbeat
    with pytest.raises(LedgerError, match="is writing to"):
        run(config)
    with pytest.raises(LedgerError, match="still running"):
        run(config, resume="busy-1")


def test_processes_opening_a_new_ledger_together_all_succeed(tmp_path):
    """A runner and its Dask workers create the same new SQLite ledger at the same moment."""
    import subprocess
    import sys
    import time

    # every process imports first, then waits for the same instant to open the ledger
    code = ("import sys, time; from fusecube.runner.ledger import Ledger; "
            "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); "
            "Ledger(sys.argv[1]).list_runs(); print('ok')")
    for round_ in range(3):
        path = str(tmp_path / f"ledger-{round_}.sqlite")
        start = str(time.time() + 6.0)
        procs = [subprocess.Popen([sys.executable, "-c", code, path, start], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
        results = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, [err[-500:] for _, err in results]
        assert all(out.strip() == "ok" for out, _ in results)
