"""The run ledger: runs, stages, blocks and events in a database (SQLite by default).

The ledger is the memory of a run that outlives its process: which blocks are durably
written, which stages are finished, what a controller in another shell asked for
(pause, resume, stop), and the events a status command shows. Any SQLAlchemy URL selects
another database (e.g. ``postgresql+psycopg://host/fusecube`` for a shared one); a plain
path means a SQLite file.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil
from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError

from fusecube.errors import LedgerError

#: A running process refreshes its heartbeat every few seconds; older means it is gone.
STALE_AFTER_S = 30.0

metadata = MetaData()

runs = Table(
    "runs", metadata,
    Column("id", String(32), primary_key=True),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Column("status", String(16), nullable=False),  # running|paused|stopped|interrupted|failed|done
    Column("control", String(16), nullable=False, default="run"),  # run|pause|stop
    Column("stage", String(32), nullable=False, default=""),
    Column("out", Text, nullable=False),
    Column("store", Text, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("config", Text, nullable=False),
    Column("block_edge", Integer, nullable=False, default=0),
    Column("n_blocks", Integer, nullable=False, default=0),
    Column("memory_limit", Float, nullable=False, default=0.0),
    Column("rss", Float, nullable=False, default=0.0),
    Column("peak_rss", Float, nullable=False, default=0.0),
    Column("pid", Integer, nullable=False, default=0),
    Column("host", String(255), nullable=False, default=""),
    Column("heartbeat", Float, nullable=False, default=0.0),
    Column("scheduler", Text, nullable=False, default=""),
    Column("message", Text, nullable=False, default=""),
)

stages = Table(
    "stages", metadata,
    Column("run_id", String(32), primary_key=True),
    Column("name", String(32), primary_key=True),
    Column("status", String(16), nullable=False),  # running|done
    Column("started", Float, nullable=False),
    Column("finished", Float),
    Column("seconds", Float, nullable=False, default=0.0),
)

blocks = Table(
    "blocks", metadata,
    Column("run_id", String(32), primary_key=True),
    Column("iy", Integer, primary_key=True),
    Column("ix", Integer, primary_key=True),
    Column("y0", Integer, nullable=False),
    Column("y1", Integer, nullable=False),
    Column("x0", Integer, nullable=False),
    Column("x1", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # pending|claimed|done
    Column("finished", Float),  # done: when; claimed: the claim's time
    Column("seconds", Float),
    Column("rss", Float),
    Column("worker", Text),
)

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False, index=True),
    Column("ts", Float, nullable=False),
    Column("level", String(8), nullable=False),  # run|stage|block
    Column("kind", String(32), nullable=False),
    Column("message", Text, nullable=False, default=""),
    Column("data", Text, nullable=False, default="{}"),
)


@dataclass(frozen=True)
class RunRecord:
    """One row of the ``runs`` table, plus the block counts."""

    id: str
    created: float
    updated: float
    status: str
    control: str
    stage: str
    out: str
    store: str
    fingerprint: str
    config: str
    block_edge: int
    n_blocks: int
    memory_limit: float
    rss: float
    peak_rss: float
    pid: int
    host: str
    heartbeat: float
    scheduler: str
    message: str
    blocks_done: int = 0

    @property
    def alive(self) -> bool:
        """Whether the process running this run is still there."""
        if self.status not in ("running", "paused"):
            return False
        if time.time() - self.heartbeat > STALE_AFTER_S:
            return False
        if self.host == socket.gethostname():
            return psutil.pid_exists(self.pid)
        return True

    @property
    def state(self) -> str:
        """The status as a user should read it: a dead 'running' run is 'crashed'."""
        if self.status in ("running", "paused") and not self.alive:
            return "crashed"
        return self.status


#: Statuses of finished runs (``superseded``: a later run into its folder replaced its results).
FINISHED = ("done", "superseded")


def _runs_in_folder(conn, folder: Path) -> list:
    """The newest run writing to ``folder`` (its output folder or its staging folder), if any."""
    staged = re.fullmatch(r"\..+\.run-(\d{8}-\d{6}-[0-9a-f]{6})", folder.name)
    where = runs.c.id == staged.group(1) if staged else runs.c.out == str(folder.resolve())
    return conn.execute(select(runs).where(where).order_by(runs.c.created.desc()).limit(1)
                        ).mappings().all()


def default_ledger_url() -> str:
    """``$FUSECUBE_LEDGER``, else a SQLite file in the user's state folder."""
    env = os.environ.get("FUSECUBE_LEDGER")
    if env:
        return env
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return str(state / "fusecube" / "ledger.sqlite")


