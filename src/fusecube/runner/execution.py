"""Block runner: cut the grid into spatial blocks (all time steps), run the stages, write regions.

A run is recorded in the ledger (see :mod:`fusecube.runner.ledger`) before it starts; each
block is read, processed and written on its own into a partial zarr store named after the
run, and marked done in the ledger only once its region is durably written. A run killed
at any point resumes from the ledger and writes the same bytes as an uninterrupted one; the
store is renamed to ``result.zarr`` when all blocks are done.

The output folder follows the output rule (:func:`fusecube.storage.atomic.prepare_output`,
checked before any work): a run writes into a staging folder beside it
(:mod:`fusecube.runner.staging`), its results pass the result gates
(:mod:`fusecube.quality.result_gates`), and only then does the staging folder replace the
output folder, so a failed, killed or implausible run leaves the previous output as it was.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from pathlib import Path

import dask
import xarray as xr

from fusecube.config import RunConfig
from fusecube.cube import read_cube, validate_cube
from fusecube.errors import FusecubeError, LedgerError, RunInterrupted
from fusecube.grid.tiles import tile_slices
from fusecube.products.cf import describe_store
from fusecube.quality.gates import apply_screen
from fusecube.runner import staging
from fusecube.runner.budget import Budget, budget_reporter
from fusecube.runner.control import AbandonRun, RunControl, fault_point
from fusecube.runner.gapfill_choice import choose_gapfill, needs_model
from fusecube.runner.halo import HaloReader
from fusecube.runner.inputs import resolve_mask, run_inputs, screen_inputs
from fusecube.runner.ledger import Ledger, RunRecord
from fusecube.runner.memory import (
    MB,
    MemoryGuard,
    block_edge_for,
    default_memory_limit,
    keep_heap_flat,
    parse_memory,
    peak_rss_bytes,
    release_memory,
)
from fusecube.runner.pipeline import StageTimer, gapfill_config
from fusecube.runner.progress import training_events
from fusecube.runner.result import RunResult
from fusecube.runner.source_step import Progress, existing_source, prepare_source
from fusecube.runner.store import partial_store_path, verify_store, write_template
from fusecube.runner.tasks import BlockOutcome, BlockTask, run_block, worker_id
from fusecube.stages.gapfill import context_halo
from fusecube.storage.atomic import prepare_output, replace_path
from fusecube.storage.remote import remote_output

log = logging.getLogger(__name__)

#: Configuration fields that change how a run executes, not what it computes.
RUNTIME_FIELDS = {"memory_limit", "ledger", "scheduler", "result_gates"}
#: Stages of a run, in order (``fusion_train`` only with ``gapfill: fusion``).
RUN_STAGES = ("source", "mask", "screen", "fusion_train", "validate", "blocks", "finalize",
              "evaluate", "products", "report")
"""The stages of a run, in order (each recorded in the ledger; ``fusion_train`` only for fusion,
the last three only with ``report``)."""


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return peak_rss_bytes() / MB


def fingerprint(config: RunConfig) -> str:
    """Hash of what a configuration computes (runtime options such as the ledger excluded)."""
    data = config.model_dump(mode="json", exclude=RUNTIME_FIELDS)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


def new_run_id() -> str:
    """A sortable, unique run id such as ``20251125-131500-3f2a9c``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


class RunEvents:
    """Fans run events out to the progress reporter, the ledger and the log."""

    def __init__(self, ledger: Ledger, run_id: str, progress: Progress | None) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.progress = progress

    def emit(self, level: str, kind: str, message: str = "", *, record: bool = True,
             **fields) -> None:
        """Send one event (``record=False`` keeps it out of the ledger)."""
        if self.progress is not None:
            if hasattr(self.progress, "event"):
                self.progress.event(level, kind, run=self.run_id, message=message, **fields)
            elif level == "block" and kind == "done":
                self.progress("blocks", fields["done"], fields["total"])
        if record:
            self.ledger.event(self.run_id, level, kind, message, **fields)
        if message:
            log.info("%s", message)


