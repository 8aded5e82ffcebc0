"""Stopping and pausing a run: signals, requests from other shells, heartbeat, test hooks.

SIGINT/SIGTERM ask the run to stop after the current block; a second one abandons the block
(it stays pending in the ledger and is redone on resume). ``fusecube pause|resume|stop``
write a request into the ledger, which the run reads between blocks.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

from fusecube.errors import RunInterrupted
from fusecube.runner.ledger import Ledger
from fusecube.runner.memory import peak_rss_bytes, rss_bytes

log = logging.getLogger(__name__)

#: Exit codes by cause, shell style (128 + signal number).
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143, "stop": 130}
#: Seconds between heartbeats (ledger liveness, memory, progress tick).
HEARTBEAT_S = 2.0
#: Seconds between looks at the ledger while paused.
PAUSE_POLL_S = 0.5


class AbandonRun(BaseException):
    """Raised inside the run by a second signal: leave the current block unfinished."""


def fault_point(name: str) -> None:
    """Test hook: SIGKILL this process the n-th time ``name`` is reached.

    Set ``FUSECUBE_TEST_KILL_AT=name:n`` (e.g. ``block_written:3``) to kill the process at a
    precise point of the run; unset, this does nothing.
    """
    spec = os.environ.get("FUSECUBE_TEST_KILL_AT")
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _fault_counts[name] = _fault_counts.get(name, 0) + 1
    if _fault_counts[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_fault_counts: dict[str, int] = {}


def block_delay() -> float:
    """Test hook: seconds to sleep per block (``FUSECUBE_TEST_BLOCK_DELAY``), to catch a run midway."""
    return float(os.environ.get("FUSECUBE_TEST_BLOCK_DELAY", "0") or 0)


class RunControl:
    """Signals, ledger requests and the heartbeat of one run.

    Args:
        ledger: The run ledger.
        run_id: The run.
        on_event: Called with ``(kind, message)`` for pause/resume/stop notices.
        on_tick: Called on every heartbeat with ``(rss, peak_rss)``.
    """

    def __init__(self, ledger: Ledger, run_id: str, *,
                 on_event: Callable[[str, str], None] | None = None,
                 on_tick: Callable[[int, int], None] | None = None) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.on_event = on_event or (lambda kind, message: None)
        self.on_tick = on_tick or (lambda rss, peak: None)
        self.signal_name: str | None = None
        self.stage: str | None = None
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ signals
    def _handle(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None:  # second signal: abandon the block now
            raise AbandonRun(name)
        self.signal_name = name
        self.on_event("signal", f"{name} received: finishing the current block, then stopping "
                                f"(send it again to abandon the block)")

    @contextmanager
    def installed(self):
        """Install the signal handlers and start the heartbeat for the ``with`` body."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._handle)
        self._thread = threading.Thread(target=self._beat, name="fusecube-heartbeat", daemon=True)
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.tick()
            except Exception as exc:  # a closed progress stream must not print a traceback
                log.debug("heartbeat failed: %s", exc)

    def tick(self) -> None:
        """Refresh the ledger heartbeat and memory figures (also called from the heartbeat thread)."""
        rss = rss_bytes()
        self.peak_rss = max(self.peak_rss, rss, peak_rss_bytes())
        try:
            self.ledger.heartbeat(self.run_id, rss=rss, peak_rss=self.peak_rss)
        except Exception as exc:  # a busy ledger must not kill the heartbeat thread
            log.warning("ledger heartbeat failed: %s", exc)
        if not self._stop.is_set():
            self.on_tick(rss, self.peak_rss)

    # ------------------------------------------------------------------ checkpoints
    def interrupted(self, done: int, total: int, *, abandoned: bool = False) -> RunInterrupted:
        """The error that ends a run stopped by a signal or a stop request."""
        cause = self.signal_name or "stop"
        how = "abandoned the current block and stopped" if abandoned else "stopped cleanly"
        by = f"by {cause}" if cause != "stop" else "by a stop request"
        message = (f"Run {self.run_id} {how} {by} after {done}/{total} blocks; nothing written is "
                   f"lost. Resume it with `fusecube resume {self.run_id}`.")
        status = "stopped" if cause == "stop" else "interrupted"
        self.ledger.set_status(self.run_id, status, message)
        self.ledger.event(self.run_id, "run", status, message, signal=cause, done=done, total=total)
        exc = RunInterrupted(message)
        exc.exit_code = EXIT_CODES[cause]
        return exc

    def checkpoint(self, done: int, total: int) -> None:
        """Between blocks: stop on a signal or stop request, wait here while paused."""
        if self.signal_name:
            raise self.interrupted(done, total)
        request = self.ledger.control(self.run_id)
        if request == "stop":
            raise self.interrupted(done, total)
        if request != "pause":
            return
        self.ledger.set_status(self.run_id, "paused", f"paused after {done}/{total} blocks")
        self.on_event("paused", f"run {self.run_id} paused after {done}/{total} blocks; "
                                f"`fusecube resume {self.run_id}` continues it")
        while request == "pause":
            time.sleep(PAUSE_POLL_S)
            if self.signal_name:
                raise self.interrupted(done, total)
            request = self.ledger.control(self.run_id)
        if request == "stop":
            raise self.interrupted(done, total)
        self.ledger.set_status(self.run_id, "running")
        self.on_event("resumed", f"run {self.run_id} resumed")
