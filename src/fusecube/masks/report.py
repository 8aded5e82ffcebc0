"""What building a mask did: :class:`MaskReport` and its coverage of the area of interest.

Also the texts that name a CRS or the area of interest in messages.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from odc.geo.geobox import GeoBox

from fusecube.masks.area import pixel_areas_km2


@dataclass
class MaskReport:
    """What building a mask did and how much of the area of interest it covers."""

    source: str
    """The mask spec: a path, ``"cube"`` or ``"none"``."""
    kind: str
    """``"vector"``, ``"raster"`` or ``"cube"``."""
    source_crs: str | None = None
    """CRS of the mask file (before reprojection to the cube grid)."""
    n_features: int = 0
    """Vector features in the file."""
    n_read: int = 0
    """Vector features read (those whose envelope touches the area of interest)."""
    n_null: int = 0
    """Features with a missing or empty geometry (dropped)."""
    n_invalid: int = 0
    """Invalid geometries (self-intersections, ...) repaired with ``make_valid``."""
    n_non_polygon: int = 0
    """Features dropped because nothing polygonal was left (points, lines, collapsed rings)."""
    n_used: int = 0
    """Polygon features burned into the mask."""
    had_z: bool = False
    """Whether the geometries carried Z coordinates (dropped)."""
    window: tuple[int, int, int, int] | None = None
    """Raster window read ``(row_off, col_off, height, width)``."""
    file_shape: tuple[int, int] | None = None
    """Full raster size ``(height, width)``."""
    bytes_read: int = 0
    """Bytes of decoded raster pixels read (the window only)."""
    pixels: int = 0
    """Mask pixels (value 1) on the cube grid."""
    aoi_pixels: int = 0
    """Pixels of the area of interest (the cube grid)."""
    km2: float = 0.0
    """Area of the mask pixels in km²."""
    aoi_km2: float = 0.0
    """Area of the area of interest in km²."""
    percent_of_aoi: float = 0.0
    """Mask pixels as a percentage of the area of interest."""
    polygon_km2: float | None = None
    """Area of the polygons clipped to the area of interest (vector masks), for comparison."""
    notes: list[str] = field(default_factory=list)
    """Human-readable remarks (repairs, drops)."""

    def to_dict(self) -> dict:
        """JSON-able dictionary."""
        return asdict(self)


def coverage(report: MaskReport, mask: np.ndarray, geobox: GeoBox) -> MaskReport:
    """Fill the coverage fields of ``report`` from a ``(y, x)`` 0/1 mask."""
    areas = pixel_areas_km2(geobox)
    on = mask > 0
    report.pixels = int(on.sum())
    report.aoi_pixels = int(mask.size)
    report.km2 = float((on * areas).sum())
    report.aoi_km2 = float(areas.sum() * mask.shape[1])
    report.percent_of_aoi = 100.0 * report.pixels / max(report.aoi_pixels, 1)
    return report


def crs_text(crs) -> str:
    """``EPSG:32749`` when the CRS has an EPSG code, else its WKT."""
    epsg = getattr(crs, "epsg", None)
    return f"EPSG:{epsg}" if epsg else str(crs)


def _aoi_text(geobox: GeoBox) -> str:
    b = geobox.extent.boundingbox
    return f"({b.left:.6g}, {b.bottom:.6g}, {b.right:.6g}, {b.top:.6g}) in {crs_text(geobox.crs)}"
