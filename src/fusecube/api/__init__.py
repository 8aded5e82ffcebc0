"""HTTP API and web viewer of fusecube (``fusecube serve``); needs the ``api`` extra."""

from fusecube.api.settings import Settings, is_loopback

__all__ = ["Settings", "create_app", "is_loopback"]


def create_app(settings: Settings | None = None):
    """Build the FastAPI app (see :func:`fusecube.api.app.create_app`)."""
    from fusecube.api.app import create_app as _create_app

    return _create_app(settings)