#: URL prefixes that mean PostgreSQL through psycopg 3 (SQLAlchemy's bare ``postgresql://``
#: would look for psycopg2); ``pip install 'fusecube[postgres]'`` brings the driver.
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def _as_url(location: str) -> str:
    if location.startswith(POSTGRES_PREFIXES):
        return "postgresql+psycopg://" + location.split("://", 1)[1]
    if "://" in location:
        return location
    path = Path(location).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _safe(url: str) -> str:
    """``url`` without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # first: switching a new file to WAL takes a lock another opener may hold at that moment
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (status) never block the runner
    cursor.execute("PRAGMA synchronous=FULL")  # a committed 'done' survives a power cut
    cursor.close()


#: Tries at creating the tables when other processes create them at the same moment (a runner
#: and its Dask workers opening a new SQLite ledger together).
CREATE_ATTEMPTS = 12

#: What a lost race at creating the tables reads like: another creator got there first
#: (PostgreSQL reports it as a duplicate key in its catalogue), or SQLite refused to upgrade this
#: opener's read of the schema to a write because another process wrote meanwhile; SQLite answers
#: that at once, without waiting out ``busy_timeout`` (it would deadlock), so it is retried here.
_RACE_MESSAGES = ("already exists", "duplicate key", "database is locked")


class Ledger:
    """Read and write the run ledger.

    Args:
        location: A SQLAlchemy URL or a SQLite file path; ``None`` for
            :func:`default_ledger_url`.
    """

    def __init__(self, location: str | None = None) -> None:
        self.url = _as_url(location or default_ledger_url())
        try:
            self.engine: Engine = create_engine(
                self.url, future=True, pool_pre_ping=not self.url.startswith("sqlite"))
        except (ArgumentError, ImportError) as exc:
            hint = (" (pip install 'fusecube[postgres]')" if self.url.startswith("postgresql")
                    else "")
            raise LedgerError(
                f"Ledger URL {_safe(self.url)!r} cannot be used ({exc}); give a SQLite path or a "
                "SQLAlchemy URL such as sqlite:///runs.sqlite or postgresql://host/fusecube "
                f"(and install its driver{hint}).") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            for attempt in range(CREATE_ATTEMPTS):
                try:
                    metadata.create_all(self.engine)
                    break
                except (OperationalError, ProgrammingError, IntegrityError) as exc:
                    if (not any(m in str(exc.orig) for m in _RACE_MESSAGES)
                            or attempt == CREATE_ATTEMPTS - 1):
                        raise
                    # fresh connections (no cached schema) once the other creator has committed
                    self.engine.dispose()
                    time.sleep(min(0.05 * 2 ** attempt, 2.0))
        except OperationalError as exc:
            raise LedgerError(
                f"Ledger {_safe(self.url)} cannot be opened ({exc.orig}); check the path or URL and "
                "its permissions, or choose another with --ledger / FUSECUBE_LEDGER.") from exc

    # ------------------------------------------------------------------ runs
    def create_run(self, *, run_id: str, out: str, store: str, fingerprint: str, config: str,
                   memory_limit: int, scheduler: str) -> None:
        """Record a new run (its blocks come with :meth:`add_blocks` once they are planned)."""
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(insert(runs).values(
                id=run_id, created=now, updated=now, status="running", control="run", stage="",
                out=out, store=store, fingerprint=fingerprint, config=config, block_edge=0,
                n_blocks=0, memory_limit=float(memory_limit), rss=0.0, peak_rss=0.0,
                pid=os.getpid(), host=socket.gethostname(), heartbeat=now, scheduler=scheduler,
                message=""))

    def add_blocks(self, run_id: str, block_edge: int,
                   block_regions: Iterable[tuple[tuple[int, int], tuple[slice, slice]]]) -> None:
        """Record the planned blocks of a run, all pending, and its block edge (one transaction)."""
        rows = [{"run_id": run_id, "iy": iy, "ix": ix, "y0": ys.start, "y1": ys.stop,
                 "x0": xs.start, "x1": xs.stop, "status": "pending"}
                for (iy, ix), (ys, xs) in block_regions]
        with self.engine.begin() as conn:
            conn.execute(blocks.delete().where(blocks.c.run_id == run_id))
            if rows:
                conn.execute(insert(blocks), rows)
            conn.execute(update(runs).where(runs.c.id == run_id).values(
                block_edge=block_edge, n_blocks=len(rows), updated=time.time()))

    def claim_run(self, run_id: str, *, memory_limit: int, scheduler: str) -> None:
        """Take over a run for resuming: this process, status running, no pending request."""
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(
                status="running", control="run", pid=os.getpid(), host=socket.gethostname(),
                heartbeat=now, updated=now, memory_limit=float(memory_limit), scheduler=scheduler,
                message=""))

    def get_run(self, run_id: str) -> RunRecord:
        """The run ``run_id``: its id, a unique prefix or suffix of it, or its output folder.

        A folder (the run's ``--out``, or its staging folder) names the newest run into it.
        """
        with self.engine.connect() as conn:
            rows = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().all()
            if not rows and Path(run_id).expanduser().is_dir():
                rows = _runs_in_folder(conn, Path(run_id).expanduser())
            elif not rows:
                rows = conn.execute(select(runs).where(
                    runs.c.id.startswith(run_id, autoescape=True)
                    | runs.c.id.endswith(run_id, autoescape=True)).order_by(runs.c.id)
                ).mappings().all()
            if not rows:
                raise LedgerError(
                    f"No run {run_id!r} in the ledger {_safe(self.url)} (by id, a unique part of "
                    "its start or end, or its output folder); list runs with `fusecube status` "
                    "(and pass --ledger if the run used another ledger).")
            if len(rows) > 1:
                ids = ", ".join(r["id"] for r in rows[:10]) + (", ..." if len(rows) > 10 else "")
                raise LedgerError(f"Run id {run_id!r} is ambiguous: it matches {len(rows)} runs "
                                  f"({ids}); give more of it.")
            done = conn.execute(select(func.count()).select_from(blocks).where(and_(
                blocks.c.run_id == rows[0]["id"], blocks.c.status == "done"))).scalar_one()
        return RunRecord(**rows[0], blocks_done=int(done))

    def list_runs(self, limit: int = 20) -> list[RunRecord]:
        """The most recently updated runs, newest first."""
        with self.engine.connect() as conn:
            ids = conn.execute(select(runs.c.id).order_by(runs.c.updated.desc()).limit(limit))
            ids = [r[0] for r in ids]
        return [self.get_run(i) for i in ids]

    def find_resumable(self, out: str, fingerprint: str) -> RunRecord | None:
        """The newest unfinished run writing to ``out`` with this configuration fingerprint."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(runs.c.id).where(and_(runs.c.out == out, runs.c.fingerprint == fingerprint,
                                             runs.c.status.not_in(FINISHED)))
                .order_by(runs.c.updated.desc()).limit(1)).first()
        return self.get_run(row[0]) if row else None

    def unfinished_runs(self, out: str) -> list[RunRecord]:
        """All runs writing to ``out`` that have not finished, newest first."""
        with self.engine.connect() as conn:
            ids = conn.execute(select(runs.c.id).where(and_(runs.c.out == out,
                                                            runs.c.status.not_in(FINISHED)))
                               .order_by(runs.c.updated.desc()))
            ids = [r[0] for r in ids]
        return [self.get_run(i) for i in ids]

    def find_other_config(self, out: str, fingerprint: str) -> RunRecord | None:
        """The newest unfinished run writing to ``out`` with a different configuration."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(runs.c.id).where(and_(runs.c.out == out, runs.c.fingerprint != fingerprint,
                                             runs.c.status.not_in(FINISHED)))
                .order_by(runs.c.updated.desc()).limit(1)).first()
        return self.get_run(row[0]) if row else None

    def supersede(self, out: str, by: str) -> list[str]:
        """Mark the finished runs into ``out`` but ``by`` superseded (``by`` replaced them); ids."""
        where = and_(runs.c.out == out, runs.c.status == "done", runs.c.id != by)
        with self.engine.begin() as conn:
            ids = [r[0] for r in conn.execute(select(runs.c.id).where(where))]
            conn.execute(update(runs).where(where).values(
                status="superseded", message=f"superseded: run {by} replaced its results in {out}"))
        return ids

    def set_status(self, run_id: str, status: str, message: str = "") -> None:
        """Set a run's status (and a message saying why)."""
        with self.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(
                status=status, message=message, updated=time.time(), heartbeat=time.time()))

    def heartbeat(self, run_id: str, *, rss: int, peak_rss: int, stage: str | None = None) -> None:
        """Refresh the liveness time and the memory figures of a running run."""
        values = {"heartbeat": time.time(), "rss": float(rss), "peak_rss": float(peak_rss)}
        if stage is not None:
            values.update(stage=stage, updated=time.time())
        with self.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(**values))

    def request(self, run_id: str, action: str) -> RunRecord:
        """Ask the process running ``run_id`` to ``pause``, ``run`` (resume) or ``stop``."""
        record = self.get_run(run_id)
        with self.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.id == record.id).values(control=action))
        self.event(record.id, "run", f"request_{action}", f"{action} requested from pid {os.getpid()}")
        return self.get_run(record.id)

    def control(self, run_id: str) -> str:
        """The controller's latest request for a run: ``run``, ``pause`` or ``stop``."""
        with self.engine.connect() as conn:
            return conn.execute(select(runs.c.control).where(runs.c.id == run_id)).scalar_one()

    # ------------------------------------------------------------------ stages
    def stage_started(self, run_id: str, name: str, *, current: bool = True) -> None:
        """Mark a stage as running (again, on resume); ``current`` shows it as the run's stage."""
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(stages.delete().where(and_(stages.c.run_id == run_id, stages.c.name == name)))
            conn.execute(insert(stages).values(run_id=run_id, name=name, status="running",
                                               started=now, seconds=0.0))
            if current:
                conn.execute(update(runs).where(runs.c.id == run_id).values(stage=name, updated=now))

    def stage_done(self, run_id: str, name: str, seconds: float) -> None:
        """Mark a stage as finished."""
        with self.engine.begin() as conn:
            conn.execute(update(stages).where(and_(stages.c.run_id == run_id, stages.c.name == name))
                         .values(status="done", finished=time.time(), seconds=seconds))

    def done_stages(self, run_id: str) -> set[str]:
        """Names of the finished stages of a run."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(stages.c.name).where(and_(
                stages.c.run_id == run_id, stages.c.status == "done")))
            return {r[0] for r in rows}

    def stage_rows(self, run_id: str) -> list[dict]:
        """All stage rows of a run, in start order."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(stages).where(stages.c.run_id == run_id)
                                .order_by(stages.c.started)).mappings().all()
        return [dict(r) for r in rows]

    # ------------------------------------------------------------------ blocks
    def done_blocks(self, run_id: str) -> set[tuple[int, int]]:
        """Tile indices of the blocks durably written."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(blocks.c.iy, blocks.c.ix).where(and_(
                blocks.c.run_id == run_id, blocks.c.status == "done")))
            return {(r[0], r[1]) for r in rows}

    def claim_block(self, run_id: str, worker: str, *, lease_s: float | None = None
                    ) -> tuple[int, int] | None:
        """Claim one pending block of a run for ``worker``; ``None`` when none is left.

        Workers on several machines sharing one ledger (PostgreSQL) call this to divide the
        blocks: the claim is a conditional update (``status = 'pending'``), so of two workers
        racing for a block exactly one gets it. A claimed block holds its claim time in
        ``finished`` until :meth:`block_done`; with ``lease_s``, a claim older than that (its
        worker died) may be taken again.

        Args:
            run_id: The run.
            worker: Who claims (stored in the block's ``worker`` column).
            lease_s: Seconds after which another worker may take over a claim.

        Returns:
            The block's tile index ``(iy, ix)``, or ``None``.
        """
        while True:
            now = time.time()
            free = blocks.c.status == "pending"
            if lease_s is not None:
                free = free | and_(blocks.c.status == "claimed", blocks.c.finished < now - lease_s)
            with self.engine.connect() as conn:
                candidates = conn.execute(select(blocks.c.iy, blocks.c.ix).where(and_(
                    blocks.c.run_id == run_id, free)).order_by(blocks.c.iy, blocks.c.ix).limit(8)).all()
            if not candidates:
                return None
            for iy, ix in candidates:
                with self.engine.begin() as conn:
                    taken = conn.execute(update(blocks).where(and_(
                        blocks.c.run_id == run_id, blocks.c.iy == iy, blocks.c.ix == ix, free))
                        .values(status="claimed", finished=now, worker=worker)).rowcount
                if taken == 1:
                    return int(iy), int(ix)

    def block_done(self, run_id: str, index: tuple[int, int], *, seconds: float, rss: float,
                   worker: str) -> None:
        """Mark a block done; call only once its region is durably written."""
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(update(blocks).where(and_(
                blocks.c.run_id == run_id, blocks.c.iy == index[0], blocks.c.ix == index[1]))
                .values(status="done", finished=now, seconds=seconds, rss=rss, worker=worker))
            conn.execute(update(runs).where(runs.c.id == run_id).values(updated=now, heartbeat=now))

    def block_times(self, run_id: str, last: int = 20) -> list[float]:
        """Finish times of the last ``last`` finished blocks (for the rate and ETA)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(blocks.c.finished).where(and_(
                blocks.c.run_id == run_id, blocks.c.status == "done"))
                .order_by(blocks.c.finished.desc()).limit(last))
            return sorted(r[0] for r in rows)

    # ------------------------------------------------------------------ events
    def event(self, run_id: str, level: str, kind: str, message: str = "", **data) -> None:
        """Append an event (``level`` is run, stage or block)."""
        with self.engine.begin() as conn:
            conn.execute(insert(events).values(run_id=run_id, ts=time.time(), level=level,
                                               kind=kind, message=message,
                                               data=json.dumps(data, default=str)))

    def events(self, run_id: str, last: int = 20) -> list[dict]:
        """The last ``last`` events of a run, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(events).where(events.c.run_id == run_id)
                                .order_by(events.c.id.desc()).limit(last)).mappings().all()
        return [dict(r) | {"data": json.loads(r["data"])} for r in reversed(rows)]

    def dispose(self) -> None:
        """Close the connections."""
        self.engine.dispose()
