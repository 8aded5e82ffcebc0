"""``/runs``: submit a run, list runs, follow one, pause, resume or stop it."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from fusecube.api.dependencies import AUTH, record_of, status_of
from fusecube.config import RunConfig
from fusecube.errors import ApiError
from fusecube.runner.jobs import confine

router = APIRouter(tags=["runs"], dependencies=AUTH)


@router.post("/runs", status_code=202, summary="Start a run in the background")
def submit(config: RunConfig, request: Request) -> dict:
    """Validate a run configuration (the CLI's model) and start it; answers its status."""
    state = request.app.state
    settings = state.settings
    config = confine(config, runs_dir=settings.runs_dir, data_dir=settings.data_dir,
                     ledger=settings.ledger, max_run_pixels=settings.max_run_pixels)
    run_id = state.manager.submit(config)
    return status_of(request, state.ledger.get_run(run_id))


@router.get("/runs", summary="Recent runs")
def list_runs(request: Request, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> list[dict]:
    """The most recently updated runs, newest first, with their progress."""
    return [status_of(request, r) for r in request.app.state.ledger.list_runs(limit)]


@router.get("/runs/{run_id}", summary="One run's status")
def get_run(run_id: str, request: Request) -> dict:
    """State, stage, blocks done/total, rate, ETA, memory, quality gates and events."""
    return status_of(request, record_of(request, run_id))


@router.post("/runs/{run_id}/{action}", summary="Pause, resume or stop a run")
def control(run_id: str, action: Literal["pause", "resume", "stop"],
            request: Request) -> JSONResponse:
    """Pause/stop after the current block; resume a paused, stopped or crashed run.

    Resuming a stopped, interrupted or crashed run restarts it where it stopped (202).
    """
    ledger = request.app.state.ledger
    record = record_of(request, run_id)
    if action == "resume":
        if record.alive:
            if record.control == "run" and record.status == "running":
                raise ApiError(f"Run {record.id} is already running.", 409)
            ledger.request(record.id, "run")
            return JSONResponse(status_of(request, ledger.get_run(record.id)))
        if record.state == "done":
            raise ApiError(f"Run {record.id} already finished; submit a new run to "
                           "compute it again.", 409)
        request.app.state.manager.resume(record.id, request.app.state.settings.ledger)
        return JSONResponse(status_of(request, ledger.get_run(record.id)), status_code=202)
    if not record.alive:
        raise ApiError(f"Run {record.id} is not running (it is {record.state}), so there is "
                       f"nothing to {action}.", 409)
    ledger.request(record.id, action)
    return JSONResponse(status_of(request, ledger.get_run(record.id)))
