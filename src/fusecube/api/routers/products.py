"""``/runs/{id}/products``: a run's product files, and downloading one."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from fusecube.api.dependencies import AUTH, record_of
from fusecube.products import catalog

router = APIRouter(tags=["products"], dependencies=AUTH)


@router.get("/runs/{run_id}/products", summary="A run's product files")
def products(run_id: str, request: Request) -> dict:
    """Report, summary, NetCDF, COGs, figures and tables, with download links."""
    record = record_of(request, run_id)
    items = catalog.list_products(Path(record.out), record.id)
    for item in items:
        item["url"] = f"/runs/{record.id}/products/{item['name']}"
    return {"id": record.id, "state": record.state, "products": items}


@router.get("/runs/{run_id}/products/{name:path}", summary="Download one product",
            response_class=FileResponse)
def download(run_id: str, name: str, request: Request) -> FileResponse:
    """The file of one listed product (anything else is 404)."""
    record = record_of(request, run_id)
    path, media = catalog.product_file(Path(record.out), name, record.id)
    return FileResponse(path, media_type=media, filename=path.name,
                        content_disposition_type="inline")
