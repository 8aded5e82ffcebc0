"""Per-AOI state of a batch, in tables of the runner's ledger database.

The batch itself is a run of the runner's ``runs`` table (so ``fusecube status`` lists it,
``fusecube pause|stop`` reach it and its heartbeat shows a crash); its AOIs live in the
``batch_aois`` table defined here, one row per AOI with state, reason, attempts, bytes read
and seconds. A row is updated in its own transaction at every state change, so a killed
batch leaves an exact record of what finished.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from typing import Literal

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, and_, insert, select, update

from fusecube.batch.aois import AOI
from fusecube.runner.ledger import Ledger

State = Literal["pending", "fetching", "processing", "done", "failed", "skipped"]
STATES: tuple[State, ...] = ("pending", "fetching", "processing", "done", "failed", "skipped")
#: States an interrupted batch leaves behind for AOIs that were being worked on.
IN_FLIGHT: tuple[State, ...] = ("fetching", "processing")

metadata = MetaData()

batch_aois = Table(
    "batch_aois", metadata,
    Column("batch_id", String(32), primary_key=True),
    Column("aoi_id", String(200), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("attempts", Integer, nullable=False, default=0),
    Column("bytes_read", Integer, nullable=False, default=0),
    Column("seconds", Float, nullable=False, default=0.0),
    Column("tiles", Integer, nullable=False, default=0),
    Column("started", Float),
    Column("finished", Float),
    Column("lon", Float),
    Column("lat", Float),
    Column("bounds", Text, nullable=False, default="null"),
    Column("aoi", Text, nullable=False, default="{}"),
    Column("detail", Text, nullable=False, default="{}"),
)


@dataclass(frozen=True)
class AOIRecord:
    """One AOI's row in the ledger."""

    batch_id: str
    aoi_id: str
    position: int
    state: str
    reason: str
    attempts: int
    bytes_read: int
    seconds: float
    tiles: int
    started: float | None
    finished: float | None
    lon: float | None
    lat: float | None
    bounds: str
    aoi: str
    detail: str

    @property
    def detail_dict(self) -> dict:
        """The JSON ``detail`` column (outputs, warnings, per-item failures)."""
        return json.loads(self.detail or "{}")

    @property
    def bounds_tuple(self) -> tuple[float, float, float, float] | None:
        """``(west, south, east, north)`` or None."""
        value = json.loads(self.bounds or "null")
        return tuple(value) if value else None  # type: ignore[return-value]

    def to_dict(self) -> dict:
        """JSON-ready row."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("aoi", "detail",
                                                                                    "bounds")}
        out["bounds"] = self.bounds_tuple
        out["detail"] = self.detail_dict
        return out


class BatchLedger:
    """The AOI table of one ledger (same database, same engine as the runner's runs).

    Args:
        ledger: The runner's ledger.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.engine = ledger.engine
        for attempt in range(3):
            try:
                metadata.create_all(self.engine)
                break
            except Exception as exc:  # created by a concurrent process between check and create
                if "already exists" not in str(exc) or attempt == 2:
                    raise

    def add_aois(self, batch_id: str, aois: list[AOI], start_position: int = 0) -> None:
        """Record AOIs as pending (one transaction)."""
        rows = [{"batch_id": batch_id, "aoi_id": a.id, "position": start_position + i,
                 "state": "pending", "reason": "", "attempts": 0, "bytes_read": 0, "seconds": 0.0,
                 "tiles": 0, "lon": a.lon, "lat": a.lat, "bounds": json.dumps(a.bounds()),
                 "aoi": json.dumps(a.to_dict(), default=str), "detail": "{}"}
                for i, a in enumerate(aois)]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(batch_aois), rows)

    def records(self, batch_id: str) -> list[AOIRecord]:
        """All AOI rows of a batch in file order."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(batch_aois).where(batch_aois.c.batch_id == batch_id)
                                .order_by(batch_aois.c.position)).mappings().all()
        return [AOIRecord(**r) for r in rows]

    def get(self, batch_id: str, aoi_id: str) -> AOIRecord:
        """One AOI row."""
        with self.engine.connect() as conn:
            row = conn.execute(select(batch_aois).where(and_(
                batch_aois.c.batch_id == batch_id, batch_aois.c.aoi_id == aoi_id))).mappings().one()
        return AOIRecord(**row)

    def start_attempt(self, batch_id: str, aoi_id: str) -> int:
        """Mark an AOI as fetching, count the attempt; returns the attempt number."""
        now = time.time()
        with self.engine.begin() as conn:
            attempts = conn.execute(select(batch_aois.c.attempts).where(and_(
                batch_aois.c.batch_id == batch_id, batch_aois.c.aoi_id == aoi_id))).scalar_one() + 1
            conn.execute(update(batch_aois).where(and_(
                batch_aois.c.batch_id == batch_id, batch_aois.c.aoi_id == aoi_id)).values(
                state="fetching", reason="", attempts=attempts, started=now, finished=None))
        return attempts

    def set_state(self, batch_id: str, aoi_id: str, state: State, *, reason: str | None = None,
                  bytes_read: int | None = None, seconds: float | None = None,
                  tiles: int | None = None, detail: dict | None = None) -> None:
        """Update an AOI's state and whichever figures are given."""
        values: dict = {"state": state}
        if reason is not None:
            values["reason"] = reason
        if bytes_read is not None:
            values["bytes_read"] = int(bytes_read)
        if seconds is not None:
            values["seconds"] = float(seconds)
        if tiles is not None:
            values["tiles"] = int(tiles)
        if detail is not None:
            values["detail"] = json.dumps(detail, default=str)
        if state in ("done", "failed", "skipped"):
            values["finished"] = time.time()
        with self.engine.begin() as conn:
            conn.execute(update(batch_aois).where(and_(
                batch_aois.c.batch_id == batch_id, batch_aois.c.aoi_id == aoi_id)).values(**values))

    def reset_in_flight(self, batch_id: str) -> list[str]:
        """AOIs left fetching/processing by a killed batch go back to pending; returns their ids."""
        with self.engine.begin() as conn:
            ids = [r[0] for r in conn.execute(select(batch_aois.c.aoi_id).where(and_(
                batch_aois.c.batch_id == batch_id, batch_aois.c.state.in_(IN_FLIGHT))))]
            if ids:
                conn.execute(update(batch_aois).where(and_(
                    batch_aois.c.batch_id == batch_id, batch_aois.c.aoi_id.in_(ids))).values(
                    state="pending", reason="interrupted mid-way; redone on resume"))
        return ids


def totals(records: list[AOIRecord]) -> dict:
    """Counts per state, tiles, bytes read and seconds over a batch."""
    counts = {s: 0 for s in STATES}
    for r in records:
        counts[r.state] = counts.get(r.state, 0) + 1
    return {"aois": len(records), "states": counts,
            "tiles": sum(r.tiles for r in records),
            "bytes_read": sum(r.bytes_read for r in records),
            "seconds": round(sum(r.seconds for r in records), 3),
            "attempts": sum(r.attempts for r in records)}
