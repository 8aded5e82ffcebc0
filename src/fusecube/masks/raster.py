"""Masks from raster files, read by window and resampled onto the cube grid.

Only the rows/columns under the area of interest (plus a margin) are read, then resampled to
the cube's GeoBox by nearest neighbour, so a 24870 x 8475 island mask never loads whole.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from odc.geo.geobox import GeoBox

from fusecube.errors import InputFileError, MaskError
from fusecube.masks.report import MaskReport, _aoi_text, coverage

log = logging.getLogger(__name__)


RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img"}


def _source_window(src, geobox: GeoBox, margin: int = 2):
    """The window of ``src`` under the area of interest (plus ``margin`` pixels), or None."""
    from rasterio.windows import Window, from_bounds

    b = geobox.extent.to_crs(src.crs.to_wkt()).boundingbox
    win = from_bounds(b.left, b.bottom, b.right, b.top, transform=src.transform)
    row0 = int(np.floor(win.row_off)) - margin
    col0 = int(np.floor(win.col_off)) - margin
    row1 = int(np.ceil(win.row_off + win.height)) + margin
    col1 = int(np.ceil(win.col_off + win.width)) + margin
    row0, col0 = max(row0, 0), max(col0, 0)
    row1, col1 = min(row1, src.height), min(col1, src.width)
    if row1 <= row0 or col1 <= col0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def raster_mask_with_report(path: str | Path, geobox: GeoBox, *,
                            band: int = 1) -> tuple[np.ndarray, MaskReport]:
    """Read a raster mask onto ``geobox`` by nearest neighbour, reading only the needed window.

    Pixels > 0 (and not nodata) are mask. Only the rows and columns of the source under the
    area of interest are decoded.

    Args:
        path: GeoTIFF (or any GDAL raster) with a CRS.
        geobox: The cube grid.
        band: Band to read (1-based).

    Returns:
        ``(mask (ny, nx) uint8, report)``; ``report.window`` and ``report.bytes_read`` say what
        was read.

    Raises:
        InputFileError: The file cannot be opened or its pixels cannot be decoded.
        MaskError: No CRS, no overlap, or no positive pixel inside the area of interest.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    path = Path(path)
    try:
        src = rasterio.open(path)
    except Exception as exc:  # RasterioIOError and friends
        raise InputFileError(
            f"Mask {path} cannot be opened as a raster ({type(exc).__name__}: {exc}); "
            "check the file is a complete GeoTIFF or re-export it."
        ) from exc
    with src:
        if src.crs is None:
            raise MaskError(
                f"Mask {path} has no CRS, so it cannot be placed on the cube grid; assign one, "
                "e.g. gdal_edit.py -a_srs EPSG:4326 " + str(path)
            )
        report = MaskReport(source=str(path), kind="raster", source_crs=str(src.crs),
                            file_shape=(src.height, src.width))
        window = _source_window(src, geobox)
        if window is None:
            b = src.bounds
            raise MaskError(
                f"Mask {path} (bounds {b.left:.6g}, {b.bottom:.6g}, {b.right:.6g}, {b.top:.6g} "
                f"in {src.crs}) does not overlap the area of interest {_aoi_text(geobox)}; use "
                "a mask of the same place or check both CRSs."
            )
        try:
            data = src.read(band, window=window)
        except Exception as exc:
            raise InputFileError(
                f"Mask {path}: pixels of window {window} cannot be decoded "
                f"({type(exc).__name__}: {exc}); the file may be truncated: copy it again."
            ) from exc
        valid = data > 0
        if src.nodata is not None:
            valid &= data != src.nodata
        report.window = (int(window.row_off), int(window.col_off), int(window.height),
                         int(window.width))
        report.bytes_read = int(data.nbytes)
        win_transform = src.window_transform(window)
        burned = np.zeros(geobox.shape, np.uint8)
        reproject(valid.astype(np.uint8), burned, src_transform=win_transform, src_crs=src.crs,
                  dst_transform=geobox.affine, dst_crs=geobox.crs.to_wkt(),
                  resampling=Resampling.nearest, src_nodata=None, dst_nodata=None)
    coverage(report, burned, geobox)
    log.info("mask %s: read window %s (%d bytes) of %s", path, report.window, report.bytes_read,
             report.file_shape)
    if report.pixels == 0:
        raise MaskError(
            f"Mask {path} has no positive pixels inside the area of interest {_aoi_text(geobox)}; "
            "it overlaps the cube but is 0/nodata there: check that it is the right mask."
        )
    return burned, report


def raster_mask(path: str | Path, geobox: GeoBox) -> np.ndarray:
    """Read a raster mask onto ``geobox`` by nearest neighbour, reading only the needed window."""
    return raster_mask_with_report(path, geobox)[0]
