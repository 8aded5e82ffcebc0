"""``/runs/{id}/maps`` and ``/runs/{id}/pixel``: map overlays, legends and pixel curves."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from fusecube.api.dependencies import AUTH, record_of
from fusecube.products import catalog, overlays
from fusecube.products import pixel as pixels

router = APIRouter(tags=["maps"], dependencies=AUTH)


@router.get("/runs/{run_id}/maps", summary="Map layers, seasons, years and legends")
def maps(run_id: str, request: Request) -> dict:
    """What :func:`map_png` can draw, with legends and the grid's extent."""
    record = record_of(request, run_id)
    return overlays.map_catalog(catalog.results_folder(record), catalog.run_config(record))


@router.get("/runs/{run_id}/maps/{layer}.png", summary="PNG overlay of a phenology map",
            response_class=Response, responses={200: {"content": {"image/png": {}}}})
def map_png(run_id: str, layer: str, request: Request,
            index: Annotated[int, Query(ge=0, le=1000,
                                        description="Season slot (date layers) or year "
                                                    "(intensity).")] = 0) -> Response:
    """One pixel per grid cell, RGBA, transparent where there is no value."""
    record = record_of(request, run_id)
    png = overlays.render_map(catalog.results_folder(record), layer, index)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})


@router.get("/runs/{run_id}/pixel", summary="One pixel's time series and seasons")
def pixel(run_id: str, request: Request,
          lon: Annotated[float | None, Query(ge=-180, le=180)] = None,
          lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
          x: Annotated[float | None, Query(allow_inf_nan=False)] = None,
          y: Annotated[float | None, Query(allow_inf_nan=False)] = None,
          row: Annotated[int | None, Query(ge=0, le=10**7)] = None,
          col: Annotated[int | None, Query(ge=0, le=10**7)] = None) -> dict:
    """S1 VV/VH (dB), observed, fused and smoothed NDVI, and the pixel's seasons."""
    record = record_of(request, run_id)
    return pixels.pixel(catalog.results_folder(record), catalog.run_config(record), lon=lon, lat=lat,
                        x=x, y=y, row=row, col=col)
