"""The fusecube HTTP API: parses and validates requests, calls the library, answers JSON.

Build it with :func:`create_app`; ``fusecube serve`` runs it with uvicorn. Every failure is a
:class:`~fusecube.errors.FusecubeError` turned into a JSON ``{"error", "detail"}`` answer with
a 4xx/5xx status; no stack trace ever reaches a client.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import shutil
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from fusecube import __version__
from fusecube.api import predict as predict_mod
from fusecube.api import results
from fusecube.api.jobs import RunManager
from fusecube.api.settings import Settings
from fusecube.config import CubeSource, RunConfig
from fusecube.errors import (
    ApiError,
    ConfigError,
    CubeSchemaError,
    FusecubeError,
    FusionModelError,
    GateFailed,
    GridError,
    InputFileError,
    LedgerError,
    MaskError,
    MissingDependencyError,
    OutputWriteError,
    RunInterrupted,
)

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
#: Bearer-token scheme (module level: route annotations are resolved in module globals).
BEARER = HTTPBearer(auto_error=False, description="The server's token (fusecube serve --token).")
RUN_ID = r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$"


# ---------------------------------------------------------------------------------- errors
def status_for(exc: FusecubeError) -> int:
    """The HTTP status of a fusecube error (input problems 4xx, server problems 5xx)."""
    if isinstance(exc, ApiError):
        return exc.status_code
    if isinstance(exc, LedgerError):
        text = str(exc)
        if text.startswith("No run"):
            return 404
        if text.startswith("Ledger"):
            return 503
        return 409
    if isinstance(exc, (ConfigError, CubeSchemaError, GridError, MaskError, InputFileError,
                        GateFailed, FusionModelError)):
        return 422
    if isinstance(exc, RunInterrupted):
        return 409
    if isinstance(exc, MissingDependencyError):
        return 503
    if isinstance(exc, OutputWriteError):
        return 507
    return 400


def _error(status: int, kind: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": kind, "detail": detail}, status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:10]:
        loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {error.get('msg', 'invalid')}")
    return "Invalid request: " + "; ".join(parts) + " (see /docs for the expected form)."


def install_error_handlers(app: FastAPI) -> None:
    """Map every failure to a JSON answer without a stack trace."""

    @app.exception_handler(FusecubeError)
    async def _fusecube(_request: Request, exc: FusecubeError) -> JSONResponse:
        status = status_for(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return _error(status, type(exc).__name__, str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "ValidationError", _validation_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return _error(exc.status_code, "HTTPError", detail, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "InternalError", "The server failed on this request; the server log "
                      "has the details. Please report it with the time of the request.")


# ---------------------------------------------------------------------------------- middleware
class LimitsMiddleware:
    """Pure ASGI middleware: body size limit (413) and a per-request timeout (504).

    Args:
        app: The wrapped ASGI app.
        max_body: Largest request body in bytes.
        timeout_s: Seconds before a request is answered 504 (if nothing was sent yet).
    """

    def __init__(self, app, max_body: int, timeout_s: float) -> None:
        self.app, self.max_body, self.timeout_s = app, max_body, timeout_s

    async def _send_json(self, send, status: int, kind: str, detail: str) -> None:
        body = json.dumps({"error": kind, "detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        """Serve one ASGI connection within the limits."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = (f"Request body is larger than this server accepts "
                     f"({self.max_body // 2**20} MB); send a smaller cube or tile it.")
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await self._send_json(send, 400, "ApiError", "Content-Length is not a number.")
                return
            if declared > self.max_body:
                await self._send_json(send, 413, "ApiError", too_large)
                return
        started = False
        app_receive = receive
        if length is None and scope.get("method") not in ("GET", "HEAD", "OPTIONS", "DELETE"):
            # no Content-Length (chunked): read the body first, up to the limit, then replay it
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return  # client went away
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                more = message.get("more_body", False)
                if size > self.max_body:
                    await self._send_json(send, 413, "ApiError", too_large)
                    return
            replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

            async def app_receive():
                return replay.pop() if replay else await receive()

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, app_receive, tracking_send), self.timeout_s)
        except TimeoutError:
            log.warning("request %s %s timed out after %.0f s", scope.get("method"),
                        scope.get("path"), self.timeout_s)
            if not started:
                await self._send_json(send, 504, "ApiError",
                                      f"The request took longer than {self.timeout_s:.0f} s; "
                                      "send a smaller cube or try again later.")


