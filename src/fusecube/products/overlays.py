"""Map overlays of a run's phenology: layers, legends, and PNGs coloured by day of year.

Date layers are coloured by month (twelve distinct colours, so December and January never
look alike); cropping intensity with one colour per season count, the same colours in the
report's figures and the viewer. No value is transparent.
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
MONTH_STARTS = (1, 32, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: One colour per month: dark/light pairs per quarter, neighbours (December, January) distinct.
MONTH_COLORS = ("#1f77b4", "#9ecae1", "#2ca02c", "#98df8a", "#bcbd22", "#e7e37a",
                "#ff7f0e", "#fdbf6f", "#d62728", "#f4a3a3", "#6a3d9a", "#cab2d6")


def month_of_doy(doy: np.ndarray) -> np.ndarray:
    """Month index 0..11 of days of year 1..366 (non-leap month starts; NaN gives 0)."""
    days = np.nan_to_num(np.asarray(doy, float), nan=1.0)
    return np.clip(np.searchsorted(MONTH_STARTS, days, side="right") - 1, 0, 11)


def month_legend() -> dict:
    """The legend of a date layer: one class per month."""
    return {"kind": "months", "unit": "month of the date", "min": 1, "max": 366,
            "classes": [{"value": d, "label": m, "color": c}
                        for d, m, c in zip(MONTH_STARTS, MONTHS, MONTH_COLORS, strict=True)]}


def month_cmap():
    """Matplotlib colormap and norm drawing day of year 1..366 in :data:`MONTH_COLORS`."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    return ListedColormap(MONTH_COLORS), BoundaryNorm([*MONTH_STARTS, 367], len(MONTHS))


def map_catalog(out: Path, config: RunConfig) -> dict:
    """Layers, seasons, years, legends and extent of a run's phenology maps."""
    with open_result(out) as ds:
        seasons, years = calendar_labels(ds, config.phenology.year_start_month)
        geobox = ds.odc.geobox
        bbox = geobox.extent.to_crs("EPSG:4326").boundingbox
        doy_legend = month_legend()
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


def _rgba(values: np.ndarray, layer: str) -> np.ndarray:
    """Colour a 2-D array: month colours for day of year, classes for intensity; no value clear.

    A class layer stored as integers with a fill value (255, negative) is clear there too.
    """
    values = np.asarray(values, float)
    if layer == "intensity":
        finite = np.isfinite(values) & (values >= 0) & (values < 255)
        table = _table(INTENSITY_COLORS)
        classes = np.clip(np.nan_to_num(values, nan=0), 0, len(INTENSITY_COLORS) - 1).astype(int)
    else:
        finite = np.isfinite(values)
        table, classes = _table(MONTH_COLORS), month_of_doy(values)
    rgba = table[classes]
    rgba[~finite] = 0
    return rgba


def _table(colors: tuple[str, ...]) -> np.ndarray:
    return np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] + [255] for c in colors], np.uint8)


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

