"""Errors as answers: every failure becomes a JSON ``{"error", "detail"}`` with a 4xx/5xx status.

No stack trace ever reaches a client; an unexpected failure is logged and answered 500.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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
