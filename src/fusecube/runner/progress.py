"""Progress reporting, hierarchical (run > stage > block): rich bars on a TTY, JSON lines in logs.

A reporter is called in two ways:

- ``report(stage, done, total)``: the plain stage counter (synthesis, simple loops);
- ``report.event(level, kind, **fields)``: hierarchical events from the runner, ``level``
  being ``run``, ``stage`` or ``block`` and ``kind`` what happened (``start``, ``progress``,
  ``done``, ``heartbeat``, ``paused``, ...).

Every reporter shows something at least every few seconds while a run is alive (the runner
sends a heartbeat event every 2 s). Neural fusion training sends ``stage``/``train`` events
with ``step``, ``total``, ``loss`` and ``eta_s`` (:func:`training_events`).
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Any, Literal, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fusecube.json_safe import dumps

Level = Literal["run", "stage", "block"]
#: JSON-lines and plain reporters repeat a heartbeat line when nothing else was said for this long.
QUIET_LIMIT_S = 5.0
#: Training updates are recorded in the ledger (the API reads them) at most this often.
TRAIN_RECORD_S = 3.0


def _clock(seconds) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


def training_message(fields: dict) -> str:
    """``training step 120/300, loss 0.0123, ETA 0:12`` from a ``train`` event's fields."""
    loss = fields.get("loss")
    return (f"training step {fields.get('step')}/{fields.get('total')}"
            + ("" if loss is None else f", loss {loss:.4f}") + f", ETA {_clock(fields.get('eta_s'))}")


@contextmanager
def training_events(emit, stage: str = "fusion_train", record_s: float = TRAIN_RECORD_S):
    """Turn neural training updates into ``stage``/``train`` events for the ``with`` body.

    Args:
        emit: The run's event sink, ``emit(level, kind, message, *, record, **fields)``
            (:class:`~fusecube.runner.execution.RunEvents`).
        stage: The stage the training belongs to.
        record_s: Seconds between two updates kept in the ledger (the last is always kept).
    """
    from fusecube.fusion.neural.training_progress import training_progress

    last = [-float("inf")]

    def send(**fields) -> None:
        now = time.monotonic()
        record = fields["step"] >= fields["total"] or now - last[0] >= record_s
        if record:
            last[0] = now
        emit("stage", "train", training_message(fields), record=record, stage=stage, **fields)

    with training_progress(send):
        yield


