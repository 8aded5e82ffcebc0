"""What ``fusecube status`` shows: a run's state, stage, blocks, rate, ETA and memory."""

from __future__ import annotations

import time

from fusecube.runner.ledger import Ledger, RunRecord
from fusecube.runner.memory import MB


def run_status(ledger: Ledger, record: RunRecord, *, n_events: int = 5) -> dict:
    """A JSON-able status of one run, read from the ledger.

    The rate is measured over the last 20 finished blocks; the ETA assumes it holds.

    Args:
        ledger: The ledger holding the run.
        record: The run.
        n_events: How many recent events to include.

    Returns:
        A dictionary with ``id``, ``state``, ``stage``, ``blocks_done``, ``blocks_total``,
        ``rate_blocks_per_s``, ``eta_s``, ``rss_mb``, ``peak_rss_mb``, ``memory_limit_mb``,
        ``pid``, ``host``, ``out``, ``message`` and ``events``.
    """
    times = ledger.block_times(record.id, last=20)
    rate = None
    if len(times) >= 2 and times[-1] > times[0]:
        rate = (len(times) - 1) / (times[-1] - times[0])
    remaining = max(0, record.n_blocks - record.blocks_done)
    state = record.state
    eta = remaining / rate if rate and state in ("running", "paused") else None
    if state == "running" and record.control == "pause":
        state = "pausing"
    elif state in ("running", "paused") and record.control == "stop":
        state = "stopping"
    return {
        "id": record.id, "state": state, "stage": record.stage,
        "blocks_done": record.blocks_done, "blocks_total": record.n_blocks,
        "block_edge": record.block_edge,
        "rate_blocks_per_s": round(rate, 4) if rate else None,
        "eta_s": round(eta, 1) if eta is not None else None,
        "rss_mb": round(record.rss / MB, 1), "peak_rss_mb": round(record.peak_rss / MB, 1),
        "memory_limit_mb": round(record.memory_limit / MB, 1),
        "pid": record.pid, "host": record.host, "out": record.out, "scheduler": record.scheduler,
        "heartbeat_age_s": round(time.time() - record.heartbeat, 1),
        "message": record.message,
        "events": [{"ts": e["ts"], "level": e["level"], "kind": e["kind"], "message": e["message"]}
                   for e in ledger.events(record.id, last=n_events)],
    }
