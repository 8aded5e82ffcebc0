"""Cloud-Optimised GeoTIFFs that GIS tools read fully: band description, units, nodata, colours.

A map is written into an in-memory GeoTIFF (where a colour table, band description, units and
tags can be set) and copied with GDAL's COG driver, through
:func:`fusecube.storage.atomic.atomic_path`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import xarray as xr

from fusecube.cube import PADDY_MASK, X, Y
from fusecube.products.cf import SEASON_COUNT, class_flags
from fusecube.storage.atomic import atomic_path

#: Colours (RGBA) of class layers; the nodata value 255 is transparent.
COLOURS: dict[str, dict[int, tuple[int, int, int, int]]] = {
    SEASON_COUNT: {0: (224, 224, 224, 255), 1: (199, 233, 192, 255), 2: (116, 196, 118, 255),
                   3: (35, 139, 69, 255), 4: (0, 90, 50, 255), 5: (0, 68, 27, 255),
                   6: (0, 40, 16, 255)},
    PADDY_MASK: {0: (224, 224, 224, 255), 1: (49, 130, 189, 255)},
}
_NODATA_COLOUR = (0, 0, 0, 0)


def colour_table(name: str, nodata: float | None) -> dict[int, tuple[int, int, int, int]] | None:
    """The colour table of class layer ``name`` (None for continuous layers)."""
    colours = COLOURS.get(name)
    if colours is None:
        return None
    table = dict(colours)
    if nodata is not None and np.isfinite(nodata) and 0 <= nodata <= 255:
        table[int(nodata)] = _NODATA_COLOUR
    return table


def _band_values(da: xr.DataArray, dtype, nodata: float) -> np.ndarray:
    """``(y, x)`` values in ``dtype``, NaN replaced by ``nodata`` (rounded for integer types)."""
    data = np.asarray(da.transpose(Y, X).values)
    if np.issubdtype(np.dtype(dtype), np.integer) and np.issubdtype(data.dtype, np.floating):
        return np.where(np.isnan(data), nodata, np.round(data)).astype(dtype)
    return data.astype(dtype)


def write_cog(da: xr.DataArray, path: Path, crs, *, dtype=np.float32, nodata: float = np.nan,
              tags: Mapping[str, object] | None = None) -> Path:
    """Write one 2-D map as a Cloud-Optimised GeoTIFF, atomically.

    The band gets the layer's ``long_name`` as description and its ``units``; class layers
    (``season_count``, ``paddy_mask``) get a colour table and their ``flag_values`` /
    ``flag_meanings`` as tags.

    Args:
        da: ``(y, x)`` map with x/y coordinates.
        path: Output file.
        crs: Its CRS (anything odc-geo accepts; a ``spatial_ref`` coordinate is used otherwise).
        dtype: Band data type (default float32).
        nodata: Nodata value (default NaN; 255 for the uint8 class layers).
        tags: Extra dataset tags (variable, season, reference dates).

    Returns:
        ``path``.
    """
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as copy_raster

    name = str(da.name) if da.name is not None else ""
    attrs = {**class_flags(name), **da.attrs}
    plain = da.drop_vars([c for c in da.coords if c not in da.dims]).drop_attrs()
    geobox = plain.odc.assign_crs(str(crs) if crs is not None else None).odc.geobox
    values = _band_values(da, dtype, nodata)
    description = str(attrs.get("long_name", name))
    all_tags = {"long_name": description, "units": str(attrs.get("units", "")),
                **{k: _tag(attrs[k]) for k in ("flag_values", "flag_meanings") if k in attrs},
                **{k: str(v) for k, v in (tags or {}).items()}}
    profile = {"driver": "GTiff", "width": values.shape[1], "height": values.shape[0], "count": 1,
               "dtype": values.dtype.name, "crs": rasterio.crs.CRS.from_wkt(geobox.crs.to_wkt()),
               "transform": geobox.affine, "nodata": nodata}
    with MemoryFile() as memory:
        with memory.open(**profile) as band:
            band.write(values, 1)
            band.set_band_description(1, description)
            if attrs.get("units"):
                band.set_band_unit(1, str(attrs["units"]))
            band.update_tags(**all_tags)
            table = colour_table(name, nodata) if values.dtype == np.uint8 else None
            if table:
                band.write_colormap(1, table)
        with memory.open() as src, atomic_path(path) as staged:
            # DEFLATE level 1: 671 x 893 px in 0.23 s instead of 0.41 s (level 6), 1 % larger
            copy_raster(src, staged, driver="COG", compress="DEFLATE", level=1)
    return path


def _tag(value) -> str:
    if isinstance(value, np.ndarray | list | tuple):
        return " ".join(str(v) for v in np.asarray(value).tolist())
    return str(value)