class Reporter(Protocol):
    """What the runner and the other commands call to report progress."""

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Report ``done`` of ``total`` items of ``stage``."""

    def event(self, level: Level, kind: str, **fields: Any) -> None:
        """Report a hierarchical event."""


class JsonLinesReporter:
    """One JSON object per line on stderr: ``ts``, ``level``, ``kind`` and the event's fields."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.last = 0.0

    def _write(self, record: dict) -> None:
        self.last = time.time()
        self.stream.write(dumps({"ts": round(self.last, 3), **record}) + "\n")  # strict JSON
        self.stream.flush()

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Report ``done`` of ``total`` items of ``stage``."""
        self._write({"level": "stage", "kind": "progress", "stage": stage, "done": done,
                     "total": total})

    def event(self, level: Level, kind: str, **fields: Any) -> None:
        """Report a hierarchical event (heartbeats only when the log has been quiet)."""
        if kind == "heartbeat" and time.time() - self.last < QUIET_LIMIT_S:
            return
        self._write({"level": level, "kind": kind, **fields})


class PlainReporter:
    """Short text lines on stderr for non-terminal output without ``--log-json``."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.last = 0.0
        self.training: dict = {}

    def _write(self, text: str) -> None:
        self.last = time.time()
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Report ``done`` of ``total`` items of ``stage`` (throttled, always the last one)."""
        if done == total or time.time() - self.last >= QUIET_LIMIT_S:
            self._write(f"{stage}: {done}/{total}")

    def event(self, level: Level, kind: str, **fields: Any) -> None:
        """Report run/stage starts and ends, notices, and a heartbeat when quiet."""
        if level == "block" and kind == "done":
            self(fields.get("stage", "blocks"), fields.get("done", 0), fields.get("total", 0))
        elif kind == "train":
            self.training = fields
            if fields.get("step") == fields.get("total") or time.time() - self.last >= QUIET_LIMIT_S:
                self._write(f"{fields.get('stage', 'training')}: {training_message(fields)}")
        elif kind == "heartbeat" and self.training and fields.get("stage") == self.training.get("stage"):
            if time.time() - self.last >= QUIET_LIMIT_S:  # training says more than "running"
                self._write(f"{self.training['stage']}: {training_message(self.training)}")
        elif kind == "heartbeat":
            if time.time() - self.last >= QUIET_LIMIT_S:
                self._write(f"... {fields.get('stage', '')} running, "
                            f"RSS {fields.get('rss_mb', 0):.0f} MB")
        elif kind in ("start", "done") and level in ("run", "stage"):
            name = fields.get("stage") or fields.get("run", "")
            self._write(fields.get("message") or f"{level} {name}: {kind}")
        elif fields.get("message"):
            self._write(str(fields["message"]))


class RichReporter:
    """Rich bars: the run, one bar per stage, and the block being processed."""

    def __init__(self, console: Console | None = None) -> None:
        self.bars = Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TimeRemainingColumn(),
                             console=console or Console(stderr=True), transient=False)
        self.tasks: dict[str, Any] = {}
        self.run_task = None
        self.block_task = None

    def __enter__(self) -> RichReporter:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.__exit__(*exc)

    def _stage(self, stage: str, total: int | None = None):
        if stage not in self.tasks:
            self.tasks[stage] = self.bars.add_task(f"  {stage}", total=total)
        return self.tasks[stage]

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Report ``done`` of ``total`` items of ``stage``."""
        self.bars.update(self._stage(stage, total), completed=done, total=total)

    def event(self, level: Level, kind: str, **fields: Any) -> None:
        """Update the bars from a hierarchical event."""
        if level == "run" and kind == "start":
            self.run_task = self.bars.add_task(f"run {fields.get('run', '')}",
                                               total=fields.get("n_stages"))
        elif level == "stage" and kind == "start":
            self._stage(fields["stage"], fields.get("total"))
        elif level == "stage" and kind == "done":
            task = self._stage(fields["stage"])
            total = self.bars.tasks[task].total or 1
            self.bars.update(task, completed=total, total=total)
            if self.run_task is not None:
                self.bars.advance(self.run_task)
            if fields["stage"] == "blocks" and self.block_task is not None:
                self.bars.remove_task(self.block_task)
                self.block_task = None
        elif level == "block" and kind == "done":
            self(fields.get("stage", "blocks"), fields["done"], fields["total"])
        elif kind == "train":
            task = self._stage(fields.get("stage", "fusion_train"), fields.get("total"))
            loss = fields.get("loss")
            self.bars.update(task, completed=fields.get("step", 0), total=fields.get("total"),
                             description=f"  {fields.get('stage', 'fusion_train')}"
                                         + ("" if loss is None else f" loss {loss:.4f}"))
        elif level == "block" and kind == "start":
            text = f"    block {fields.get('index')}"
            if self.block_task is None:
                self.block_task = self.bars.add_task(text, total=None)
            self.bars.update(self.block_task, description=text)
        elif kind == "heartbeat" and self.run_task is not None:
            self.bars.update(self.run_task, description=f"run {fields.get('run', '')} "
                                                        f"RSS {fields.get('rss_mb', 0):.0f} MB")
        elif fields.get("message") and kind not in ("start", "done", "progress"):
            self.bars.console.print(str(fields["message"]), highlight=False)


@contextmanager
def progress_reporter(json_lines: bool = False):
    """Yield a :class:`Reporter`: JSON lines when asked, rich bars on a TTY, plain lines otherwise."""
    if json_lines:
        yield JsonLinesReporter()
    elif not sys.stderr.isatty():
        yield PlainReporter()
    else:
        with RichReporter() as reporter:
            yield reporter
