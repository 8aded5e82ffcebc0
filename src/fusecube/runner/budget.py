"""Budget caps: ``--max-bytes`` and ``--max-walltime`` stop a run, fetch or batch between units.

A :class:`Budget` counts what a command has used since it started (wall seconds and bytes) and
is asked between units of work (blocks of a run, items of a fetch, AOIs of a batch) whether the
next unit still fits. It predicts the next unit from the mean of the units done so far and stops
*before* a unit that would cross a cap, so a command ends at or under its caps (a unit's cost
varies little, so it ends within a few per cent of a cap it reaches); before any unit is done it
stops only when a cap is already spent, so every call makes progress. What was done is kept:
the ledger and the staging folder of a run (``fusecube run --resume`` or ``fusecube resume ID``
continues it), the ``.parts`` folder of a fetch (the same command again reads only the missing
items), the batch ledger (``fusecube batch run ... --resume``).

Bytes are what the command moved, as counted where it is cheapest to be right: for a run the
bytes this process read and wrote through the OS (``/proc/self/io`` ``rchar + wchar``: chunks
read and written, compressed, as on disk), for a fetch the bytes GDAL downloaded, for a batch the
bytes its AOIs recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from fusecube.errors import BudgetExceeded, ConfigError
from fusecube.runner.memory import parse_memory

#: Block events after which a run's budget is checked, and stages before which it is.
_CHECKED_STAGES = ("mask", "screen", "fusion_train", "validate", "blocks")


def io_bytes() -> int:
    """Bytes this process has read and written through the OS so far (files, pipes)."""
    try:
        counters = psutil.Process().io_counters()
    except (AttributeError, psutil.Error):  # not available on this platform
        return 0
    chars = getattr(counters, "read_chars", None)
    if chars is not None:
        return int(chars + counters.write_chars)
    return int(counters.read_bytes + counters.write_bytes)


def parse_duration(value: str | float | int) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"2h"`` or ``"1h30m"`` in seconds.

    Raises:
        ConfigError: The text is not a positive duration.
    """
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        import re

        text = str(value).strip().lower()
        parts = re.findall(r"([0-9]*\.?[0-9]+)\s*(h|m|min|s)?", text)
        if not parts or re.sub(r"[0-9.\s]|h|min|m|s", "", text):
            raise ConfigError(f"--max-walltime {value!r} is not a duration; write it like '90s', "
                              "'15m', '2h' or '1h30m'.")
        scale = {"h": 3600.0, "m": 60.0, "min": 60.0, "s": 1.0, "": 1.0}
        seconds = sum(float(number) * scale[unit] for number, unit in parts)
    if seconds <= 0:
        raise ConfigError(f"--max-walltime {value!r} must be positive, e.g. '15m'.")
    return seconds


def budget_from_options(max_bytes: str | None, max_walltime: str | None) -> Budget | None:
    """The budget of the CLI options, or None when neither cap is set.

    Args:
        max_bytes: A size such as ``"2GB"`` (decimal and binary units, see
            :func:`~fusecube.runner.memory.parse_memory`).
        max_walltime: A duration such as ``"15m"``.
    """
    if max_bytes is None and max_walltime is None:
        return None
    size = None
    if max_bytes is not None:
        try:
            size = parse_memory(max_bytes)
        except ConfigError as exc:
            raise ConfigError(f"--max-bytes {max_bytes!r} is not a size; write it like '500MB' "
                              "or '2GB'.") from exc
    seconds = parse_duration(max_walltime) if max_walltime is not None else None
    return Budget(max_bytes=size, max_seconds=seconds)


def _mb(size: float) -> str:
    return f"{size / 1e6:.1f} MB"


