"""The fusecube HTTP API: :func:`create_app` builds it; ``fusecube serve`` runs it with uvicorn.

The routes (:mod:`fusecube.api.routers`) parse and validate requests, call the library and
answer JSON; every failure is a :class:`~fusecube.errors.FusecubeError` turned into a JSON
``{"error", "detail"}`` answer (:mod:`fusecube.api.handlers`), never a stack trace.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from fusecube import __version__
from fusecube.api.handlers import install_error_handlers
from fusecube.api.limits import LimitsMiddleware
from fusecube.api.routers import health, maps, predict, products, runs
from fusecube.api.settings import Settings

STATIC = Path(__file__).with_name("static")


@asynccontextmanager
async def _lifespan(app: FastAPI):
    yield
    await asyncio.to_thread(app.state.manager.shutdown, app.state.ledger)
    app.state.ledger.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the fusecube API app.

    Args:
        settings: Server settings (defaults: 127.0.0.1, no token, the user's state folder).

    Returns:
        The FastAPI app; runs it starts stop cleanly when the app shuts down.

    Raises:
        ConfigError: A non-loopback host without a token.
    """
    from fusecube.fusion.serving import ModelStore
    from fusecube.runner.jobs import RunManager
    from fusecube.runner.ledger import Ledger

    settings = (settings or Settings()).resolved()
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    app = FastAPI(title="fusecube", version=__version__, lifespan=_lifespan,
                  description="Gap-free NDVI datacubes and rice calendars: submit runs, follow "
                              "them, browse their maps and pixel curves, gap-fill a posted cube.")
    app.state.settings, app.state.ledger = settings, Ledger(settings.ledger)
    app.state.manager = RunManager(settings.max_active_runs)
    app.state.models = ModelStore(settings.models_dir)
    install_error_handlers(app)
    app.add_middleware(LimitsMiddleware, max_body=settings.max_upload_bytes,
                       timeout_s=settings.request_timeout_s)
    for module in (health, runs, products, maps, predict):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
