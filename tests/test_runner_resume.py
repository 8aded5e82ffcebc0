"""Kill -9, SIGTERM/SIGINT and run control from another process, through the real CLI.

Every interrupted run is resumed and its ``result.zarr`` compared byte for byte with an
uninterrupted run; after every kill the ledger is checked never to claim an unwritten block.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from fusecube.config import CubeSource, RunConfig
from fusecube.runner import Ledger, run

N_BLOCKS = 9  # 48 x 48 px in 16 px blocks


def store_bytes(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def setup(small_scene, tmp_path_factory):
    """Config file, ledger and the bytes and values of an uninterrupted run."""
    tmp = tmp_path_factory.mktemp("runner_kill")
    ledger = tmp / "ledger.sqlite"
    ref = run(RunConfig(source=CubeSource(path=small_scene["cube"]), out=tmp / "ref",
                        ledger=str(ledger), report=False, block_size=16))
    config = {"source": {"kind": "cube", "path": str(small_scene["cube"])},
              "out": str(tmp / "out"), "block_size": 16, "report": False}
    (tmp / "run.yaml").write_text(yaml.safe_dump(config))
    values = xr.open_zarr(ref.result, consolidated=False).load()
    return {"tmp": tmp, "ledger": ledger, "config": tmp / "run.yaml", "out": tmp / "out",
            "bytes": store_bytes(ref.result), "values": values}


def cli(setup, *args, env=None, wait=True, **kw):
    environ = {**os.environ, "FUSECUBE_LEDGER": str(setup["ledger"]), **(env or {})}
    cmd = [sys.executable, "-m", "fusecube", *args]
    if not wait:
        return subprocess.Popen(cmd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, **kw)
    return subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=120, **kw)


def current_run(setup):
    runs = [r for r in Ledger(str(setup["ledger"])).list_runs(50) if r.out == str(setup["out"])]
    return runs[0]


def assert_ledger_honest(setup, record):
    """Every block the ledger calls done holds exactly the reference values in the partial store."""
    book = Ledger(str(setup["ledger"]))
    done = book.done_blocks(record.id)
    store = Path(record.store)
    if not done:
        return 0
    if not store.exists():  # killed after the final rename (in the run's staging folder)
        store = store.parent / "result.zarr"
        if not store.exists():  # or after the staging folder was swapped in
            store = Path(record.out) / "result.zarr"
        assert len(done) == N_BLOCKS and store.exists(), "blocks marked done but no store"
    partial = xr.open_zarr(store, consolidated=False)
    ref = setup["values"]
    from sqlalchemy import select

    from fusecube.runner.ledger import blocks
    with book.engine.connect() as conn:
        rows = conn.execute(select(blocks).where(blocks.c.run_id == record.id)).mappings().all()
    for row in rows:
        if (row["iy"], row["ix"]) not in done:
            continue
        window = {"y": slice(row["y0"], row["y1"]), "x": slice(row["x0"], row["x1"])}
        for name in ref.data_vars:
            np.testing.assert_array_equal(partial[name].isel(window).values,
                                          ref[name].isel(window).values,
                                          err_msg=f"{name} of done block {row['iy'], row['ix']}")
    return len(done)


def wait_for_blocks(setup, n, proc, timeout=60.0):
    start = time.time()
    while time.time() - start < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.communicate()}")
        try:
            record = current_run(setup)
        except (IndexError, Exception):
            time.sleep(0.2)
            continue
        if record.blocks_done >= n:
            return record
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} blocks after {timeout} s")


def test_kill9_at_five_points_then_resume_is_bit_identical(setup):
    """SIGKILL at five precise points of one run (fresh and resumed), then finish it."""
    points = ["template_written:1", "block_written:2", "block_done:3", "window_written:2",
              "finalized:1"]
    done_counts = []
    for i, point in enumerate(points):
        args = ["run", str(setup["config"])] + (["--resume"] if i else [])
        if i == 3:  # resume by id through the controller command
            args = ["resume", current_run(setup).id]
        proc = cli(setup, *args, env={"FUSECUBE_TEST_KILL_AT": point})
        assert proc.returncode == -signal.SIGKILL, (point, proc.stderr[-2000:])
        record = current_run(setup)
        assert record.state == "crashed"
        done_counts.append(assert_ledger_honest(setup, record))
    assert done_counts[0] == 0 and done_counts[-1] == N_BLOCKS
    assert done_counts == sorted(done_counts) and len(set(done_counts)) >= 3
    assert not (setup["out"] / "result.zarr").exists() or done_counts[-1] == N_BLOCKS
    final = cli(setup, "run", str(setup["config"]), "--resume")
    assert final.returncode == 0, final.stderr[-2000:]
    assert store_bytes(setup["out"] / "result.zarr") == setup["bytes"]
    record = current_run(setup)
    assert record.state == "done" and record.blocks_done == N_BLOCKS
    assert not list(setup["out"].glob(".result.zarr.partial-*"))


def test_kill9_at_a_random_moment_then_resume(setup, tmp_path):
    """An external ``kill -9`` at a random time while blocks are being written."""
    config = yaml.safe_load(setup["config"].read_text()) | {"out": str(tmp_path / "out")}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    local = setup | {"out": tmp_path / "out"}
    proc = cli(local, "run", str(tmp_path / "run.yaml"), wait=False,
               env={"FUSECUBE_TEST_BLOCK_DELAY": "0.3"})
    wait_for_blocks(local, 1, proc)
    time.sleep(random.Random().uniform(0.0, 1.2))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    record = current_run(local)
    assert 1 <= assert_ledger_honest(local, record) < N_BLOCKS
    final = cli(local, "run", str(tmp_path / "run.yaml"), "--resume")
    assert final.returncode == 0, final.stderr[-2000:]
    assert store_bytes(tmp_path / "out" / "result.zarr") == setup["bytes"]


@pytest.mark.parametrize("sig, code, twice", [(signal.SIGTERM, 143, False),
                                               (signal.SIGINT, 130, False),
                                               (signal.SIGINT, 130, True)])
def test_signal_stops_cleanly_and_resumes(setup, tmp_path, sig, code, twice):
    """One signal finishes the current block; a second one abandons it. Both resume."""
    config = yaml.safe_load(setup["config"].read_text()) | {"out": str(tmp_path / "out")}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    local = setup | {"out": tmp_path / "out"}
    proc = cli(local, "run", str(tmp_path / "run.yaml"), "--log-json", wait=False,
               env={"FUSECUBE_TEST_BLOCK_DELAY": "2.0"})
    seen = []
    for line in proc.stderr:  # wait until the third block has started (its 2 s delay is on)
        seen.append(line)
        if line.startswith("{"):
            event = json.loads(line)
            if (event["level"], event["kind"], event.get("done")) == ("block", "start", 2):
                break
    time.sleep(0.3)
    proc.send_signal(sig)
    if twice:
        time.sleep(0.3)
        proc.send_signal(sig)
    _, rest = proc.communicate(timeout=60)
    stderr = "".join(seen) + rest
    assert proc.returncode == code, stderr[-2000:]
    record = current_run(local)
    assert record.state == "interrupted"
    how = "abandoned the current block" if twice else "stopped cleanly"
    assert f"fusecube resume {record.id}" in stderr and how in stderr
    assert "Traceback" not in stderr
    done = assert_ledger_honest(local, record)
    assert done == (2 if twice else 3)  # the third block finished, or was abandoned
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert {"run", "stage", "block"} <= {e["level"] for e in events}
    # resumed in-process this time; the bytes must still match
    result = run(RunConfig.model_validate(config | {"ledger": str(setup["ledger"])}), resume=True)
    assert result.blocks_resumed == done
    assert store_bytes(result.result) == setup["bytes"]


def test_pause_resume_stop_from_another_process(setup, tmp_path):
    config = yaml.safe_load(setup["config"].read_text()) | {"out": str(tmp_path / "out")}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    local = setup | {"out": tmp_path / "out"}
    proc = cli(local, "run", str(tmp_path / "run.yaml"), wait=False,
               env={"FUSECUBE_TEST_BLOCK_DELAY": "0.4"})
    record = wait_for_blocks(local, 1, proc)
    paused = cli(local, "pause", record.id)
    assert paused.returncode == 0, paused.stderr
    deadline = time.time() + 30
    while current_run(local).state != "paused" and time.time() < deadline:
        time.sleep(0.2)
    status = json.loads(cli(local, "status", record.id, "--json").stdout)
    assert status["state"] == "paused"
    assert {"stage", "blocks_done", "blocks_total", "rate_blocks_per_s", "eta_s",
            "rss_mb", "peak_rss_mb", "memory_limit_mb"} <= set(status)
    assert status["rss_mb"] > 0 and status["blocks_total"] == N_BLOCKS
    held = status["blocks_done"]
    time.sleep(1.5)
    assert current_run(local).blocks_done == held < N_BLOCKS  # nothing moves while paused
    assert cli(local, "resume", record.id).returncode == 0
    wait_for_blocks(local, held + 1, proc)
    Ledger(str(setup["ledger"])).request(record.id, "pause")  # this process is another one too
    while current_run(local).state != "paused" and time.time() < deadline:
        time.sleep(0.1)
    stopped = cli(local, "stop", record.id)
    assert stopped.returncode == 0, stopped.stderr
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert "stop request" in stderr
    record = current_run(local)
    assert record.state == "stopped" and record.blocks_done < N_BLOCKS
    assert assert_ledger_honest(local, record) == record.blocks_done
    again = cli(local, "stop", record.id)
    assert again.returncode != 0 and "not running" in again.stderr
    result = run(RunConfig.model_validate(config | {"ledger": str(setup["ledger"])}), resume=True)
    assert store_bytes(result.result) == setup["bytes"]
