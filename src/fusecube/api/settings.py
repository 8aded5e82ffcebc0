"""Server settings of the fusecube API: where runs live, limits, and the access token."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from fusecube.errors import ConfigError

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _default_data_dir() -> Path:
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "fusecube" / "server"


class Settings(BaseModel):
    """Everything the API server needs to know; limits keep one request from exhausting it.

    Attributes:
        host: Interface the server binds to; a non-loopback host requires ``token``.
        token: Bearer token required on every API request (None: no auth, loopback only).
        data_dir: Root of everything the server reads and writes: runs go to ``data_dir/runs``,
            run configs may only name cubes, masks and models inside it.
        ledger: Run ledger (SQLite path or SQLAlchemy URL); default ``data_dir/ledger.sqlite``.
        models_dir: Folder of fusion models (``*.pt``) served by ``/predict``; default
            ``data_dir/models``.
        max_upload_mb: Largest request body.
        max_predict_pixels: Largest ``y * x`` of a posted cube.
        max_predict_times: Largest number of time steps of a posted cube.
        max_run_pixels: Largest synthetic scene a run may ask for (``width * height``).
        max_active_runs: Runs executing at once in this server; more are refused with 429.
        request_timeout_s: A request taking longer is answered 504 (runs execute in the
            background and are not bound by it).
        min_free_disk_mb: ``/health`` reports 503 below this much free space in ``data_dir``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    token: str | None = None
    data_dir: Path = Field(default_factory=_default_data_dir)
    ledger: str | None = None
    models_dir: Path | None = None
    max_upload_mb: float = Field(32.0, gt=0)
    max_predict_pixels: int = Field(256 * 256, ge=1)
    max_predict_times: int = Field(366, ge=2)
    max_run_pixels: int = Field(2048 * 2048, ge=64)
    max_active_runs: int = Field(2, ge=1)
    request_timeout_s: float = Field(60.0, gt=0)
    min_free_disk_mb: float = Field(512.0, ge=0)

    def resolved(self) -> Settings:
        """A copy with absolute paths and the defaults of ``ledger``/``models_dir`` filled in.

        Raises:
            ConfigError: A non-loopback host without a token, or an empty token.
        """
        if self.token is not None and not self.token.strip():
            raise ConfigError("The API token is empty; pass a long random string with --token "
                              "(or FUSECUBE_API_TOKEN), or leave it out on 127.0.0.1.")
        if not is_loopback(self.host) and not self.token:
            raise ConfigError(f"Serving on {self.host} (not loopback) needs a bearer token: pass "
                              "--token or set FUSECUBE_API_TOKEN, or bind to 127.0.0.1.")
        data_dir = self.data_dir.expanduser().resolve()
        return self.model_copy(update={
            "data_dir": data_dir,
            "ledger": self.ledger or str(data_dir / "ledger.sqlite"),
            "models_dir": (self.models_dir or data_dir / "models").expanduser().resolve(),
        })

    @property
    def runs_dir(self) -> Path:
        """Folder holding the output folder of each run submitted through the API."""
        return self.data_dir / "runs"

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)
