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
