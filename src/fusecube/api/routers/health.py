"""``GET /health``: whether the server can work (ledger, fusion models, free disk)."""

from __future__ import annotations

import shutil

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from fusecube import __version__

router = APIRouter(tags=["server"])


@router.get("/health", summary="Version, models, ledger and disk")
def health(request: Request) -> JSONResponse:
    """Whether the server can work: 200 when it can, 503 with the reasons when not."""
    state = request.app.state
    settings, ledger = state.settings, state.ledger
    reasons = []
    try:
        ledger.list_runs(1)
        ledger_ok = True
    except Exception as exc:  # noqa: BLE001 - any failure means unreachable
        ledger_ok = False
        reasons.append(f"ledger {ledger.url} is not reachable ({type(exc).__name__})")
    infos = state.models.info()
    for info in infos:
        if not info.loadable:
            reasons.append(f"fusion model {info.name!r} cannot be loaded: {info.error}")
    free_mb = shutil.disk_usage(settings.data_dir).free / 2**20
    if free_mb < settings.min_free_disk_mb:
        reasons.append(f"only {free_mb:.0f} MB free in {settings.data_dir} (minimum "
                       f"{settings.min_free_disk_mb:.0f} MB)")
    body = {
        "status": "ok" if not reasons else "unhealthy", "reasons": reasons,
        "version": __version__,
        "models": [{"name": i.name, "size_bytes": i.size_bytes, "loadable": i.loadable,
                    "error": i.error} for i in infos],
        "predict_method": ("fusion" if any(i.loadable for i in infos)
                           else "baseline-linear (no fusion model installed)"),
        "ledger": {"reachable": ledger_ok},
        "disk": {"free_mb": round(free_mb, 1), "min_free_mb": settings.min_free_disk_mb},
        "active_runs": len(state.manager.active()), "max_active_runs": settings.max_active_runs,
        "auth": bool(settings.token),
    }
    return JSONResponse(body, status_code=200 if not reasons else 503)