class _Stages:
    """Runs each stage once per run: skipped on resume when the ledger says it is done."""

    def __init__(self, ledger: Ledger, run_id: str, events: RunEvents, timer: StageTimer) -> None:
        self.ledger, self.run_id, self.events, self.timer = ledger, run_id, events, timer
        self.done = ledger.done_stages(run_id)

    def start(self, name: str, total: int | None = None) -> float:
        self.ledger.stage_started(self.run_id, name)
        self.events.emit("stage", "start", f"stage {name} started", stage=name, total=total)
        return time.perf_counter()

    def finish(self, name: str, started: float) -> None:
        seconds = time.perf_counter() - started
        self.ledger.stage_done(self.run_id, name, seconds)
        self.done.add(name)
        self.events.emit("stage", "done", f"stage {name} done in {seconds:.1f} s", stage=name,
                         seconds=round(seconds, 3))

    def run(self, name: str, func, *args, **kwargs):
        started = self.start(name)
        result = self.timer.time(name, func, *args, **kwargs)
        self.finish(name, started)
        return result


def _open_run(config: RunConfig, ledger: Ledger, resume: bool | str, memory_limit: int,
              ) -> tuple[RunConfig, RunRecord | None]:
    """The run to resume (and its recorded configuration), or None for a new run."""
    out = str(config.out)
    busy = [r for r in ledger.unfinished_runs(out) if r.alive]
    if busy and not (isinstance(resume, str) and busy[0].id.startswith(resume)):
        raise LedgerError(
            f"Run {busy[0].id} (pid {busy[0].pid} on {busy[0].host}) is writing to {out} now; "
            f"wait for it, stop it with `fusecube stop {busy[0].id}`, or choose another --out.")
    if isinstance(resume, str):
        record = ledger.get_run(resume)
        stored = RunConfig.model_validate_json(record.config)
        overrides = {k: getattr(config, k) for k in RUNTIME_FIELDS if getattr(config, k) is not None}
        config = stored.model_copy(update=overrides)
    elif resume:
        record = ledger.find_resumable(out, fingerprint(config))
        if record is None:
            other = ledger.find_other_config(out, fingerprint(config))
            if other is not None:
                raise LedgerError(
                    f"Cannot resume: the unfinished run {other.id} in {out} used a different "
                    f"configuration. Resume it with `fusecube resume {other.id}`, or run without "
                    "--resume (or with another --out) to start afresh.")
            log.info("no unfinished run of this configuration in %s: starting a new one", out)
            return config, None
    else:
        return config, None
    if record.alive:
        raise LedgerError(
            f"Run {record.id} is still running (pid {record.pid} on {record.host}); pause or stop "
            f"it with `fusecube pause|stop {record.id}` before resuming it here.")
    if record.status == "done":
        raise LedgerError(f"Run {record.id} already finished; its results are in {record.out}. "
                          "Start a new run without --resume to compute them again.")
    return config, record


