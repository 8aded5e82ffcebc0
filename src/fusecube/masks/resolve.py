"""One resolver for every way of giving a mask: ``cube``, ``auto``, ``none`` or a vector/raster file.

:func:`mask_with_report` gives the ``(y, x)`` uint8 mask on the cube's grid with its
:class:`~fusecube.masks.report.MaskReport`; :func:`resolve_mask` gives the mask alone, its
coverage in ``attrs``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import xarray as xr

from fusecube.cube import PADDY_MASK, X, Y
from fusecube.errors import InputFileError, MaskError
from fusecube.grid.geobox import VECTOR_SUFFIXES
from fusecube.masks.raster import RASTER_SUFFIXES, raster_mask_with_report
from fusecube.masks.report import MaskReport, coverage
from fusecube.masks.vector import vector_mask_with_report

log = logging.getLogger(__name__)


def mask_with_report(spec: str, cube: xr.Dataset) -> tuple[xr.DataArray | None, MaskReport]:
    """Turn a mask spec into a ``(y, x)`` uint8 DataArray on the cube's grid, with its report.

    Args:
        spec: ``"cube"`` (the cube's own ``paddy_mask``), ``"auto"`` (detected from the time
            series), ``"none"``, or a vector/raster path.
        cube: The cube whose grid the mask must match.

    Returns:
        ``(mask or None for "none", report)``.
    """
    if spec == "none":
        return None, MaskReport(source="none", kind="none")
    try:
        geobox = cube.odc.geobox
    except Exception:
        geobox = None
    if spec == "cube":
        if PADDY_MASK not in cube:
            raise MaskError("mask='cube' but the cube has no paddy_mask variable; "
                            "pass a mask file with --mask PATH or use --mask none.")
        mask = cube[PADDY_MASK].load().astype(np.uint8)
        report = MaskReport(source="cube", kind="cube")
        if geobox is not None:
            coverage(report, mask.values, geobox)
        return mask, report
    if spec == "auto":  # paddy detected from the cube's own time series (fusecube.masks.paddy)
        from fusecube.masks.paddy import paddy_mask_auto

        mask = paddy_mask_auto(cube)
        report = MaskReport(source="auto", kind="auto")
        if geobox is not None:
            coverage(report, mask.values, geobox)
        return mask, report
    path = Path(spec)
    if not path.exists():
        raise InputFileError(f"Mask file {path} does not exist; give a Shapefile, GeoPackage, "
                             "GeoJSON or GeoTIFF path, 'cube' or 'none'.")
    if geobox is None or geobox.crs is None:
        raise MaskError(f"Mask {path} cannot be placed: the cube has no CRS/grid; attach one with "
                        "ds.odc.assign_crs(...).")
    suffix = path.suffix.lower()
    if suffix in VECTOR_SUFFIXES:
        data, report = vector_mask_with_report(path, geobox)
    elif suffix in RASTER_SUFFIXES:
        data, report = raster_mask_with_report(path, geobox)
    else:
        raise MaskError(f"Mask {path}: unknown format {suffix!r}; use a Shapefile, GeoPackage, "
                        "GeoJSON or GeoTIFF.")
    mask = xr.DataArray(data, dims=(Y, X), coords={Y: cube[Y], X: cube[X]}, name=PADDY_MASK)
    return mask, report


def resolve_mask(spec: str, cube: xr.Dataset) -> xr.DataArray | None:
    """Turn a mask spec into a ``(y, x)`` uint8 DataArray on the cube's grid.

    Args:
        spec: ``"cube"`` (the cube's own ``paddy_mask``), ``"auto"`` (detected from the time
            series), ``"none"``, or a vector/raster path.
        cube: The cube whose grid the mask must match.

    Returns:
        The mask (coverage in ``attrs["coverage_pixels"|"coverage_km2"|"coverage_percent"]``),
        or None for ``"none"``.
    """
    mask, report = mask_with_report(spec, cube)
    if mask is not None:
        mask.attrs["coverage_pixels"] = report.pixels
        mask.attrs["coverage_km2"] = round(report.km2, 4)
        mask.attrs["coverage_percent"] = round(report.percent_of_aoi, 4)
        log.info("mask %s: %d pixels, %.2f km², %.2f %% of the area of interest",
                 spec, report.pixels, report.km2, report.percent_of_aoi)
    return mask
