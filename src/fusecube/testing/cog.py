"""Write small Cloud-Optimised GeoTIFFs (tiled, overviews, header first) for tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.io import MemoryFile


def write_cog(
    path: str | os.PathLike,
    data: np.ndarray,
    geobox: GeoBox,
    *,
    nodata: float | None = None,
    blocksize: int = 256,
    compress: str = "deflate",
    overviews: bool = True,
    scale: float | None = None,
    offset: float | None = None,
) -> Path:
    """Write ``data`` (2-D, or 3-D band-first) on ``geobox`` as a COG.

    Args:
        path: Output file.
        data: Pixel values, shape ``(y, x)`` or ``(band, y, x)``.
        geobox: Grid of the data.
        nodata: Nodata value to declare.
        blocksize: Tile edge in pixels.
        compress: GDAL compression.
        overviews: Build internal overviews (as real COGs have).
        scale: Scale to record in the file metadata.
        offset: Offset to record in the file metadata.

    Returns:
        The path written.
    """
    path = Path(path)
    bands = data[None] if data.ndim == 2 else data
    profile = {"driver": "GTiff", "width": geobox.shape.x, "height": geobox.shape.y,
               "count": bands.shape[0], "dtype": bands.dtype.name, "crs": str(geobox.crs),
               "transform": geobox.affine, "nodata": nodata}
    with MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(bands)
            if scale is not None or offset is not None:
                tmp.scales = [scale if scale is not None else 1.0] * bands.shape[0]
                tmp.offsets = [offset if offset is not None else 0.0] * bands.shape[0]
        with mem.open() as src:
            with rasterio.open(path, "w", driver="COG", width=src.width, height=src.height,
                               count=src.count, dtype=src.dtypes[0], crs=src.crs,
                               transform=src.transform, nodata=src.nodata,
                               blocksize=blocksize, compress=compress,
                               overviews="AUTO" if overviews else "NONE",
                               resampling="nearest") as dst:
                dst.write(src.read())
                if scale is not None or offset is not None:
                    dst.scales, dst.offsets = src.scales, src.offsets
    return path


def header_bytes(path: str | os.PathLike) -> int:
    """Bytes before the first tile of a COG: the header and all IFDs a reader must parse."""
    offsets = []
    with rasterio.open(path) as src:
        levels = len(src.overviews(1))
    for level in [None, *range(levels)]:
        kwargs = {} if level is None else {"overview_level": level}
        with rasterio.open(path, **kwargs) as src:
            offsets.append(int(src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1)))
    return min(offsets)


def window_bytes(path: str | os.PathLike, rows: slice, cols: slice) -> int:
    """Compressed bytes of the full-resolution tiles (all bands) that a pixel window touches.

    Together with :func:`header_bytes` this is the least a windowed reader must fetch.
    """
    with rasterio.open(path) as src:
        bh, bw = src.block_shapes[0]
        tile_rows = range(rows.start // bh, (rows.stop - 1) // bh + 1)
        tile_cols = range(cols.start // bw, (cols.stop - 1) // bw + 1)
        return sum(src.block_size(b, r, c) for b in src.indexes
                   for r in tile_rows for c in tile_cols)
