"""Runs started on behalf of others (the API): confined to a server's folders, run in threads.

Each run executes in a background thread through the runner, which records it in the ledger
as it starts; the caller gets the run id as soon as that record exists and reads everything
else (state, stage, blocks, ETA) back from the ledger, like ``fusecube status`` does. Pause
and stop go through the ledger too.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from fusecube.config import CubeSource, RunConfig
from fusecube.errors import ApiError, FusecubeError

log = logging.getLogger(__name__)

#: Longest wait for a new run to appear in the ledger before the API answers anyway.
START_TIMEOUT_S = 30.0


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def confine(config: RunConfig, *, runs_dir: Path, data_dir: Path, ledger: str,
            max_run_pixels: int) -> RunConfig:
    """Place a submitted run inside a server's folders and apply the server's limits.

    A run writes to ``runs_dir/<out>`` (a fresh folder when ``out`` is not given); the cube,
    mask and model it reads must lie inside ``data_dir``; the ledger is the server's.

    Args:
        config: The submitted run configuration.
        runs_dir: Folder holding the output folder of each submitted run.
        data_dir: Folder every input of a submitted run must lie in.
        ledger: The server's run ledger.
        max_run_pixels: Largest synthetic scene (``width * height``) a run may ask for.

    Raises:
        ApiError: 422 for a path outside the server's folders, another ledger or scheduler,
            or a synthetic scene larger than ``max_run_pixels``.
    """
    if "out" in config.model_fields_set:
        out = config.out if config.out.is_absolute() else runs_dir / config.out
        if not _inside(out, runs_dir) or out.resolve() == runs_dir.resolve():
            raise ApiError(f"Output folder {str(config.out)!r} must be a sub-folder of the "
                           f"server's runs folder {runs_dir}; give a relative name such as "
                           "'demak-2024'.", 422)
    else:
        out = runs_dir / f"run-{uuid.uuid4().hex[:10]}"

    def readable(value: Path, what: str) -> Path:
        path = value if value.is_absolute() else data_dir / value
        if not _inside(path, data_dir):
            raise ApiError(f"The {what} {str(value)!r} must lie inside the server's data folder "
                           f"{data_dir}; copy it there and give its relative path.", 422)
        return path.resolve()

    update: dict = {"out": out.resolve(), "ledger": ledger}
    if config.ledger not in (None, ledger):
        raise ApiError("Runs submitted to the API use the server's ledger; leave 'ledger' out.",
                       422)
    if config.scheduler is not None and not config.scheduler.startswith("local:"):
        raise ApiError("Runs submitted to the API may only use a local Dask cluster "
                       "('local:N') or none; leave 'scheduler' out.", 422)
    source = config.source
    if isinstance(source, CubeSource):
        update["source"] = source.model_copy(update={"path": readable(source.path, "cube")})
    elif source.width * source.height > max_run_pixels:
        raise ApiError(f"A synthetic scene of {source.width} x {source.height} px is larger than "
                       f"this server runs ({max_run_pixels} pixels); ask for a smaller "
                       "one or run it with the `fusecube` command.", 422)
    if config.mask not in ("cube", "none"):
        update["mask"] = str(readable(Path(config.mask), "mask"))
    if config.fusion_model is not None:
        update["fusion_model"] = readable(config.fusion_model, "fusion model")
    return config.model_copy(update=update)


class _StartWatcher:
    """A progress reporter that notes the run id of the run's ``start`` event."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.started = threading.Event()

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Plain progress ticks are not needed here (the ledger has them)."""

    def event(self, level: str, kind: str, **fields) -> None:
        """Record the run id from the first run-level event."""
        if self.run_id is None and level == "run" and fields.get("run"):
            self.run_id = str(fields["run"])
            self.started.set()


class RunManager:
    """Background threads executing runs, at most ``max_active`` at once.

    Args:
        max_active: Runs allowed to execute at the same time in this process.
    """

    def __init__(self, max_active: int) -> None:
        self.max_active = max_active
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._pending = 0
        self.errors: dict[str, str] = {}

    def active(self) -> list[str]:
        """Ids of the runs executing in this server now."""
        with self._lock:
            return [rid for rid, t in self._threads.items() if t.is_alive()]

    def _start(self, target: Callable[[_StartWatcher], object], what: str) -> str:
        with self._lock:
            running = sum(t.is_alive() for t in self._threads.values()) + self._pending
            if running >= self.max_active:
                raise ApiError(f"This server already executes {running} run(s), its limit "
                               f"(max_active_runs={self.max_active}); wait for one to finish, or "
                               "pause/stop one, then submit again.", 429)
            self._pending += 1
        watcher = _StartWatcher()
        failure: list[BaseException] = []

        def body() -> None:
            try:
                target(watcher)
            except FusecubeError as exc:
                failure.append(exc)
                log.info("%s ended: %s", what, exc)
            except BaseException as exc:  # noqa: BLE001 - recorded in the ledger by the runner
                failure.append(exc)
                log.exception("%s failed", what)
            finally:
                watcher.started.set()

        thread = threading.Thread(target=body, name=f"fusecube-{what}", daemon=True)
        try:
            thread.start()
            watcher.started.wait(START_TIMEOUT_S)
            if watcher.run_id is None:
                if failure and isinstance(failure[0], FusecubeError):
                    raise failure[0]
                if failure:
                    raise ApiError("The run could not start because of an internal error; the "
                                   "server log has the details.", 500)
                raise ApiError(f"The run did not start within {START_TIMEOUT_S:.0f} s; the "
                               "ledger may be locked by another process. Try again.", 503)
            with self._lock:
                self._threads[watcher.run_id] = thread
            return watcher.run_id
        finally:
            with self._lock:
                self._pending -= 1

    def submit(self, config: RunConfig) -> str:
        """Start a new run of ``config`` in the background; returns its run id.

        Raises:
            ApiError: 429 when ``max_active`` runs already execute.
            FusecubeError: The run failed before it was recorded (e.g. ledger unusable).
        """
        from fusecube.runner import run

        return self._start(lambda watcher: run(config, progress=watcher), "run")

    def resume(self, run_id: str, ledger: str) -> str:
        """Continue the stopped/interrupted/crashed run ``run_id`` in the background."""
        from fusecube.runner import resume_run

        return self._start(lambda watcher: resume_run(run_id, watcher, ledger=ledger), "resume")

    def shutdown(self, ledger, timeout: float = 30.0) -> None:
        """Ask every run of this server to stop after its current block and wait for them.

        Args:
            ledger: The :class:`~fusecube.runner.ledger.Ledger` to send the stop requests to.
            timeout: Seconds to wait for each run.
        """
        for run_id in self.active():
            try:
                ledger.request(run_id, "stop")
            except FusecubeError as exc:
                log.warning("could not ask run %s to stop: %s", run_id, exc)
        for run_id, thread in list(self._threads.items()):
            thread.join(timeout)
            if thread.is_alive():
                log.warning("run %s still running after %.0f s at shutdown", run_id, timeout)
