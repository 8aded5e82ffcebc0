"""Progress of neural fusion training: step, loss and ETA, sent to whoever listens.

Training calls :func:`report_step` after every optimiser step; it costs nothing unless a
listener is installed with :func:`training_progress` (the runner installs one that turns the
updates into ``stage``/``train`` events for the console, JSON lines, the ledger and the API).
Updates are throttled in time, and the loss (a device tensor) is read only when one is sent,
so a GPU is synchronised at most once per interval.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

#: Seconds between two updates (the last step is always sent).
EVERY_S = 1.0


@dataclass
class _Tracker:
    emit: Callable[..., None]
    every_s: float
    started: float = field(default_factory=time.monotonic)
    last: float = -math.inf
    first: tuple[int, float] | None = None
    """The first step seen and when: the rate counts from there (the first step pays for
    start-up, compilation and caches, and would make the first ETA far too long)."""

    def step(self, done: int, total: int, loss) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = (done, now)
        if done < total and now - self.last < self.every_s:
            return
        self.last = now
        elapsed = now - self.started
        steps, seconds = done - self.first[0], now - self.first[1]
        rate = steps / seconds if steps > 0 and seconds > 0 else None
        eta = (total - done) / rate if rate else (0.0 if done >= total else None)
        value = float(loss) if loss is not None else None
        self.emit(step=int(done), total=int(total),
                  loss=None if value is None or not math.isfinite(value) else round(value, 6),
                  eta_s=None if eta is None else round(eta, 1),
                  steps_per_s=None if rate is None else round(rate, 2),
                  elapsed_s=round(elapsed, 1))


_LISTENER: ContextVar[_Tracker | None] = ContextVar("fusecube_training_progress", default=None)


@contextmanager
def training_progress(emit: Callable[..., None], every_s: float = EVERY_S) -> Iterator[None]:
    """Send training updates to ``emit(step=, total=, loss=, eta_s=, steps_per_s=, elapsed_s=)``.

    Args:
        emit: Called at most once per ``every_s`` seconds, and for the last step.
        every_s: Seconds between updates.
    """
    token = _LISTENER.set(_Tracker(emit, every_s))
    try:
        yield
    finally:
        _LISTENER.reset(token)


def report_step(done: int, total: int, loss=None) -> None:
    """Training finished step ``done`` of ``total`` with ``loss`` (a float or a 0-d tensor)."""
    tracker = _LISTENER.get()
    if tracker is not None:
        tracker.step(done, total, loss)
