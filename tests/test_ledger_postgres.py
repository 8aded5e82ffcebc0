"""The run ledger on a real PostgreSQL server: runs, and workers that never claim one block twice.

The server is private to the test module: ``initdb`` into a temporary folder, ``pg_ctl start``
on a free port of 127.0.0.1 and a unix socket in that folder, stopped and removed at the end.
The tests skip (with the reason) when PostgreSQL's binaries or the psycopg driver are absent;
``.ci/run`` installs Debian's ``postgresql`` and the Makefile the ``[postgres]`` extra. Claims
are also checked on SQLite, which needs nothing.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from fusecube.runner.ledger import Ledger

PG_DIRS = [os.environ.get("PATH", ""), *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]


def _pg_binary(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join(PG_DIRS))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """``postgresql://`` URL of a private server, started here and always stopped."""
    pytest.importorskip("psycopg", reason="psycopg not installed: pip install 'fusecube[postgres]'")
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL not installed (initdb/pg_ctl not on PATH nor in "
                    "/usr/lib/postgresql/*/bin): apt-get install postgresql")
    # a short folder (a unix socket path has ~100 characters), owned by the server's user:
    # PostgreSQL refuses to run as root, so root runs it as 'postgres' (or 'nobody')
    run_as = None
    root = Path(tempfile.mkdtemp(prefix="fc-pg-"))
    if os.geteuid() == 0:
        import pwd

        for name in ("postgres", "nobody"):
            try:
                user = pwd.getpwnam(name)
            except KeyError:
                continue
            run_as = name
            os.chown(root, user.pw_uid, user.pw_gid)
            break
        else:
            shutil.rmtree(root)
            pytest.skip("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")
    data, port = root / "data", _free_port()
    started = False
    try:
        subprocess.run([initdb, "-D", str(data), "-U", "fusecube", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True, timeout=120, user=run_as)
        subprocess.run([pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
                        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
                        "start"], check=True, capture_output=True, timeout=90, user=run_as)
        started = True
        yield f"postgresql://fusecube@/postgres?host={root}&port={port}"
    finally:
        if started:
            subprocess.run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"],
                           capture_output=True, timeout=60, user=run_as)
        shutil.rmtree(root, ignore_errors=True)


def _new_run(ledger: Ledger, run_id: str, n: int) -> list:
    ledger.create_run(run_id=run_id, out=f"/tmp/{run_id}", store="", fingerprint="f" * 16,
                      config="{}", memory_limit=0, scheduler="")
    regions = [((iy, ix), (slice(iy * 8, iy * 8 + 8), slice(ix * 8, ix * 8 + 8)))
               for iy in range(n) for ix in range(n)]
    ledger.add_blocks(run_id, 8, regions)
    return [index for index, _ in regions]


_WORKER = textwrap.dedent("""
    import json, sys, threading, time
    from pathlib import Path
    from fusecube.runner.ledger import Ledger
    url, run_id, name, go = sys.argv[1:5]
    ledger = Ledger(url)
    claimed = []

    def claimer(thread):
        while (index := ledger.claim_block(run_id, f"{name}.{thread}")) is not None:
            claimed.append(index)
            time.sleep(0.002)  # the block's work
            ledger.block_done(run_id, index, seconds=0.0, rss=0.0, worker=f"{name}.{thread}")

    Path(go + "." + name).touch()  # ready
    deadline = time.time() + 60
    while not Path(go).exists() and time.time() < deadline:
        time.sleep(0.005)
    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(claimed))
""")


def _race(url: str, run_id: str, tmp_path: Path) -> list[list]:
    go = tmp_path / f"go-{run_id}"
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, url, run_id, f"w{i}", str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not all(
                Path(f"{go}.w{i}").exists() or p.poll() is not None for i, p in enumerate(procs)):
            time.sleep(0.05)
        go.touch()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    return [[tuple(i) for i in json.loads(out.strip().splitlines()[-1])] for out, _ in outs]


def _check_claims(ledger: Ledger, run_id: str, planned: list, claims: list[list]) -> None:
    every = [index for c in claims for index in c]  # 2 processes x 4 threads, racing
    twice = sorted({i for i in every if every.count(i) > 1})
    assert not twice, f"blocks claimed twice: {twice}"
    first, second = (set(c) for c in claims)
    assert first | second == set(planned)
    assert first and second, "both workers took part"
    assert ledger.done_blocks(run_id) == set(planned)
    assert ledger.claim_block(run_id, "late") is None


def test_claims_are_exclusive_on_sqlite(tmp_path):
    url = str(tmp_path / "ledger.sqlite")
    ledger = Ledger(url)
    planned = _new_run(ledger, "sqlite-claims", 5)
    _check_claims(ledger, "sqlite-claims", planned, _race(url, "sqlite-claims", tmp_path))


def test_claims_are_exclusive_on_postgres(postgres_url, tmp_path):
    ledger = Ledger(postgres_url)
    assert ledger.engine.dialect.name == "postgresql"
    planned = _new_run(ledger, "pg-claims", 6)
    _check_claims(ledger, "pg-claims", planned, _race(postgres_url, "pg-claims", tmp_path))


def test_expired_claim_is_taken_over(postgres_url):
    ledger = Ledger(postgres_url)
    _new_run(ledger, "pg-lease", 1)
    assert ledger.claim_block("pg-lease", "dead") == (0, 0)
    assert ledger.claim_block("pg-lease", "other", lease_s=60.0) is None  # the claim holds
    time.sleep(0.05)
    assert ledger.claim_block("pg-lease", "other", lease_s=0.01) == (0, 0)  # its worker is gone


@pytest.mark.slow
def test_two_runs_share_the_postgres_ledger(postgres_url, small_scene, tmp_path, monkeypatch):
    """Two runs, the ledger given as a bare ``postgresql://`` URL, record runs and blocks there."""
    from fusecube.config import CubeSource, RunConfig
    from fusecube.runner import run

    monkeypatch.setenv("FUSECUBE_LEDGER", postgres_url)  # as a cluster's workers would see it
    config = RunConfig(source=CubeSource(path=small_scene["cube"]), out=tmp_path / "a",
                       report=False, block_size=16, gapfill="linear")
    first = run(config)
    second = run(config.model_copy(update={"out": tmp_path / "b"}))
    ledger = Ledger(postgres_url)
    for result in (first, second):
        record = ledger.get_run(result.run_id)
        assert record.state == "done" and record.blocks_done == record.n_blocks == 9
        assert record.out == str(result.out)
    assert {r.id for r in ledger.list_runs()} >= {first.run_id, second.run_id}
    assert any(e["kind"] for e in ledger.events(second.run_id))


def test_bad_postgres_url_names_the_fix():
    from fusecube.errors import LedgerError

    port = _free_port()  # nothing listens there
    pytest.importorskip("psycopg")
    with pytest.raises(LedgerError, match=r"(?s)cannot be opened.*FUSECUBE_LEDGER") as info:
        Ledger(f"postgresql://someone:secret@127.0.0.1:{port}/nothing?connect_timeout=2")
    assert "secret" not in str(info.value)