def run(config: RunConfig, progress: Progress | None = None, *,
        resume: bool | str = False, budget: Budget | None = None) -> RunResult:
    """Run the whole pipeline block by block, recorded in the ledger, and write products.

    Args:
        config: The run configuration.
        progress: Optional reporter: a callable ``(stage, done, total)``, optionally with an
            ``event(level, kind, **fields)`` method for hierarchical events
            (see :mod:`fusecube.runner.progress`).
        resume: ``True`` to continue the newest unfinished run of this configuration and
            output folder (a new run if there is none); a run id to continue that run with
            its recorded configuration; ``False`` for a new run.
        budget: Caps on wall time and bytes, checked between blocks (:mod:`.budget`).

    Returns:
        A :class:`RunResult` with paths, stage timings and memory.

    Raises:
        RunInterrupted: A signal or a ``fusecube stop`` ended the run before it finished;
            it can be resumed.
    """
    target = remote_output(config.out)  # an fsspec URL: run in a local folder, then copy
    if target is not None:
        return target.publish(run(config.model_copy(update={"out": target.workdir}), progress,
                                  resume=resume, budget=budget))
    config = config.model_copy(update={"out": Path(config.out).resolve()})
    keep_heap_flat()
    memory_limit = (parse_memory(config.memory_limit) if config.memory_limit
                    else default_memory_limit())
    ledger = Ledger(config.ledger)
    config, record = _open_run(config, ledger, resume, memory_limit)
    if config.memory_limit:
        memory_limit = parse_memory(config.memory_limit)
    out = config.out
    prepare_output(out, kind="run")
    if record is not None and staging.published(out, record.id):  # killed after its swap
        ledger.set_status(record.id, "done", f"results published in {out}")
        ledger.supersede(str(out), record.id)
        raise LedgerError(f"Run {record.id} had already finished: its results are in {out} "
                          "(it was stopped while recording that). Nothing to resume.")
    scheduler = config.scheduler or ""
    if record is None:
        run_id = new_run_id()
        store = partial_store_path(staging.staging_dir(out, run_id), run_id)
        ledger.create_run(run_id=run_id, out=str(out), store=str(store),
                          fingerprint=fingerprint(config), config=config.model_dump_json(),
                          memory_limit=memory_limit, scheduler=scheduler)
    else:
        run_id = record.id
        ledger.claim_run(run_id, memory_limit=memory_limit, scheduler=scheduler)
    events = RunEvents(ledger, run_id, budget_reporter(progress, budget, ledger, run_id))
    state = {"done": 0, "total": 0, "stage": ""}

    def notice(kind: str, message: str) -> None:
        events.emit("run", kind, message, done=state["done"], total=state["total"])

    def tick(rss: int, peak: int) -> None:
        events.emit("run", "heartbeat", record=False, stage=state["stage"], done=state["done"],
                    total=state["total"], rss_mb=round(rss / MB, 1), peak_rss_mb=round(peak / MB, 1))

    control = RunControl(ledger, run_id, on_event=notice, on_tick=tick)
    verb = "resumed" if record is not None else "started"
    events.emit("run", "start", f"run {run_id} {verb}: output {out}, memory limit "
                f"{memory_limit / MB:.0f} MB, ledger {ledger.url}",
                n_stages=len(RUN_STAGES) - (not needs_model(config)) - 3 * (not config.report),
                resumed=record is not None)
    try:
        with control.installed():
            try:
                staged = config.model_copy(update={"out": staging.open_staging(out, run_id)})
                result = _execute(staged, run_id, ledger, events, control, state, memory_limit,
                                  progress, out)
            except AbandonRun as exc:
                raise control.interrupted(state["done"], state["total"], abandoned=True) from exc
            except KeyboardInterrupt as exc:  # no handler installed (not the main thread)
                control.signal_name = "SIGINT"
                raise control.interrupted(state["done"], state["total"], abandoned=True) from exc
    except RunInterrupted:
        raise
    except FusecubeError as exc:
        ledger.set_status(run_id, "failed", str(exc))
        ledger.event(run_id, "run", "failed", str(exc))
        staging.discard_failed(out, run_id, exc)  # not one to resume: out stays as it was
        raise
    except Exception as exc:
        ledger.set_status(run_id, "failed", f"{type(exc).__name__}: {exc}")
        ledger.event(run_id, "run", "failed", f"{type(exc).__name__}: {exc}")
        staging.discard_failed(out, run_id, exc)
        raise
    finally:
        ledger.dispose()
        staging.drop_if_empty(out, run_id)  # a run failed before writing leaves nothing
    return result


