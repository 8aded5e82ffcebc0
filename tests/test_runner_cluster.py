"""A run on a real multi-process Dask cluster: `dask scheduler` and two `dask worker` processes.

Everything listens on 127.0.0.1 on ports the OS picks; every process is started here with
bounded waits and always torn down. One worker is killed (SIGKILL) mid-run: the scheduler
hands its blocks to the other worker and the run's results are bit-identical to the
single-process block runner's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fusecube.config import CubeSource, RunConfig
from fusecube.runner import Ledger, run

pytest.importorskip("distributed")

pytestmark = pytest.mark.slow

#: Seconds a worker sleeps per block (the runner's test hook), so the kill lands mid-run.
BLOCK_DELAY = "1.5"


def _dask_cli() -> str:
    beside = Path(sys.executable).with_name("dask")
    found = str(beside) if beside.exists() else shutil.which("dask")
    if not found:
        pytest.skip("the `dask` command is not installed (pip install 'fusecube[dist]')")
    return found


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture
def cluster(tmp_path):
    """``(scheduler address, [worker processes])`` of a cluster of separate processes."""
    from distributed import Client

    dask = _dask_cli()
    env = {**os.environ, "FUSECUBE_TEST_BLOCK_DELAY": BLOCK_DELAY, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    scheduler_file = tmp_path / "scheduler.json"
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []

    def start(name: str, args: list[str]) -> subprocess.Popen:
        log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([dask, *args], stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=tmp_path)
        log.close()
        procs.append(proc)
        return proc

    try:
        start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                            "--scheduler-file", str(scheduler_file)])
        _wait_for(lambda: scheduler_file.is_file() and scheduler_file.stat().st_size > 0, 60,
                  "the scheduler's file")
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        workers = [start(f"worker{i}", ["worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                                        "--no-nanny", "--no-dashboard", "--memory-limit", "1GiB",
                                        "--name", f"w{i}"])
                   for i in range(2)]
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=90)
        yield address, workers
    except BaseException:
        for path in sorted(logs.iterdir()):
            print(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        _stop(procs)


def _store_bytes(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def test_worker_killed_mid_run_results_bit_identical(cluster, small_scene, tmp_path):
    address, workers = cluster
    ledger_path = str(tmp_path / "ledger.sqlite")
    config = RunConfig(source=CubeSource(path=small_scene["cube"]), out=tmp_path / "cluster",
                       ledger=ledger_path, report=False, block_size=16, scheduler=address)
    outcome: list = []

    def target() -> None:
        try:
            outcome.append(run(config))
        except BaseException as exc:  # handed to the test below
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    ledger = Ledger(ledger_path)

    def blocks_done() -> int:
        runs = ledger.list_runs()
        return runs[0].blocks_done if runs else 0

    _wait_for(lambda: blocks_done() >= 3 or not thread.is_alive(), 240, "three finished blocks")
    done_at_kill = blocks_done()
    assert thread.is_alive(), f"the run ended before a worker could be killed: {outcome}"
    workers[0].send_signal(signal.SIGKILL)
    workers[0].wait(timeout=30)
    thread.join(timeout=300)
    assert not thread.is_alive(), "the run did not finish after a worker was killed"
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    assert done_at_kill < result.n_blocks == 9
    record = ledger.get_run(result.run_id)
    assert record.state == "done" and record.blocks_done == 9
    survivors = {e["data"].get("worker") for e in ledger.events(result.run_id, last=200)
                 if e["level"] == "block" and e["ts"] > record.created}
    assert len(survivors) >= 2  # the runner's own first block, then the cluster's workers
    single = run(config.model_copy(update={"scheduler": None, "out": tmp_path / "single"}))
    ours, theirs = _store_bytes(result.result), _store_bytes(single.result)
    assert ours.keys() == theirs.keys()
    differ = sorted(k for k in ours if ours[k] != theirs[k])
    assert not differ, _explain(differ, ours, theirs)


def _explain(differ: list[str], ours: dict, theirs: dict) -> str:
    """Which files differ and, for metadata, which attributes."""
    lines = [f"files differ: {differ[:10]}"]
    for key in differ:
        if key.endswith("zarr.json"):
            a = json.loads(ours[key]).get("attributes", {})
            b = json.loads(theirs[key]).get("attributes", {})
            lines += [f"{key} {k}: {a.get(k)!r} != {b.get(k)!r}" for k in sorted(a.keys() | b.keys())
                      if a.get(k) != b.get(k)]
    return "\n".join(lines)
