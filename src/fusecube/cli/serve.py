"""``fusecube serve``: the HTTP API and web viewer, on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind; anything but loopback needs --token.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    token: Annotated[Optional[str], typer.Option(
        help="Bearer token required on every API request (default $FUSECUBE_API_TOKEN).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(
        "--data-dir", help="Server folder: runs, ledger, models (default ~/.local/state/fusecube/server).")]
    = None,
    ledger: Annotated[Optional[str], typer.Option(
        "--ledger", help="Run ledger: SQLite path or SQLAlchemy URL (default DATA_DIR/ledger.sqlite).")]
    = None,
    models_dir: Annotated[Optional[Path], typer.Option(
        "--models-dir", help="Folder of fusion models (*.pt) for /predict (default DATA_DIR/models).")]
    = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Largest request body.")]
    = 32.0,
    max_active_runs: Annotated[int, typer.Option("--max-active-runs", min=1,
                                                 help="Runs executing at once.")] = 2,
    request_timeout: Annotated[float, typer.Option("--request-timeout", help="Seconds per request.")]
    = 60.0,
) -> None:
    """Serve the HTTP API and the web viewer (open http://HOST:PORT/ in a browser)."""
    from fusecube.api.settings import Settings
    from fusecube.errors import require

    require("fastapi", "api")
    uvicorn = require("uvicorn", "api")
    from fusecube.api import create_app
    from fusecube.cli.console import out, validated

    fields = {"host": host, "token": token or os.environ.get("FUSECUBE_API_TOKEN") or None,
              "ledger": ledger, "models_dir": models_dir, "max_upload_mb": max_upload_mb,
              "max_active_runs": max_active_runs, "request_timeout_s": request_timeout}
    if data_dir is not None:
        fields["data_dir"] = data_dir
    settings = validated(Settings, "server settings", **fields).resolved()
    app = create_app(settings)
    shown = f"[{host}]" if ":" in host else host
    out.print(f"fusecube API on http://{shown}:{port}/ (data {settings.data_dir}, "
              f"{'token required' if settings.token else 'no token: this machine only'})")
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=5,
                limit_concurrency=64)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the CLI."""
    app.command()(serve)