def _execute(config: RunConfig, run_id: str, ledger: Ledger, events: RunEvents,
             control: RunControl, state: dict, memory_limit: int,
             progress: Progress | None, final: Path) -> RunResult:
    """The stages of a run, written into ``config.out`` (the staging folder of ``final``)."""
    started = time.perf_counter()
    out = config.out
    timer = StageTimer()
    stages = _Stages(ledger, run_id, events, timer)

    def enter(name: str) -> None:
        state["stage"] = name
        control.checkpoint(state["done"], state["total"])

    enter("source")
    if "source" in stages.done and existing_source(config)[0].exists():
        cube_path, truth_path = existing_source(config)
    else:
        t0 = stages.start("source")
        cube_path, truth_path = timer.time("source", prepare_source, config, progress)
        stages.finish("source", t0)
    cube = read_cube(cube_path, chunks={})
    # whole-cube passes one chunk at a time: dask's thread pool would hold a chunk per core
    # (and grow the heap with the AOI), which would set the run's peak memory
    with dask.config.set(scheduler="synchronous"):
        validate_cube(cube)
        enter("mask")
        mask, mask_report = stages.run("mask", resolve_mask, config, cube)
        enter("screen")
        screen = stages.run("screen", screen_inputs, config, cube, mask)
    inputs = run_inputs(config, cube_path, truth_path, mask, mask_report, screen)
    release_memory()
    model = None
    if needs_model(config):  # load the given model or train one on this scene
        from fusecube.fusion.neural.workflows import model_for_run

        enter("fusion_train")
        saved = out / "fusion_model.pt"
        if "fusion_train" in stages.done and config.fusion_model is None and saved.exists():
            # the model this run trained before it was interrupted: same weights, same output
            model = model_for_run(cube, config.model_copy(update={"fusion_model": saved}))
        else:
            with training_events(events.emit):  # step, loss, ETA: console, JSON, ledger, API
                model = stages.run("fusion_train", model_for_run, cube, config)

    enter("validate")
    with dask.config.set(scheduler="synchronous"):
        choice = stages.run("validate", choose_gapfill, config, apply_screen(cube, screen), inputs,
                            model)
    events.emit("run", "gapfill", f"gap-fill: {choice.verdict}", chosen=choice.chosen,
                requested=choice.requested)
    if choice.chosen != "fusion":
        model = None  # trained and scored, not used: the blocks need no halo or torch
    # the blocks, the smoothing weight and the products follow the method the run uses
    update = {"gapfill": choice.chosen}
    if config.gapfill == "auto" and choice.chosen == "whittaker":
        update["gapfill_linear_below"] = choice.linear_below  # as validated
    config = config.model_copy(update=update)
    if config.provenance:  # σ of the filled NDVI from held-out residuals of that method
        from fusecube.runner.sigma_fit import fit_run_sigma

        with dask.config.set(scheduler="synchronous"):
            inputs.sigma = stages.run("uncertainty", fit_run_sigma, config,
                                      apply_screen(cube, screen), inputs, model)
    release_memory()

    geobox = cube.odc.geobox
    record = ledger.get_run(run_id)
    if record.n_blocks == 0:
        edge = block_edge_for(memory_limit, cube.sizes["time"], config.block_size,
                              fusion=config.gapfill == "fusion")
        ledger.add_blocks(run_id, edge, list(tile_slices(geobox, edge)))
    else:
        edge = record.block_edge
    regions = list(tile_slices(geobox, edge))
    store = Path(record.store)
    result_path = out / "result.zarr"
    done = ledger.done_blocks(run_id)
    resumed = len(done)
    state.update(done=len(done), total=len(regions))
    guard = MemoryGuard(memory_limit)
    peaks: dict[str, int] = {}  # peak RSS of each process that ran blocks

    if "finalize" not in stages.done and not store.exists():
        renamed = len(done) == len(regions) and result_path.exists()  # killed right after
        if done and not renamed:
            raise LedgerError(
                f"Run {run_id}: {len(done)} blocks are recorded as written but the partial "
                f"store {store} is gone; start a new run (without --resume).")
        stages.done.discard("template")
    if "finalize" not in stages.done:
        enter("blocks")
        t_blocks = stages.start("blocks", total=len(regions))
        if done:
            events.emit("stage", "progress", f"resuming: {len(done)}/{len(regions)} blocks "
                        "already written", stage="blocks", done=len(done), total=len(regions))
        pending = [BlockTask(index, ys, xs) for index, (ys, xs) in regions if index not in done]

        def make_template(first: xr.Dataset) -> None:
            ledger.stage_started(run_id, "template", current=False)
            write_template(first, geobox, edge, store)
            fault_point("template_written")
            ledger.stage_done(run_id, "template", 0.0)
            stages.done.add("template")

        def record_block(outcome: BlockOutcome) -> None:
            ledger.block_done(run_id, outcome.index, seconds=outcome.seconds,
                              rss=float(outcome.rss), worker=outcome.worker)
            fault_point("block_done")
            for name, seconds in outcome.stage_seconds.items():
                timer.seconds[name] += seconds
            peaks[outcome.worker] = max(peaks.get(outcome.worker, 0), outcome.peak_rss)
            state["done"] += 1
            events.emit("block", "done", f"block {outcome.index} written in {outcome.seconds:.1f} s",
                        stage="blocks", index=list(outcome.index),
                        seconds=round(outcome.seconds, 3), rss_mb=round(outcome.rss / MB, 1),
                        worker=outcome.worker, done=state["done"], total=state["total"])

        if config.scheduler:
            from fusecube.runner.dask_backend import run_blocks_dask

            run_blocks_dask(pending, scheduler=config.scheduler, cube=cube, inputs=inputs,
                            config=config, model=model, store=store,
                            memory_limit=memory_limit, control=control, state=state,
                            make_template=None if "template" in stages.done else make_template,
                            record_block=record_block, events=events)
        else:
            reader = HaloReader(cube, context_halo(gapfill_config(config), model))
            for task in pending:
                control.checkpoint(state["done"], state["total"])
                events.emit("block", "start", record=False, index=list(task.index),
                            done=state["done"], total=state["total"])
                outcome = run_block(task, cube=cube, inputs=inputs, config=config, model=model,
                                    store=store, split=guard.split,
                                    before_write=None if "template" in stages.done
                                    else make_template, reader=reader)
                record_block(outcome)  # run_block handed the block's heap back already
                message = guard.check(edge)
                if message:
                    events.emit("run", "memory_pressure", message, split=guard.split)
            reader.close()  # the kept chunk borders are not needed after the blocks
        stages.finish("blocks", t_blocks)
        enter("finalize")
        t0 = stages.start("finalize")
        if store.exists():
            verify_store(store)  # a chunk lost after its block was written would read as NaN
            describe_store(store, geobox, start_month=config.phenology.year_start_month)  # CF
            replace_path(store, result_path)
        fault_point("finalized")
        stages.finish("finalize", t0)
    cube.close()
    from fusecube.quality.result_gates import check_results, gates_line

    gates = check_results(result_path, inputs.thresholds, enforce=config.result_gates,
                          keep=f"The previous output in {final} is kept. ")

    result = RunResult(out=out, result=result_path, cube=cube_path, truth=truth_path,
                       screen=screen.__dict__, n_blocks=len(regions), run_id=run_id,
                       block_edge=edge, memory_limit_mb=round(memory_limit / MB, 1),
                       blocks_resumed=resumed, worker_peak_rss_mb=round(worker_peak(peaks) / MB, 1),
                       memory_pressure_events=guard.pressure_events,
                       scheduler=config.scheduler or "", gapfill=choice.to_dict(),
                       result_gates=[g.to_dict() for g in gates])
    if config.report:
        from fusecube.evaluate.run import evaluate_run
        from fusecube.products.writers import write_products

        enter("evaluate")
        evaluation = stages.run("evaluate", evaluate_run, result_path, inputs.cube_path,
                                inputs.truth_path, block=config.block_size)
        result.accuracy = evaluation.metrics
        enter("products")
        result.products = stages.run("products", write_products, result, inputs, config,
                                     evaluation)
        fault_point("products_written")
    result.seconds = {k: round(v, 3) for k, v in timer.seconds.items()}
    result.seconds["total"] = round(time.perf_counter() - started, 3)
    result.peak_rss_mb = round(max(peak_rss_mb(), control.peak_rss / MB), 1)
    staging.write_summary(result, final)
    if config.report:
        from fusecube.products.report import write_report

        enter("report")
        result.products["report"] = str(stages.run("report", write_report, result, inputs,
                                                   config))
        staging.write_summary(result, final)
    result = staging.publish(result, final)
    message = (f"run {run_id} finished: {len(regions)} blocks ({resumed} from before), "
               f"peak RSS {result.peak_rss_mb:.0f} MB; {gates_line(gates)}")
    ledger.set_status(run_id, "done", message)
    ledger.supersede(str(final), run_id)  # the earlier finished runs' files are gone
    events.emit("run", "done", message, done=state["done"], total=state["total"])
    return result