# ---------------------------------------------------------------------------------- helpers
def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def confine(config: RunConfig, settings: Settings) -> RunConfig:
    """Place a submitted run inside the server's folders and apply the server's limits.

    A run writes to ``runs_dir/<out>`` (a fresh folder when ``out`` is not given); the cube,
    mask and model it reads must lie inside ``data_dir``; the ledger is the server's.

    Raises:
        ApiError: 422 for a path outside the server's folders, another ledger or scheduler,
            or a synthetic scene larger than ``max_run_pixels``.
    """
    import uuid

    runs_dir = settings.runs_dir
    if "out" in config.model_fields_set:
        out = config.out if config.out.is_absolute() else runs_dir / config.out
        if not _inside(out, runs_dir) or out.resolve() == runs_dir.resolve():
            raise ApiError(f"Output folder {str(config.out)!r} must be a sub-folder of the "
                           f"server's runs folder {runs_dir}; give a relative name such as "
                           "'demak-2024'.", 422)
    else:
        out = runs_dir / f"run-{uuid.uuid4().hex[:10]}"

    def readable(value: Path, what: str) -> Path:
        path = value if value.is_absolute() else settings.data_dir / value
        if not _inside(path, settings.data_dir):
            raise ApiError(f"The {what} {str(value)!r} must lie inside the server's data folder "
                           f"{settings.data_dir}; copy it there and give its relative path.", 422)
        return path.resolve()

    update: dict = {"out": out.resolve(), "ledger": settings.ledger}
    if config.ledger not in (None, settings.ledger):
        raise ApiError("Runs submitted to the API use the server's ledger; leave 'ledger' out.",
                       422)
    if config.scheduler is not None and not config.scheduler.startswith("local:"):
        raise ApiError("Runs submitted to the API may only use a local Dask cluster "
                       "('local:N') or none; leave 'scheduler' out.", 422)
    source = config.source
    if isinstance(source, CubeSource):
        update["source"] = source.model_copy(update={"path": readable(source.path, "cube")})
    elif source.width * source.height > settings.max_run_pixels:
        raise ApiError(f"A synthetic scene of {source.width} x {source.height} px is larger than "
                       f"this server runs ({settings.max_run_pixels} pixels); ask for a smaller "
                       "one or run it with the `fusecube` command.", 422)
    if config.mask not in ("cube", "none"):
        update["mask"] = str(readable(Path(config.mask), "mask"))
    if config.fusion_model is not None:
        update["fusion_model"] = readable(config.fusion_model, "fusion model")
    return config.model_copy(update=update)


def _gates(out: Path) -> list[dict]:
    path = out / "run.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    gates = (summary.get("screen") or {}).get("gates") or []
    return [{k: g.get(k) for k in ("gate", "stage", "status", "message")} for g in gates]


