"""The Dask backend writes the same bytes as the single-process runner and keeps the ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusecube.config import CubeSource, RunConfig
from fusecube.errors import ConfigError
from fusecube.runner import Ledger, run
from fusecube.runner.dask_backend import parse_scheduler

pytest.importorskip("distributed")


def store_bytes(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def test_parse_scheduler():
    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler("tcp://10.0.0.5:8786") == ("address", "tcp://10.0.0.5:8786")
    with pytest.raises(ConfigError, match="local:N"):
        parse_scheduler("cluster-please")


def test_local_cluster_equals_single_process(small_scene, tmp_path):
    def config(name, **kw):
        return RunConfig(source=CubeSource(path=small_scene["cube"]), out=tmp_path / name,
                         ledger=str(tmp_path / "l.sqlite"), report=False, block_size=16, **kw)

    single = run(config("single"))
    dask = run(config("dask", scheduler="local:2"))
    assert dask.n_blocks == single.n_blocks == 9
    assert store_bytes(dask.result) == store_bytes(single.result)
    ledger = Ledger(str(tmp_path / "l.sqlite"))
    record = ledger.get_run(dask.run_id)
    assert record.state == "done" and record.blocks_done == 9
    workers = {e["data"].get("worker") for e in ledger.events(dask.run_id, last=100)
               if e["level"] == "block"}
    assert len(workers) >= 2  # the first block in the runner, the others on the cluster


def test_tcp_scheduler_address(small_scene, tmp_path):
    """A scheduler given by address (here a threaded cluster started by the test)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                      dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        config = RunConfig(source=CubeSource(path=small_scene["cube"]), out=tmp_path / "out",
                           ledger=str(tmp_path / "l.sqlite"), report=False, block_size=32,
                           scheduler=cluster.scheduler_address)
        result = run(config)
    single = run(config.model_copy(update={"scheduler": None, "out": tmp_path / "single"}))
    assert result.n_blocks == 4
    assert store_bytes(result.result) == store_bytes(single.result)


def test_stop_request_drains_the_cluster_and_resumes(small_scene, tmp_path, monkeypatch):
    """``fusecube stop`` on a Dask run: tasks in flight finish and are recorded, then it ends."""
    import threading
    import time

    import numpy as np
    import xarray as xr

    from fusecube.errors import RunInterrupted

    monkeypatch.setenv("FUSECUBE_TEST_BLOCK_DELAY", "1.0")  # inherited by the workers
    ledger_path = str(tmp_path / "l.sqlite")
    config = RunConfig(source=CubeSource(path=small_scene["cube"]), out=tmp_path / "out",
                       ledger=ledger_path, report=False, block_size=16, scheduler="local:2")
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(_catch(run, config)))
    thread.start()
    ledger = Ledger(ledger_path)
    deadline = time.time() + 120
    while time.time() < deadline:
        records = ledger.list_runs(1)
        if records and records[0].blocks_done >= 2:
            break
        time.sleep(0.2)
    ledger.request(records[0].id, "stop")
    thread.join(120)
    assert isinstance(outcome[0], RunInterrupted), outcome
    record = ledger.get_run(records[0].id)
    assert record.state == "stopped" and 2 <= record.blocks_done < 9
    # every recorded block is really in the partial store
    monkeypatch.delenv("FUSECUBE_TEST_BLOCK_DELAY")
    reference = run(config.model_copy(update={"scheduler": None, "out": tmp_path / "ref"}))
    ref = xr.open_zarr(reference.result, consolidated=False)
    partial = xr.open_zarr(record.store, consolidated=False)
    from sqlalchemy import select

    from fusecube.runner.ledger import blocks
    with ledger.engine.connect() as conn:
        rows = conn.execute(select(blocks).where(blocks.c.run_id == record.id)).mappings().all()
    for row in rows:
        if row["status"] == "done":
            window = {"y": slice(row["y0"], row["y1"]), "x": slice(row["x0"], row["x1"])}
            np.testing.assert_array_equal(partial["ndvi_smooth"].isel(window).values,
                                          ref["ndvi_smooth"].isel(window).values)
    resumed = run(config.model_copy(update={"scheduler": None}), resume=record.id)
    assert store_bytes(resumed.result) == store_bytes(reference.result)


def _catch(func, *args):
    try:
        return func(*args)
    except Exception as exc:  # the test inspects what the thread raised
        return exc