def resume_run(run_id: str, progress: Progress | None = None, *, ledger: str | None = None,
               memory_limit: str | None = None, scheduler: str | None = None,
               result_gates: bool | None = None) -> RunResult:
    """Continue run ``run_id`` with the configuration recorded in the ledger.

    Args:
        run_id: The run (a unique prefix is enough).
        progress: Optional reporter, as for :func:`run`.
        ledger: Ledger URL or path (default: ``$FUSECUBE_LEDGER`` or the user's ledger).
        memory_limit: Override the recorded memory limit (the block grid stays as recorded).
        scheduler: Run the remaining blocks on this Dask scheduler.
        result_gates: Override the recorded ``result_gates`` (False publishes results that
            fail them).

    Returns:
        The finished run's :class:`RunResult`.
    """
    stored = RunConfig.model_validate_json(Ledger(ledger).get_run(run_id).config)
    config = stored.model_copy(update={"ledger": ledger, "memory_limit": memory_limit,
                                       "scheduler": scheduler})
    if result_gates is not None:
        config = config.model_copy(update={"result_gates": result_gates})
    return run(config, progress, resume=run_id)


def worker_peak(peaks: dict[str, int]) -> int:
    """The highest peak RSS of the processes that ran blocks.

    The workers' when blocks ran elsewhere (a Dask cluster; the runner itself writes the first
    block), else the runner's.
    """
    others = [peak for worker, peak in peaks.items() if worker != worker_id()]
    return max(others or list(peaks.values()) or [0])
