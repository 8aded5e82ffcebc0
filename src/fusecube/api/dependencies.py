"""What the routes share: the bearer-token check, run lookup by id, and a run's status answer."""

from __future__ import annotations

import hmac
import re
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fusecube.errors import ApiError
from fusecube.products import catalog

#: Bearer-token scheme (module level: route annotations are resolved in module globals).
BEARER = HTTPBearer(auto_error=False, description="The server's token (fusecube serve --token).")
RUN_ID = r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$"


def authorize(request: Request,
              credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
    """Refuse a request without the server's token (when it has one), 401."""
    token = request.app.state.settings.token
    if not token:
        return
    given = credentials.credentials if credentials else request.query_params.get("token")
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        raise ApiError("Missing or wrong bearer token; send 'Authorization: Bearer <token>' "
                       "(the token given to `fusecube serve --token`).", 401)


#: Dependencies of every route that needs the token.
AUTH = [Depends(authorize)]


def record_of(request: Request, run_id: str):
    """The ledger record of run ``run_id``, 404 for anything that is not a known run id."""
    if not re.fullmatch(RUN_ID[1:-1], run_id):
        raise ApiError(f"{run_id[:40]!r} is not a run id (like 20251125-131500-3f2a9c); "
                       "GET /runs lists them.", 404)
    return request.app.state.ledger.get_run(run_id)


def status_of(request: Request, record) -> dict:
    """A run's status (:func:`~fusecube.runner.status.run_status`), its gates and links."""
    from fusecube.runner.status import run_status

    row = run_status(request.app.state.ledger, record)
    row["progress"] = (round(row["blocks_done"] / row["blocks_total"], 4)
                       if row["blocks_total"] else 0.0)
    row["created"] = record.created
    from fusecube.quality.summary import run_gate_summary

    gates = run_gate_summary(Path(record.out))
    row["gates"] = gates["gates"]
    row["gate_summary"] = {k: gates[k] for k in ("total", "counts", "planted", "text")}
    row["gapfill"] = catalog.run_gapfill(Path(record.out))
    row["has_results"] = catalog.published(Path(record.out), record.id)
    from fusecube.products.run_rows import run_overview

    row["training"] = _training(request, record)
    try:
        config = catalog.run_config(record)
    except ValueError:  # a ledger row another version wrote: list the run all the same
        config = None
    row["overview"] = (run_overview(record, config, row["gapfill"], row["has_results"])
                       if config is not None else {"out": str(record.out)})
    row["links"] = {k: f"/runs/{record.id}{v}" for k, v in
                    (("self", ""), ("products", "/products"), ("maps", "/maps"),
                     ("pixel", "/pixel"))}
    return row


def _training(request: Request, record) -> dict | None:
    """Step, total, loss and ETA of the neural training a run is doing now (None otherwise)."""
    if record.stage != "fusion_train" or record.state not in ("running", "paused"):
        return None
    for event in reversed(request.app.state.ledger.events(record.id, last=10)):
        if event["kind"] == "train":
            data = event["data"]
            return {k: data.get(k) for k in ("step", "total", "loss", "eta_s", "steps_per_s")}
    return None