# ---------------------------------------------------------------------------------- app
def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the fusecube API app.

    Args:
        settings: Server settings (defaults: 127.0.0.1, no token, the user's state folder).

    Returns:
        The FastAPI app; runs it starts stop cleanly when the app shuts down.

    Raises:
        ConfigError: A non-loopback host without a token.
    """
    from fusecube.runner.ledger import Ledger

    settings = (settings or Settings()).resolved()
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(settings.ledger)
    manager = RunManager(settings.max_active_runs)
    models = predict_mod.ModelStore(settings.models_dir)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await asyncio.to_thread(manager.shutdown, ledger)
        ledger.dispose()

    app = FastAPI(title="fusecube", version=__version__, lifespan=lifespan,
                  description="Gap-free NDVI datacubes and rice calendars: submit runs, follow "
                              "them, browse their maps and pixel curves, gap-fill a posted cube.")
    app.state.settings, app.state.ledger, app.state.manager = settings, ledger, manager
    app.state.models = models
    install_error_handlers(app)
    app.add_middleware(LimitsMiddleware, max_body=settings.max_upload_bytes,
                       timeout_s=settings.request_timeout_s)

    def authorize(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
                  ) -> None:
        if not settings.token:
            return
        given = credentials.credentials if credentials else request.query_params.get("token")
        if not given or not hmac.compare_digest(given.encode(), settings.token.encode()):
            raise ApiError("Missing or wrong bearer token; send 'Authorization: Bearer <token>' "
                           "(the token given to `fusecube serve --token`).", 401)

    auth = [Depends(authorize)]

    def record_of(run_id: str):
        import re

        if not re.fullmatch(RUN_ID[1:-1], run_id):
            raise ApiError(f"{run_id[:40]!r} is not a run id (like 20251125-131500-3f2a9c); "
                           "GET /runs lists them.", 404)
        return ledger.get_run(run_id)

    def status_of(record) -> dict:
        from fusecube.runner.status import run_status

        row = run_status(ledger, record)
        row["progress"] = (round(row["blocks_done"] / row["blocks_total"], 4)
                           if row["blocks_total"] else 0.0)
        row["created"] = record.created
        row["gates"] = _gates(Path(record.out))
        row["has_results"] = (Path(record.out) / "result.zarr").exists()
        row["links"] = {k: f"/runs/{record.id}{v}" for k, v in
                        (("self", ""), ("products", "/products"), ("maps", "/maps"),
                         ("pixel", "/pixel"))}
        return row

    # ------------------------------------------------------------------ health
    @app.get("/health", tags=["server"], summary="Version, models, ledger and disk")
    def health() -> JSONResponse:
        """Whether the server can work: 200 when it can, 503 with the reasons when not."""
        reasons = []
        try:
            ledger.list_runs(1)
            ledger_ok = True
        except Exception as exc:  # noqa: BLE001 - any failure means unreachable
            ledger_ok = False
            reasons.append(f"ledger {ledger.url} is not reachable ({type(exc).__name__})")
        infos = models.info()
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
            "active_runs": len(manager.active()), "max_active_runs": settings.max_active_runs,
            "auth": bool(settings.token),
        }
        return JSONResponse(body, status_code=200 if not reasons else 503)

    # ------------------------------------------------------------------ runs
    @app.post("/runs", tags=["runs"], status_code=202, dependencies=auth,
              summary="Start a run in the background")
    def submit(config: RunConfig) -> dict:
        """Validate a run configuration (the CLI's model) and start it; answers its status."""
        config = confine(config, settings)
        run_id = manager.submit(config)
        return status_of(ledger.get_run(run_id))

    @app.get("/runs", tags=["runs"], dependencies=auth, summary="Recent runs")
    def list_runs(limit: Annotated[int, Query(ge=1, le=200)] = 20) -> list[dict]:
        """The most recently updated runs, newest first, with their progress."""
        return [status_of(r) for r in ledger.list_runs(limit)]

    @app.get("/runs/{run_id}", tags=["runs"], dependencies=auth, summary="One run's status")
    def get_run(run_id: str) -> dict:
        """State, stage, blocks done/total, rate, ETA, memory, quality gates and events."""
        return status_of(record_of(run_id))

    @app.post("/runs/{run_id}/{action}", tags=["runs"], dependencies=auth,
              summary="Pause, resume or stop a run")
    def control(run_id: str, action: Literal["pause", "resume", "stop"]) -> JSONResponse:
        """Pause/stop after the current block; resume a paused, stopped or crashed run.

        Resuming a stopped, interrupted or crashed run restarts it where it stopped (202).
        """
        record = record_of(run_id)
        if action == "resume":
            if record.alive:
                if record.control == "run" and record.status == "running":
                    raise ApiError(f"Run {record.id} is already running.", 409)
                ledger.request(record.id, "run")
                return JSONResponse(status_of(ledger.get_run(record.id)))
            if record.state == "done":
                raise ApiError(f"Run {record.id} already finished; submit a new run to "
                               "compute it again.", 409)
            manager.resume(record.id, settings.ledger)
            return JSONResponse(status_of(ledger.get_run(record.id)), status_code=202)
        if not record.alive:
            raise ApiError(f"Run {record.id} is not running (it is {record.state}), so there is "
                           f"nothing to {action}.", 409)
        ledger.request(record.id, action)
        return JSONResponse(status_of(ledger.get_run(record.id)))

    # ------------------------------------------------------------------ products
    @app.get("/runs/{run_id}/products", tags=["products"], dependencies=auth,
             summary="A run's product files")
    def products(run_id: str) -> dict:
        """Report, summary, NetCDF, COGs, figures and tables, with download links."""
        record = record_of(run_id)
        items = results.list_products(Path(record.out))
        for item in items:
            item["url"] = f"/runs/{record.id}/products/{item['name']}"
        return {"id": record.id, "state": record.state, "products": items}

    @app.get("/runs/{run_id}/products/{name:path}", tags=["products"], dependencies=auth,
             summary="Download one product", response_class=FileResponse)
    def download(run_id: str, name: str) -> FileResponse:
        """The file of one listed product (anything else is 404)."""
        record = record_of(run_id)
        path, media = results.product_file(Path(record.out), name)
        return FileResponse(path, media_type=media, filename=path.name,
                            content_disposition_type="inline")

    @app.get("/runs/{run_id}/maps", tags=["maps"], dependencies=auth,
             summary="Map layers, seasons, years and legends")
    def maps(run_id: str) -> dict:
        """What :func:`map_png` can draw, with legends and the grid's extent."""
        record = record_of(run_id)
        return results.map_catalog(Path(record.out), results.run_config(record))

    @app.get("/runs/{run_id}/maps/{layer}.png", tags=["maps"], dependencies=auth,
             summary="PNG overlay of a phenology map", response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    def map_png(run_id: str, layer: str,
                index: Annotated[int, Query(ge=0, le=1000,
                                            description="Season slot (date layers) or year "
                                                        "(intensity).")] = 0) -> Response:
        """One pixel per grid cell, RGBA, transparent where there is no value."""
        record = record_of(run_id)
        png = results.render_map(Path(record.out), layer, index)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.get("/runs/{run_id}/pixel", tags=["maps"], dependencies=auth,
             summary="One pixel's time series and seasons")
    def pixel(run_id: str,
              lon: Annotated[float | None, Query(ge=-180, le=180)] = None,
              lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
              x: Annotated[float | None, Query(allow_inf_nan=False)] = None,
              y: Annotated[float | None, Query(allow_inf_nan=False)] = None,
              row: Annotated[int | None, Query(ge=0, le=10**7)] = None,
              col: Annotated[int | None, Query(ge=0, le=10**7)] = None) -> dict:
        """S1 VV/VH (dB), observed, fused and smoothed NDVI, and the pixel's seasons."""
        record = record_of(run_id)
        return results.pixel(Path(record.out), results.run_config(record), lon=lon, lat=lat,
                             x=x, y=y, row=row, col=col)

    # ------------------------------------------------------------------ predict
    limits = (settings.max_predict_pixels, settings.max_predict_times)

    def predict_file(data: bytes, filename: str, model: str | None) -> Response:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="fusecube-upload-") as tmp:
            cube = predict_mod.cube_from_upload(data, filename, *limits, Path(tmp))
            prediction = predict_mod.fill(cube, models, model)
            body = predict_mod.to_netcdf_bytes(prediction.cube)
        return Response(body, media_type="application/x-netcdf", headers={
            "Content-Disposition": 'attachment; filename="ndvi_fused.nc"',
            "X-Fusecube-Method": prediction.method,
            "X-Fusecube-Model": prediction.model or "",
            "X-Fusecube-Note": prediction.note})

    def predict_arrays(body: predict_mod.CubeJSON) -> dict:
        cube = predict_mod.cube_from_json(body, *limits)
        return predict_mod.to_json(predict_mod.fill(cube, models, body.model))

    upload_schema = {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "A NetCDF (.nc) file or a zip of a zarr cube."},
        "model": {"type": "string", "maxLength": 200,
                  "description": "Fusion model name (default: the first one)."}}}

    @app.post("/predict/datacube", tags=["predict"], dependencies=auth,
              summary="Gap-fill a posted cube (NetCDF / zarr zip upload, or JSON arrays)",
              response_class=Response,
              responses={200: {"content": {"application/x-netcdf": {}, "application/json": {}}}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": upload_schema},
                  "application/json": {"schema": {"$ref": "#/components/schemas/CubeJSON"}}}}})
    async def predict_cube(request: Request) -> Response:
        """Gap-fill a posted cube; the answer comes in the form of the request.

        An upload is answered with the fused cube as NetCDF (headers say the method and
        model); JSON arrays with JSON, as ``/predict/datacube/json`` does.
        """
        from fastapi.concurrency import run_in_threadpool
        from pydantic import ValidationError
        from starlette.datastructures import UploadFile as StarletteUpload

        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            try:
                body = predict_mod.CubeJSON.model_validate_json(await request.body())
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'][:2]))}: {e['msg']}"
                                     for e in exc.errors()[:5])
                raise ApiError(f"Invalid cube JSON: {problems}.", 422) from exc
            return JSONResponse(await run_in_threadpool(predict_arrays, body))
        if kind != "multipart/form-data":
            raise ApiError(f"Content type {kind[:60]!r} is not accepted; send multipart/form-data "
                           "with a 'file' field, or application/json arrays.", 415)
        try:
            form = await request.form(max_files=1, max_fields=4)
        except Exception as exc:  # noqa: BLE001 - malformed multipart raises several types
            raise ApiError("The multipart body cannot be parsed; send a form with a 'file' "
                           "field (curl -F file=@cube.nc).", 422) from exc
        upload, model = form.get("file"), form.get("model")
        if not isinstance(upload, StarletteUpload):
            raise ApiError("The form has no 'file' upload; send the cube as file=@cube.nc.", 422)
        if model is not None and (not isinstance(model, str) or len(model) > 200):
            raise ApiError("'model' must be a model name of at most 200 characters.", 422)
        data = await upload.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise ApiError("The uploaded cube is larger than this server accepts.", 413)
        return await run_in_threadpool(predict_file, data, upload.filename or "upload",
                                       model or None)

    @app.post("/predict/datacube/json", tags=["predict"], dependencies=auth,
              summary="Gap-fill a cube sent as JSON arrays")
    def predict_json(body: predict_mod.CubeJSON) -> dict:
        """Answers ``ndvi_fused`` as [time][y][x] arrays (null where it stays missing)."""
        return predict_arrays(body)

    # ------------------------------------------------------------------ viewer
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
