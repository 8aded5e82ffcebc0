"""Scale-out: the same blocks as tasks on a Dask distributed cluster.

Each task runs :func:`fusecube.runner.tasks.run_block_task` on a worker: it reads its window
of the input cube, runs all stages and writes its region of the partial store, which must
therefore be on a filesystem the workers share with the runner. The runner process keeps the
ledger: a block is marked done when its task has returned, i.e. after the worker wrote it.
At most two tasks per worker are in flight, so a signal or ``fusecube stop`` waits only for
those.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import xarray as xr

from fusecube.config import RunConfig
from fusecube.errors import ConfigError, require
from fusecube.runner.inputs import RunInputs
from fusecube.runner.tasks import BlockOutcome, BlockTask, run_block, run_block_task

log = logging.getLogger(__name__)

#: Tasks in flight per worker.
IN_FLIGHT_PER_WORKER = 2


def parse_scheduler(spec: str) -> tuple[str, int | str]:
    """``"local:4"`` → ``("local", 4)``; ``"tcp://host:8786"`` → ``("address", spec)``."""
    match = re.fullmatch(r"local(?::(\d+))?", spec.strip())
    if match:
        workers = int(match.group(1) or (os.cpu_count() or 1))
        if workers < 1:
            raise ConfigError(f"Scheduler {spec!r} asks for no workers; use e.g. local:4.")
        return "local", workers
    if re.fullmatch(r"(tcp|tls|inproc|ucx|ws|wss)://\S+", spec.strip()):
        return "address", spec.strip()
    raise ConfigError(
        f"Scheduler {spec!r} is not understood; use 'local:N' for a local cluster of N workers "
        "or the address of a running scheduler such as 'tcp://10.0.0.5:8786'.")


@contextmanager
def dask_client(spec: str, memory_limit: int):
    """A ``distributed.Client`` for ``spec`` (a local cluster is started and closed here)."""
    distributed = require("distributed", "dist")
    kind, target = parse_scheduler(spec)
    cluster = None
    try:
        if kind == "local":
            cluster = distributed.LocalCluster(
                n_workers=int(target), threads_per_worker=1, processes=True,
                memory_limit=max(memory_limit // int(target), 256 * 1024**2),
                dashboard_address=None, silence_logs=logging.ERROR)
            client = distributed.Client(cluster)
        else:
            try:
                client = distributed.Client(target, timeout="20s")
            except OSError as exc:
                raise ConfigError(
                    f"Dask scheduler {target} cannot be reached ({exc}); start it with "
                    "`dask scheduler` (and workers with `dask worker ADDRESS`) or use "
                    "--scheduler local:N.") from exc
    except BaseException:
        if cluster is not None:
            cluster.close()
        raise
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_blocks_dask(pending: list[BlockTask], *, scheduler: str, cube: xr.Dataset,
                    inputs: RunInputs, config: RunConfig, model,
                    store: Path, memory_limit: int, control, state: dict,
                    make_template: Callable[[xr.Dataset], None] | None,
                    record_block: Callable[[BlockOutcome], None], events) -> None:
    """Run ``pending`` blocks on a Dask cluster, recording each in the ledger as it returns.

    Args:
        pending: Blocks not yet written.
        scheduler: ``local:N`` or a scheduler address.
        cube: The input cube (used here only for the first block when the store is new).
        inputs: The run's resolved inputs (sent once to every worker, which opens
            ``inputs.cube_path`` itself).
        config: The run configuration.
        model: The fusion model or None (sent once to every worker).
        store: The partial output store (shared filesystem).
        memory_limit: The run's memory budget, split between local workers.
        control: The run's :class:`~fusecube.runner.control.RunControl`.
        state: The runner's ``done``/``total`` counters.
        make_template: Creates the store from a processed block, when it does not exist yet.
        record_block: Marks a block done in the ledger.
        events: The run's event fan-out.
    """
    from distributed import as_completed

    pending = list(pending)
    if make_template is not None and pending:  # the first block here: it creates the store
        first = pending.pop(0)
        control.checkpoint(state["done"], state["total"])
        record_block(run_block(first, cube=cube, inputs=inputs, config=config, model=model,
                               store=store, before_write=make_template))
    if not pending:
        return
    with dask_client(scheduler, memory_limit) as client:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        events.emit("stage", "progress", f"Dask: {n_workers} workers at {client.scheduler.address}",
                    stage="blocks", workers=n_workers, done=state["done"], total=state["total"])
        shared = {
            "inputs": client.scatter(inputs, broadcast=True),
            "model": client.scatter(model, broadcast=True) if model is not None else None,
        }
        queue = iter(pending)
        futures = as_completed()
        in_flight = []

        def submit_next() -> bool:
            task = next(queue, None)
            if task is None:
                return False
            future = client.submit(run_block_task, task, inputs=shared["inputs"], config=config,
                                   model=shared["model"], store=str(store), pure=False,
                                   key=f"fusecube-block-{control.run_id}-{task.index[0]}-{task.index[1]}")
            futures.add(future)
            in_flight.append(future)
            return True

        limit = IN_FLIGHT_PER_WORKER * n_workers
        for _ in range(limit):
            if not submit_next():
                break
        try:
            while in_flight:
                future = next(futures)
                in_flight.remove(future)
                record_block(future.result())
                request = "stop" if control.signal_name else control.ledger.control(control.run_id)
                if request == "run":
                    submit_next()
                elif not in_flight:  # paused or stopping: all running blocks are recorded
                    control.checkpoint(state["done"], state["total"])
                    while len(in_flight) < limit and submit_next():
                        pass
        except BaseException:
            client.cancel(in_flight)
            raise
