"""Phenology stage: seasons per pixel assigned to agricultural years, as ``(season, y, x)`` maps."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from fusecube.cube import NDVI_SMOOTH, PADDY_MASK, SEASON, TIME, YEAR, X, Y
from fusecube.errors import ConfigError, CubeSchemaError
from fusecube.grid.periods import (
    agricultural_year_index,
    agricultural_years,
    day_of_year,
    from_days,
    season_label,
    to_days,
)
from fusecube.kernels.season_reasons import seasons_per_year
from fusecube.kernels.seasons import DATE_METRICS, SEASON_METRICS, SeasonRules, detect_seasons

log = logging.getLogger(__name__)

DROPPED_SEASONS = "dropped_seasons"
#: Largest |NDVI| accepted before the curve is taken for a scaled product (e.g. x10000).
NDVI_SCALE_LIMIT = 1.5

SEASON_ATTRS = {
    "planting": "planting (trough before green-up: the flooded field)",
    "harvest": "harvest (steepest decline after the peak)",
    "sos": "start of season (SOS fraction of the seasonal amplitude, or steepest green-up)",
    "pos": "peak of season",
    "eos": "end of season (EOS fraction of the seasonal amplitude, or steepest senescence)",
    "length": "season length, SOS to EOS (days)",
    "base_value": "base NDVI (mean of the two minima)", "peak_value": "peak NDVI",
    "amplitude": "seasonal amplitude (NDVI)", "integral": "NDVI above base, SOS..EOS (NDVI*days)",
    "greenup_rate": "largest green-up slope (NDVI/day)",
    "senescence_rate": "largest senescence slope (NDVI/day)",
}


@dataclass(frozen=True)
class PhenologyConfig:
    """Options of the phenology stage."""

    rules: SeasonRules = field(default_factory=SeasonRules)
    """Season detection rules."""
    seasons_per_year: int = 3
    """Season slots per agricultural year (rice: up to 3)."""
    year_start_month: int = 11
    """First month of the agricultural year (November: Java's wet-season planting)."""
    paddy_only: bool = True
    """Compute only where ``paddy_mask`` is 1 (NaN elsewhere)."""
    chunk_pixels: int = 8192
    """Pixels per vectorised season detection (cache-friendly batches)."""
    explain: bool = False
    """Also output ``dropped_seasons`` ``(year, y, x)``: candidates the rules rejected, per
    agricultural year (what :mod:`fusecube.stages.season_extras` turns into reason codes)."""

    def __post_init__(self) -> None:
        if not 1 <= self.seasons_per_year <= 6:
            raise ConfigError(
                f"seasons_per_year must be within 1..6; got {self.seasons_per_year}.")
        if not 1 <= self.year_start_month <= 12:
            raise ConfigError(
                f"year_start_month must be within 1..12; got {self.year_start_month}.")
        if self.chunk_pixels < 1:
            raise ConfigError("chunk_pixels must be >= 1.")


def assign_to_years(
    metrics: dict[str, np.ndarray], first_year: int, n_years: int, start_month: int, per_year: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Place detected seasons (time-ordered slots) into ``per_year`` slots per agricultural year.

    A season belongs to the agricultural year of its peak. Seasons beyond ``per_year`` in one
    year are dropped (counted in the returned season count, which is capped at ``per_year``).

    Returns:
        ``(metrics (N, n_years*per_year), season_count (N, n_years))``.
    """
    pos = metrics["pos"]
    n, n_det = pos.shape
    year_idx = agricultural_year_index(pos, first_year, start_month)
    valid = np.isfinite(pos) & (year_idx >= 0) & (year_idx < n_years)
    rank = np.zeros((n, n_det), dtype=np.int64)
    for s in range(1, n_det):
        same = valid[:, :s] & (year_idx[:, :s] == year_idx[:, s : s + 1])
        rank[:, s] = same.sum(axis=1)
    keep = valid & (rank < per_year)
    slot = np.where(keep, year_idx * per_year + rank, -1)
    out = {name: np.full((n, n_years * per_year), np.nan) for name in metrics}
    rows, cols = np.nonzero(keep)
    for name, value in metrics.items():
        out[name][rows, slot[rows, cols]] = value[rows, cols]
    count = np.zeros((n, n_years))
    np.add.at(count, (rows, year_idx[rows, cols]), 1.0)
    return out, np.minimum(count, per_year)


def season_coords(years: list[int], per_year: int) -> dict[str, tuple]:
    """Coordinates of the ``season`` and ``year`` dims (numbers only: zarr v3 has no strings)."""
    return {
        SEASON: np.arange(len(years) * per_year),
        "season_year": (SEASON, np.repeat(years, per_year)),
        "season_number": (SEASON, np.tile(np.arange(1, per_year + 1), len(years))),
        YEAR: np.asarray(years),
    }


def season_labels(ds: xr.Dataset, start_month: int = 11, *, for_file: bool = False) -> list[str]:
    """Labels of the season slots, e.g. ``2023/24 season1`` (:func:`~fusecube.grid.periods.season_label`)."""
    return [season_label(int(y), int(k), start_month, for_file=for_file)
            for y, k in zip(ds["season_year"].values, ds["season_number"].values, strict=True)]


def season_slots(flat: np.ndarray, select: np.ndarray, days: np.ndarray, years: list[int],
                 config: PhenologyConfig, dropped: np.ndarray | None = None,
                 ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Seasons of ``(N, T)`` curves placed in their agricultural-year slots.

    Args:
        flat: ``(N, T)`` gap-free smoothed NDVI.
        select: ``(N,)`` pixels to analyse (the others stay NaN).
        days: ``(T,)`` sample times in days.
        years: The agricultural years of the slots.
        config: Phenology options.
        dropped: Optional ``(N, len(years))`` array: filled with the number of candidates the
            rules rejected per agricultural year (by their peak).

    Returns:
        ``(slots, count)``: ``(N, len(years) * seasons_per_year)`` float arrays per name of
        :data:`SEASON_METRICS`, and the ``(N, len(years))`` season count.
    """
    per_year = config.seasons_per_year
    n_slots = len(years) * per_year
    slots = {name: np.full((flat.shape[0], n_slots), np.nan) for name in SEASON_METRICS}
    count = np.full((flat.shape[0], len(years)), np.nan)
    index = np.flatnonzero(select)
    for start in range(0, index.size, config.chunk_pixels):
        rows = index[start : start + config.chunk_pixels]
        # smoothing may overshoot 1 by a hair on dense canopy: not a reason to drop a season
        rejected = None if dropped is None else np.empty((rows.size, 8))
        detected = detect_seasons(np.clip(flat[rows], -1.0, 1.0), days, config.rules,
                                  dropped=rejected)
        if dropped is not None:
            dropped[rows] = seasons_per_year(rejected, years[0], len(years),
                                             config.year_start_month)
        if detected["pos"].shape[1] == 0:
            detected = {k: np.full((rows.size, 1), np.nan) for k in SEASON_METRICS}
        placed, placed_count = assign_to_years(
            detected, years[0], len(years), config.year_start_month, per_year)
        for name in SEASON_METRICS:
            slots[name][rows] = placed[name]
        count[rows] = placed_count
    return slots, count


def output_variables(explain: bool = False) -> list[tuple[str, str]]:
    """``(name, dim)`` of every phenology output, in order.

    Each metric (and ``<date>_doy`` beside a date metric) on ``season``, then
    ``season_count`` on ``year`` (and ``dropped_seasons`` with ``explain``).
    """
    names = []
    for name in SEASON_METRICS:
        names.append((name, SEASON))
        if name in DATE_METRICS:
            names.append((f"{name}_doy", SEASON))
    return [*names, ("season_count", YEAR), *([(DROPPED_SEASONS, YEAR)] if explain else [])]


def _phenology_kernel(curve: np.ndarray, *mask: np.ndarray, days: np.ndarray,
                      years: list[int], config: PhenologyConfig,
                      variable: str) -> tuple[np.ndarray, ...]:
    """The numpy kernel under :func:`phenology`, on ``(..., T)`` curves and a ``(...)`` mask.

    Returns:
        The outputs of :func:`output_variables` in order, each ``(..., S)`` or
        ``(..., n_years)``.
    """
    pixels = curve.shape[:-1]
    flat = curve.reshape(-1, curve.shape[-1])
    select = np.all(np.isfinite(flat), axis=1)
    if mask:
        select &= mask[0].reshape(-1) > 0
    if select.any():
        extreme = float(np.abs(flat[select]).max())
        if extreme > NDVI_SCALE_LIMIT:
            raise CubeSchemaError(
                f"{variable!r} reaches |NDVI| = {extreme:g}; NDVI lies within [-1, 1]. The input "
                "looks scaled (e.g. x100 or x10000): divide it by its scale factor first.")
    dropped = np.zeros((flat.shape[0], len(years))) if config.explain else None
    slots, count = season_slots(flat, select, days, years, config, dropped)
    out = []
    for name in SEASON_METRICS:
        grid = slots[name].reshape(*pixels, -1)
        if name in DATE_METRICS:
            out += [from_days(grid), day_of_year(grid).astype(np.float32)]
        else:
            out.append(grid.astype(np.float32))
    out.append(count.reshape(*pixels, -1).astype(np.float32))
    if dropped is not None:
        out.append(dropped.reshape(*pixels, -1).astype(np.float32))
    return tuple(out)


def phenology(cube: xr.Dataset, *, config: PhenologyConfig = PhenologyConfig(),
              variable: str = NDVI_SMOOTH) -> xr.Dataset:
    """Per-pixel seasons (SOS/POS/EOS, length, amplitude, ...) and cropping intensity.

    On a dask-backed cube the result stays lazy (one task per spatial chunk, all time steps).

    Args:
        cube: Cube with a gap-free ``variable`` (time, y, x) and optionally ``paddy_mask`` (y, x).
        config: Phenology options.
        variable: The smoothed NDVI variable to analyse.

    Returns:
        Dataset with dims ``(season, y, x)`` and ``(year, y, x)``, carrying the cube's y/x coords.
    """
    if variable not in cube:
        raise CubeSchemaError(
            f"phenology() needs the smoothed NDVI {variable!r}; the cube has "
            f"{sorted(cube.data_vars)}. Run fusecube.stages.smooth first or pass variable=.")
    times = cube[TIME].values
    years = agricultural_years(times, config.year_start_month)
    inputs = [cube[variable].transpose(TIME, Y, X)]
    if inputs[0].chunks:  # a task holds whole series: chunked in space only
        inputs[0] = inputs[0].chunk({TIME: -1})
    if config.paddy_only and PADDY_MASK in cube:
        inputs.append(cube[PADDY_MASK].transpose(Y, X))
    elif config.paddy_only:
        log.info("phenology: no %s in the cube, computing every pixel", PADDY_MASK)
    outputs = output_variables(config.explain)
    results = xr.apply_ufunc(
        _phenology_kernel, *inputs,
        input_core_dims=[[TIME]] + [[]] * (len(inputs) - 1),
        output_core_dims=[[dim] for _, dim in outputs],
        kwargs={"days": to_days(times), "years": years, "config": config, "variable": variable},
        dask="parallelized",
        output_dtypes=[np.dtype("datetime64[ns]") if name in DATE_METRICS else np.float32
                       for name, _ in outputs],
        dask_gufunc_kwargs={"output_sizes": {SEASON: len(years) * config.seasons_per_year,
                                             YEAR: len(years)}})
    data = {}
    for (name, dim), result in zip(outputs, results, strict=True):
        data[name] = ((dim, Y, X), result.transpose(dim, Y, X).data, _attrs(name))
    out = xr.Dataset(data, coords=season_coords(years, config.seasons_per_year))
    out.attrs.update(sos_eos_method=config.rules.method, seasons_per_year=config.seasons_per_year,
                     year_start_month=config.year_start_month)
    return out.assign_coords({Y: cube[Y], X: cube[X]})


def _attrs(name: str) -> dict[str, str]:
    """CF attributes of a phenology output variable."""
    if name == "season_count":
        return {"long_name": "rice seasons in the agricultural year (cropping intensity)"}
    if name == DROPPED_SEASONS:
        return {"long_name": "candidate seasons the plausibility rules rejected in the year"}
    if name.endswith("_doy"):
        return {"long_name": f"{SEASON_ATTRS[name[:-4]]}, day of year", "units": "day"}
    return {"long_name": SEASON_ATTRS[name]}