@dataclass
class Budget:
    """Caps on the wall time and bytes of one command, checked between units of work.

    Args:
        max_bytes: Most bytes the command may move (None: no cap).
        max_seconds: Most wall seconds the command may take (None: no cap).
    """

    max_bytes: int | None = None
    max_seconds: float | None = None
    started: float = field(default_factory=lambda: time.perf_counter())
    bytes_used: int = 0
    units: int = 0
    counter: Any = None
    """A callable returning bytes moved so far (``io_bytes`` for runs); None: bytes are added."""
    _counter_start: int = 0
    _first_unit_at: float | None = None
    _first_unit_bytes: int = 0

    def use_counter(self, counter=io_bytes) -> None:
        """Count bytes with ``counter()`` (a running total) from now on."""
        self.counter = counter
        self._counter_start = counter()

    def used(self) -> tuple[float, int]:
        """``(seconds, bytes)`` used so far."""
        if self.counter is not None:
            self.bytes_used = self.counter() - self._counter_start
        return time.perf_counter() - self.started, self.bytes_used

    def unit_started(self) -> None:
        """Mark the start of the first unit (its cost excludes what came before, e.g. setup)."""
        if self._first_unit_at is None:
            self._first_unit_at = time.perf_counter()
            self._first_unit_bytes = self.used()[1]

    def unit_done(self, nbytes: int = 0) -> None:
        """Record one finished unit (``nbytes``: its bytes, when no counter runs)."""
        if self._first_unit_at is None:  # no start marked: the units began with the budget
            self._first_unit_at, self._first_unit_bytes = self.started, 0
        self.units += 1
        if self.counter is None:
            self.bytes_used += int(nbytes)

    def next_unit(self) -> tuple[float, int]:
        """Predicted ``(seconds, bytes)`` of the next unit: the mean of those done so far."""
        if self.units == 0 or self._first_unit_at is None:
            return 0.0, 0
        seconds, nbytes = self.used()
        return ((time.perf_counter() - self._first_unit_at) / self.units,
                max(0, nbytes - self._first_unit_bytes) // self.units)

    def exceeded(self, *, predict: bool = True) -> str | None:
        """The cap the next unit would cross (or that is spent), or None when it fits."""
        seconds, nbytes = self.used()
        more_s, more_b = self.next_unit() if predict else (0.0, 0)
        if self.max_seconds is not None and seconds + more_s > self.max_seconds:
            return f"--max-walltime {self.max_seconds:g} s"
        if self.max_bytes is not None and nbytes + more_b > self.max_bytes:
            return f"--max-bytes {_mb(self.max_bytes)}"
        return None

    def progress_text(self, done: int, total: int, unit: str) -> str:
        """How far the command got: units done of total, bytes, seconds."""
        seconds, nbytes = self.used()
        where = f"after {done}/{total} {unit} done" if total > 0 else f"before the {unit}"
        return f"{where}, {_mb(nbytes)} moved, {seconds:.1f} s"

    def check(self, done: int, total: int, *, unit: str, resume: str,
              predict: bool = True) -> None:
        """Raise :class:`BudgetExceeded` when the next unit would cross a cap.

        Args:
            done: Units done so far (in all calls of the command).
            total: Units in all.
            unit: Their name (``blocks``, ``items``, ``AOIs``).
            resume: How to continue, for the message.
            predict: Whether to count the predicted next unit (False: stop only when a cap is
                already spent, e.g. at a stage boundary).
        """
        if done >= total and total > 0:
            return
        cap = self.exceeded(predict=predict and self.units > 0)
        if cap is None:
            return
        raise BudgetExceeded(
            f"Stopped at the {cap} cap {self.progress_text(done, total, unit)}; nothing "
            f"done is lost. {resume}")


class BudgetReporter:
    """A run's progress reporter that also enforces its :class:`Budget` between blocks.

    Forwards every call to the wrapped reporter; after a block is recorded (and before the
    stages up to the blocks start) it asks the budget, and on a cap marks the run ``stopped``
    in the ledger and raises :class:`BudgetExceeded` out of the runner.
    """

    def __init__(self, inner, budget: Budget, ledger, run_id: str) -> None:
        self.inner = inner
        self.budget = budget
        self.ledger = ledger
        self.run_id = run_id
        self.done = 0
        self.total = 0
        if budget.counter is None:
            budget.use_counter()

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Forward a stage counter."""
        if self.inner is not None:
            self.inner(stage, done, total)

    def event(self, level: str, kind: str, **fields: Any) -> None:
        """Forward an event, then check the budget at blocks and stage starts."""
        inner = self.inner
        if inner is not None and hasattr(inner, "event"):
            inner.event(level, kind, **fields)
        elif inner is not None and level == "block" and kind == "done":
            inner("blocks", fields["done"], fields["total"])
        if fields.get("done") is not None:
            self.done = int(fields["done"])
        if fields.get("total"):
            self.total = int(fields["total"])
        if level == "block" and kind == "done":
            self.budget.unit_done()
            self._check(predict=True)
        elif level == "stage" and kind == "start" and fields.get("stage") in _CHECKED_STAGES:
            self._check(predict=False)
            if fields.get("stage") == "blocks":
                self.budget.unit_started()

    def _check(self, *, predict: bool) -> None:
        try:
            self.budget.check(self.done, self.total, unit="blocks", predict=predict,
                              resume=f"Continue with `fusecube run CONFIG --resume` or "
                                     f"`fusecube resume {self.run_id}`.")
        except BudgetExceeded as exc:
            self.ledger.set_status(self.run_id, "stopped", str(exc))
            self.ledger.event(self.run_id, "run", "stopped", str(exc), done=self.done,
                              total=self.total, cause="budget")
            raise


def budget_reporter(progress, budget: Budget | None, ledger, run_id: str):
    """``progress`` wrapped to enforce ``budget`` (``progress`` itself when there is none)."""
    if budget is None:
        return progress
    return BudgetReporter(progress, budget, ledger, run_id)


def fetch_guard(budget: Budget | None, resume: str):
    """An ``on_item`` hook for a STAC fetch that stops it at ``budget``'s caps (or None).

    Each item read counts its downloaded bytes; before the next one is taken the budget is
    asked. Items already read stay in the fetch's ``.parts`` folder, so the same command
    again reads only the rest.
    """
    if budget is None:
        return None

    def on_item(report) -> None:
        budget.unit_done(report.bytes_read)
        budget.check(report.done, report.total, unit="items", resume=resume)

    budget.unit_started()
    return on_item


def check_batch(budget: Budget | None, ledger, batch_id: str, done: int, total: int) -> None:
    """Between AOIs of a batch: raise :class:`BudgetExceeded` (batch marked ``stopped``) at a cap.

    AOIs already running finish (and are recorded); none is started after the cap.
    """
    if budget is None:
        return
    try:
        budget.check(done, total, unit="AOIs",
                     resume="Continue with the same `fusecube batch run ... --resume`.")
    except BudgetExceeded as exc:
        ledger.set_status(batch_id, "stopped", str(exc))
        ledger.event(batch_id, "run", "stopped", str(exc), done=done, total=total, cause="budget")
        raise
