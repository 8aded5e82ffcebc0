"""Lightweight raster metadata from headers only (local path or URL), with a timeout."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import rasterio
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox

from fusecube.errors import InputFileError, SourceError

log = logging.getLogger(__name__)


def _gdal_path(path: str) -> str:
    return f"/vsicurl/{path}" if path.startswith(("http://", "https://")) else path


def _read_header(path: str, timeout_s: float) -> dict[str, Any]:
    env = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_MAX_RETRY": "0",
           "GDAL_HTTP_TIMEOUT": str(max(1, round(timeout_s))),
           "GDAL_HTTP_CONNECTTIMEOUT": str(max(1, round(timeout_s)))}
    with rasterio.Env(**env), rasterio.open(_gdal_path(path)) as src:
        structure = src.tags(ns="IMAGE_STRUCTURE")
        info: dict[str, Any] = {
            "path": path, "driver": src.driver, "width": src.width, "height": src.height,
            "count": src.count, "dtypes": list(src.dtypes), "nodata": src.nodata,
            "bands": [d or f"band_{i}" for i, d in enumerate(src.descriptions, start=1)],
            "crs": src.crs.to_string() if src.crs else None,
            "resolution": list(src.res), "bounds": list(src.bounds),
            "overviews": src.overviews(1) if src.count else [],
            "tiled": bool(src.block_shapes and src.block_shapes[0][1] != src.width),
            "block_shape": list(src.block_shapes[0]) if src.block_shapes else None,
            "compression": src.compression.value if src.compression else None,
            "layout": structure.get("LAYOUT"),
        }
        if src.crs is not None:
            gbox = GeoBox(src.shape, src.transform, CRS(src.crs.to_wkt()))
            info["bounds_lonlat"] = [round(v, 6) for v in gbox.extent.to_crs("EPSG:4326")
                                     .boundingbox]
    return info


def inspect_raster(path: str | os.PathLike, *, timeout_s: float = 10.0) -> dict[str, Any]:
    """Bounds, CRS, resolution, bands, dtype, overviews and tiling of a raster, from its header.

    Only the header is read (GDAL fetches the first few KB of a remote COG), so this is quick
    even for multi-GB files.

    Args:
        path: Local path or ``http(s)://`` URL.
        timeout_s: Give up after this many seconds (HTTP timeout and overall deadline).

    Returns:
        A JSON-ready dict.

    Raises:
        SourceError: the server did not answer in time or refused.
        InputFileError: the file is missing or not a raster.
    """
    path = str(path)
    result: dict[str, Any] = {}
    errors: list[BaseException] = []

    def work() -> None:
        try:
            result.update(_read_header(path, timeout_s))
        except BaseException as exc:  # handed to the caller below
            errors.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout_s + 2.0)
    remote = path.startswith(("http://", "https://"))
    if thread.is_alive():
        raise SourceError(f"Reading the header of {path} timed out after {timeout_s:g} s; "
                          "the server is slow or unreachable: retry later or raise --timeout.")
    if errors:
        exc = errors[0]
        text = str(exc)
        if remote and ("timed out" in text.lower() or "timeout" in text.lower()):
            raise SourceError(f"Reading the header of {path} timed out after {timeout_s:g} s "
                              f"({text}); retry later or raise --timeout.") from exc
        if remote:
            raise SourceError(f"Cannot read the header of {path}: {text}. Check the URL (and "
                              "signing, for catalogues that need it).") from exc
        raise InputFileError(f"{path} cannot be opened as a raster: {text}") from exc
    return result
