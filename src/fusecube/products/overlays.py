"""Map overlays of a run's phenology: layers, legends, and PNGs coloured by day of year.

Date layers are coloured with a cyclic colormap (1 January and 31 December meet);
cropping intensity with one colour per season count. No value is transparent.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from fusecube.config import RunConfig
from fusecube.errors import ApiError
from fusecube.products.catalog import calendar_labels, crs_name, open_result

#: Map layers: phenology dates per season slot, and cropping intensity per year.
DATE_LAYERS = ("planting", "sos", "pos", "eos", "harvest")
MAP_LAYERS = (*DATE_LAYERS, "intensity")
INTENSITY_COLORS = ("#d9d9d9", "#a6d96a", "#1a9641", "#08519c", "#54278f")
DOY_COLORMAP = "twilight"
MONTH_STARTS = (1, 32, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def map_catalog(out: Path, config: RunConfig) -> dict:
    """Layers, seasons, years, legends and extent of a run's phenology maps."""
    with open_result(out) as ds:
        seasons, years = calendar_labels(ds, config.phenology.year_start_month)
        geobox = ds.odc.geobox
        bbox = geobox.extent.to_crs("EPSG:4326").boundingbox
        doy_legend = {"kind": "cyclic", "colormap": DOY_COLORMAP, "min": 1, "max": 366,
                      "unit": "day of year",
                      "stops": [_hex(DOY_COLORMAP, (d - 1) / 365) for d in range(1, 367, 15)],
                      "ticks": [{"value": d, "label": m} for d, m in zip(MONTH_STARTS, MONTHS,
                                                                          strict=True)]}
        intensity_legend = {"kind": "categorical", "unit": "rice seasons per year",
                            "classes": [{"value": i, "label": f"{i}", "color": c}
                                        for i, c in enumerate(INTENSITY_COLORS)]}
        return {
            "layers": [{"name": n, "index": "season", "legend": doy_legend} for n in DATE_LAYERS
                       if f"{n}_doy" in ds]
            + ([{"name": "intensity", "index": "year", "legend": intensity_legend}]
               if "season_count" in ds else []),
            "seasons": [{"index": i, "label": s} for i, s in enumerate(seasons)],
            "years": [{"index": i, "label": y} for i, y in enumerate(years)],
            "width": int(geobox.shape.x), "height": int(geobox.shape.y),
            "crs": crs_name(geobox.crs),
            "bounds_lonlat": [round(v, 7) for v in (bbox.left, bbox.bottom, bbox.right, bbox.top)],
        }


def _hex(cmap_name: str, value: float) -> str:
    import matplotlib

    r, g, b, _ = matplotlib.colormaps[cmap_name](value)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def _rgba(values: np.ndarray, layer: str) -> np.ndarray:
    """Colour a 2-D array: cyclic colours for day of year, classes for intensity; NaN clear."""
    import matplotlib

    finite = np.isfinite(values)
    if layer == "intensity":
        table = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] + [255] for c in INTENSITY_COLORS],
                         np.uint8)
        classes = np.clip(np.nan_to_num(values, nan=0), 0, len(INTENSITY_COLORS) - 1).astype(int)
        rgba = table[classes]
    else:
        scaled = (np.nan_to_num(values, nan=1.0) - 1.0) / 365.0
        rgba = (matplotlib.colormaps[DOY_COLORMAP](np.clip(scaled, 0, 1)) * 255).astype(np.uint8)
    rgba[~finite] = 0
    return rgba


def render_map(out: Path, layer: str, index: int) -> bytes:
    """PNG (RGBA, one pixel per grid cell, transparent where no value) of a phenology map.

    Args:
        out: The run folder.
        layer: One of :data:`MAP_LAYERS`.
        index: Season slot (date layers) or year (intensity).

    Raises:
        ApiError: 404 for an unknown layer or an index out of range.
    """
    from PIL import Image

    if layer not in MAP_LAYERS:
        raise ApiError(f"Unknown map layer {layer!r}; choose one of {', '.join(MAP_LAYERS)}.", 404)
    name, dim = ("season_count", "year") if layer == "intensity" else (f"{layer}_doy", "season")
    with open_result(out) as ds:
        if name not in ds:
            raise ApiError(f"This run has no {layer} map.", 404)
        size = ds.sizes[dim]
        if not 0 <= index < size:
            raise ApiError(f"{dim} index {index} is out of range; this run has {size} "
                           f"{dim}s (0..{size - 1}).", 404)
        values = np.asarray(ds[name].isel({dim: index}).values, np.float32)
    buffer = io.BytesIO()
    Image.fromarray(_rgba(values, layer), "RGBA").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()

