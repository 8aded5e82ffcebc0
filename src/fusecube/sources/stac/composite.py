"""Compositing the items read into a cube: per-period medians, clear fraction and item counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from fusecube.cube import CF_ATTRS, DIMS, NDVI, NDVI_QUALITY, TIME, VH, VV, with_geobox
from fusecube.grid.geobox import grid_attrs
from fusecube.sources.compose import (
    median_composite,
    to_naive_utc,
    valid_fraction,
)
from fusecube.sources.stac.catalogues import Progress, StacOptions
from fusecube.sources.stac.read import _Task
from fusecube.sources.stac.resume import _load_npz


def _composite(tasks: Sequence[_Task], starts: np.ndarray, geobox: GeoBox,
               options: StacOptions, parts: Path, progress: Progress) -> xr.Dataset:
    shape = (len(starts), *geobox.shape.yx)
    cube = {name: np.full(shape, np.nan, np.float32) for name in (VV, VH, NDVI)}
    cube[NDVI_QUALITY] = np.zeros(shape, np.float32)
    counts = {"s2": np.zeros(len(starts), np.int16), "s1": np.zeros(len(starts), np.int16)}
    first_obs = np.full(len(starts), np.datetime64("NaT"), "datetime64[ns]")
    last_obs = first_obs.copy()
    by_period: dict[int, list[tuple[_Task, dict]]] = {}
    for task in tasks:
        path = parts / "items" / f"{task.key}.npz"
        arrays = _load_npz(path) if path.exists() else None  # absent: the item failed
        if arrays is None:
            continue
        by_period.setdefault(task.period, []).append((task, arrays))
    for p in range(len(starts)):
        loaded = by_period.pop(p, [])
        s2 = [a for t, a in loaded if t.spec.sensor == "s2"]
        s1 = [a for t, a in loaded if t.spec.sensor == "s1"]
        counts["s2"][p], counts["s1"][p] = len(s2), len(s1)
        if s2:
            cube[NDVI][p] = median_composite(np.stack([a["ndvi"] for a in s2]))
            cube[NDVI_QUALITY][p] = valid_fraction(np.stack([a["valid"] for a in s2]),
                                                   np.stack([a["observed"] for a in s2]))
        if s1:
            cube[VV][p] = median_composite(np.stack([a["vv"] for a in s1]))
            cube[VH][p] = median_composite(np.stack([a["vh"] for a in s1]))
        if loaded:
            times = np.array([to_naive_utc(t.item.datetime) for t, _ in loaded])
            first_obs[p], last_obs[p] = times.min(), times.max()
        progress("periods", p + 1, len(starts))
    return build_cube(cube, starts, geobox, options.period_days,
                      extra_coords={"n_s2_items": counts["s2"], "n_s1_items": counts["s1"],
                                    "first_obs": first_obs, "last_obs": last_obs})


def build_cube(variables: Mapping[str, np.ndarray], starts: np.ndarray, geobox: GeoBox,
               period_days: int, *, extra_coords: Mapping[str, np.ndarray] | None = None,
               ) -> xr.Dataset:
    """Assemble ``(time, y, x)`` arrays into a cube with period centres and CF attributes."""
    half = np.timedelta64(period_days * 12, "h")
    coords = {TIME: starts + half, "period_start": (TIME, starts)}
    coords.update({k: (TIME, v) for k, v in (extra_coords or {}).items()})
    ds = xr.Dataset({name: (DIMS, values, dict(CF_ATTRS.get(name, {})))
                     for name, values in variables.items()}, coords=coords,
                    attrs=grid_attrs(geobox))  # the UTM zone picked from the AOI's centre
    return with_geobox(ds, geobox)
