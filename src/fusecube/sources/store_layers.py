"""The layers of a NetCDF file or zarr store (name, dims, dtype, units, CRS), from metadata only.

A NetCDF or zarr product is a set of layers, not one raster: ``fusecube inspect`` lists them
instead of GDAL's view of the file's first band.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from fusecube.errors import InputFileError

#: File name endings read as layer stores.
STORE_SUFFIXES = (".nc", ".nc4", ".netcdf", ".zarr")


def is_layer_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a NetCDF file or a zarr store (by suffix, or a folder with zarr metadata)."""
    p = Path(path)
    return p.suffix.lower() in STORE_SUFFIXES or (p.is_dir() and (
        (p / "zarr.json").is_file() or (p / ".zgroup").is_file()))


def _consolidated(store: Path) -> bool:
    """Whether a zarr store has consolidated metadata (opening it then reads one file, no warning)."""
    meta = store / "zarr.json"
    if meta.is_file():
        return bool(json.loads(meta.read_text()).get("consolidated_metadata"))
    return (store / ".zmetadata").is_file()


def _open(path: Path) -> xr.Dataset:
    if path.is_dir():
        return xr.open_zarr(path, chunks=None, consolidated=_consolidated(path), decode_timedelta=False)
    return xr.open_dataset(path, chunks=None, decode_timedelta=False)


def _crs(ds: xr.Dataset, var: xr.DataArray) -> str | None:
    """``EPSG:32749`` (or the WKT) of the grid mapping a variable names; None without one."""
    from odc.geo.crs import CRS

    name = var.attrs.get("grid_mapping") or var.encoding.get("grid_mapping")
    mapping = ds.variables.get(name) if name else ds.variables.get("spatial_ref")
    if mapping is None or not ({"y", "x"} <= set(var.dims) or {"lat", "lon"} <= set(var.dims)):
        return None
    wkt = mapping.attrs.get("crs_wkt") or mapping.attrs.get("spatial_ref")
    if not wkt:
        return None
    crs = CRS(wkt)
    return f"EPSG:{crs.epsg}" if crs.epsg else crs.to_wkt()


def _plain(value: Any) -> Any:
    """A JSON-ready attribute value (NaN and inf become None)."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def inspect_store(path: str | os.PathLike) -> dict[str, Any]:
    """Layers of a NetCDF file or zarr store: name, dims, shape, dtype, units, long name, CRS.

    Only metadata is read (no array values).

    Args:
        path: ``.nc`` file or ``.zarr`` store.

    Returns:
        A JSON-ready dict: ``path``, ``format``, ``dims`` (sizes), ``attrs`` (global) and
        ``layers`` (one dict per data variable; dtype as stored on disk).

    Raises:
        InputFileError: The file is missing or cannot be opened.
    """
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p} does not exist; give the path of a .nc file or .zarr store.")
    try:
        ds = _open(p)
    except Exception as exc:
        raise InputFileError(f"{p} cannot be opened as NetCDF or zarr ({type(exc).__name__}: "
                             f"{exc}); check the path, or write it again.") from exc
    with ds:
        layers = []
        for name, var in ds.data_vars.items():
            stored = var.encoding.get("dtype", var.dtype)
            nodata = var.encoding.get("_FillValue", var.attrs.get("_FillValue"))
            layers.append({
                "name": str(name), "dims": list(var.dims), "shape": list(var.shape),
                "dtype": str(np.dtype(stored)), "units": var.attrs.get("units",
                                                                       var.encoding.get("units")),
                "long_name": var.attrs.get("long_name"), "crs": _crs(ds, var),
                "nodata": _plain(nodata),
            })
        return {"path": str(p), "format": "zarr" if p.is_dir() else "netcdf",
                "dims": {str(k): int(v) for k, v in ds.sizes.items()},
                "attrs": {str(k): _plain(v) for k, v in ds.attrs.items()},
                "layers": layers}
