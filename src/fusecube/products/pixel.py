"""One pixel of a finished run: its time series (S1, observed, fused, smoothed NDVI) and seasons.

Periods the input screen removed (all-zero composites) are never answered as observations:
their observed NDVI is null and their dates are listed in ``screened``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fusecube.config import RunConfig
from fusecube.cube import NDVI, NDVI_FUSED, NDVI_SMOOTH, PADDY_MASK, VH, VV
from fusecube.errors import ApiError
from fusecube.fusion.observed import RADAR_METHODS
from fusecube.products.catalog import calendar_labels, crs_name, open_input, open_result, run_gapfill
from fusecube.products.overlays import DATE_LAYERS
from fusecube.quality.summary import run_screened_periods
from fusecube.units import to_db


def locate(geobox, *, lon: float | None = None, lat: float | None = None, x: float | None = None,
           y: float | None = None, row: int | None = None, col: int | None = None) -> tuple[int, int]:
    """Row and column of the pixel at lon/lat (WGS84), x/y (grid CRS), or row/col itself.

    Raises:
        ApiError: 400 without exactly one complete pair, 404 outside the grid.
    """
    pairs = {"lon/lat": (lon, lat), "x/y": (x, y), "row/col": (row, col)}
    given = [k for k, (a, b) in pairs.items() if a is not None or b is not None]
    if len(given) != 1 or None in pairs[given[0]]:
        raise ApiError("Give exactly one location: lon and lat (WGS84 degrees), x and y (in the "
                       "run's grid CRS), or row and col (pixel indices).", 400)
    ny, nx = geobox.shape
    if given[0] == "row/col":
        r, c = int(row), int(col)
    else:
        if given[0] == "lon/lat":
            from odc.geo.geom import point

            px, py = point(lon, lat, "EPSG:4326").to_crs(geobox.crs).coords[0]
        else:
            px, py = x, y
        fc, fr = ~geobox.affine * (px, py)
        if not (math.isfinite(fc) and math.isfinite(fr)):
            raise ApiError(f"Location {given[0]} = {pairs[given[0]]} cannot be placed on the "
                           f"grid ({geobox.crs}).", 404)
        r, c = math.floor(fr), math.floor(fc)
    if not (0 <= r < ny and 0 <= c < nx):
        bbox = geobox.extent.to_crs("EPSG:4326").boundingbox
        raise ApiError(f"Location {given[0]} = {pairs[given[0]]} is outside the run's grid "
                       f"({ny} x {nx} px, lon {bbox.left:.5f}..{bbox.right:.5f}, "
                       f"lat {bbox.bottom:.5f}..{bbox.top:.5f}).", 404)
    return r, c


def _floats(values: np.ndarray, ndigits: int = 4) -> list[float | None]:
    return [round(float(v), ndigits) if np.isfinite(v) else None for v in np.asarray(values, float)]


def _date(value) -> str | None:
    return None if np.isnat(value) else str(np.datetime_as_string(value, unit="D"))


def fused_source(series: dict, method: str, choice: dict) -> tuple[str | None, str]:
    """Where a pixel's ``ndvi_fused`` comes from, and a note when it was never observed.

    Returns:
        ``("observations" | "radar" | "none" | None, note)``: ``radar`` only for a radar method
        the run's validation chose; ``none`` means the fused series must not be shown (nothing
        was observed and no validated radar method made it); None when the input is gone.
    """
    if "ndvi" not in series:
        return None, ""
    if any(v is not None for v in series["ndvi"]):
        return "observations", ""
    if not any(v is not None for v in series.get(NDVI_FUSED, [])):
        return "none", "This pixel has no NDVI observation; nothing was filled."
    if method in RADAR_METHODS and choice.get("chosen") == method:
        return "radar", (f"This pixel has no NDVI observation: ndvi_fused is a radar-only "
                         f"prediction of {method!r}, the method the run's validation chose "
                         f"({choice.get('verdict') or choice.get('reason') or 'see run.json'}).")
    return "none", (f"This pixel has no NDVI observation and the run's gap-fill {method!r} is "
                    "not a validated radar method, so its fused series and seasons are not shown.")


def pixel(out: Path, config: RunConfig, **where) -> dict:
    """Time series (S1 in dB, observed, fused and smoothed NDVI) and seasons of one pixel.

    A pixel never observed shows a fused series only when a radar method chosen by the run's
    validation made it, labelled ``fused_from: radar`` (:func:`fused_source`).

    Args:
        out: The run folder.
        config: The run's configuration (to find its input cube and calendar).
        **where: ``lon``/``lat``, ``x``/``y`` or ``row``/``col`` (see :func:`locate`).
    """
    with open_result(out) as ds:
        geobox = ds.odc.geobox
        r, c = locate(geobox, **where)
        at = ds.isel(y=r, x=c)
        px, py = geobox.affine * (c + 0.5, r + 0.5)
        from odc.geo.geom import point

        lon, lat = point(px, py, geobox.crs).to_crs("EPSG:4326").coords[0]
        series = {name: _floats(at[name].values)
                  for name in (NDVI_FUSED, NDVI_SMOOTH, "ndvi_sigma") if name in at}
        method = str(ds[NDVI_FUSED].attrs.get("gapfill_method", "")) if NDVI_FUSED in ds else ""
        seasons_labels, year_labels = calendar_labels(ds, config.phenology.year_start_month)
        seasons, empty = [], []
        for i, label in enumerate(seasons_labels):
            slot = at.isel(season=i)
            if "sos" not in slot or np.isnat(slot["sos"].values):
                if "season_reason" in slot:  # why the slot is empty (issue 22)
                    empty.append({"index": i, "label": label,
                                  "reasons": _reasons(ds, slot["season_reason"].values)})
                continue
            item = {"index": i, "label": label}
            for name in DATE_LAYERS:
                if name in slot:
                    item[name] = _date(slot[name].values)
                if f"{name}_pm_days" in slot:
                    item[f"{name}_pm_days"] = _floats([slot[f"{name}_pm_days"].values], 1)[0]
            for name in ("length", "amplitude", "peak_value"):
                if name in slot:
                    item[name] = _floats([slot[name].values], 3)[0]
            seasons.append(item)
        counts = ([{"year": y, "count": _floats([v], 0)[0]}
                   for y, v in zip(year_labels, at["season_count"].values, strict=True)]
                  if "season_count" in at else [])
        paddy = bool(at[PADDY_MASK].values) if PADDY_MASK in at else None
        provenance = _provenance(ds, at)
        times = [_date(t) for t in ds["time"].values]
    screened = run_screened_periods(out)
    if provenance is not None:
        series["ndvi_source"] = provenance
    cube = open_input(out, config)
    if cube is not None:
        with cube:
            point_in = cube.isel(y=r, x=c)
            if NDVI in point_in:
                observed = np.asarray(point_in[NDVI].values, float)
                observed[[i for i in screened if i < observed.size]] = np.nan  # not observations
                series["ndvi"] = _floats(observed)
            for name in (VV, VH):
                if name in point_in:
                    series[f"{name}_db"] = _floats(to_db(np.asarray(point_in[name].values, float)), 2)
    choice = run_gapfill(out)
    source, note = fused_source(series, method or str(choice.get("chosen", "")), choice)
    if source == "none":  # nothing observed, nothing validated: no made-up series or seasons
        for name in (NDVI_FUSED, NDVI_SMOOTH, "ndvi_sigma"):
            if name in series:
                series[name] = [None] * len(series[name])
        seasons, counts = [], [{**item, "count": None} for item in counts]
    return {"row": r, "col": c, "x": round(px, 3), "y": round(py, 3), "lon": round(lon, 7),
            "lat": round(lat, 7), "crs": crs_name(geobox.crs), "paddy": paddy, "time": times,
            "series": series, "seasons": seasons, "season_count": counts,
            "fused_from": source, "notes": [note] if note else [], "empty_seasons": empty,
            "screened": [times[i] for i in screened if i < len(times)]}


def _provenance(ds, at) -> list[str | None] | None:
    """Flag names of the pixel's ``ndvi_source`` per time step, None without that layer."""
    if "ndvi_source" not in at:
        return None
    meanings = str(ds["ndvi_source"].attrs.get("flag_meanings", "")).split()
    codes = np.asarray(at["ndvi_source"].values)
    return [meanings[int(c)] if np.isfinite(c) and 0 <= int(c) < len(meanings) else None
            for c in codes.astype(float)]


def _reasons(ds, flags) -> list[str]:
    """Names of the bits set in a ``season_reason`` value (CF ``flag_masks``)."""
    masks = np.asarray(ds["season_reason"].attrs.get("flag_masks", []), int).reshape(-1)
    meanings = str(ds["season_reason"].attrs.get("flag_meanings", "")).split()
    value = int(flags)
    return [name for mask, name in zip(masks, meanings, strict=False) if value & int(mask)]
