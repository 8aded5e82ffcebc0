"""Cropping a cube to an area of interest on the cube's own pixels (no resampling)."""

from __future__ import annotations

import xarray as xr

from fusecube.cube import X, Y
from fusecube.errors import CubeSchemaError
from fusecube.grid.geobox import resolve_geobox


def crop_to_aoi(ds: xr.Dataset, aoi) -> xr.Dataset:
    """The part of a cube inside an AOI (bbox or vector file), on the cube's own pixels.

    Raises:
        CubeSchemaError: The cube has no CRS to place the AOI on.
    """
    base = ds.odc.geobox
    if base is None or base.crs is None:
        raise CubeSchemaError("Cube has no CRS, so --aoi cannot be placed on it; attach one "
                              "with ds.odc.assign_crs(...).")
    crop = resolve_geobox(aoi, like=base)
    col0 = round((crop.affine.c - base.affine.c) / base.affine.a)
    row0 = round((crop.affine.f - base.affine.f) / base.affine.e)
    ny, nx = crop.shape
    return ds.isel({Y: slice(row0, row0 + ny), X: slice(col0, col0 + nx)})
