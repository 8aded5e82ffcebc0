"""What the season maps do not say by themselves: ± days of each date and why a slot is empty.

Beside every date metric of :mod:`fusecube.stages.phenology` (``sos``, ``pos``, ``eos``,
``planting``, ``harvest``) this stage writes ``<date>_pm_days``: the half-width (days) of its
95 % interval, ``ndvi_sigma`` propagated through the smoother and the date definitions
(:mod:`fusecube.kernels.season_intervals`). ``season_reason`` (uint8 bit flags, CF
``flag_masks``) says for every empty slot why it is empty
(:mod:`fusecube.kernels.season_reasons`); 0 where the slot holds a season.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import xarray as xr

from fusecube.cube import NDVI, NDVI_SMOOTH, PADDY_MASK, SEASON, TIME, YEAR, X, Y
from fusecube.errors import ConfigError, CubeSchemaError
from fusecube.grid.periods import agricultural_years, to_days
from fusecube.kernels.season_intervals import date_intervals, hat_matrix
from fusecube.kernels.season_reasons import (
    REASON_FLAGS,
    observations_per_year,
    season_reasons,
    seasons_per_year,
    years_cut,
)
from fusecube.kernels.seasons import DATE_METRICS, detect_seasons
from fusecube.stages.phenology import DROPPED_SEASONS, PhenologyConfig
from fusecube.stages.provenance import NDVI_SIGMA

SEASON_REASON = "season_reason"
REASON_ATTRS = {
    "long_name": "Why the season slot is empty (bit flags; 0: the slot holds a season)",
    "flag_masks": np.array(list(REASON_FLAGS.values()), dtype=np.uint8),
    "flag_meanings": " ".join(REASON_FLAGS),
}


def pm_name(date: str) -> str:
    """Name of the ± days variable of a date metric: ``sos`` → ``sos_pm_days``."""
    return f"{date}_pm_days"


@dataclass(frozen=True)
class SeasonExtrasConfig:
    """Options of the season-date intervals and reason codes."""

    lam: float = 1.0
    """Smoothing strength of the run (the NDVI errors are smoothed like the series)."""
    min_observations: int = 4
    """A year with fewer observations of a pixel has too few."""
    min_observed_share: float = 0.25
    """So has a year in which less than this share of the dates is observed."""

    def __post_init__(self) -> None:
        if not self.lam > 0:
            raise ConfigError(f"lam must be > 0; got {self.lam}.")


def _kernel(curve, observed, sigma, *rest, days, years, config, extras, paddy_given,
            dropped_given):
    """``(..., T)`` series and ``(..., S)`` dates → ± days per date and the reason flags."""
    pixels = curve.shape[:-1]
    n_t = curve.shape[-1]
    flat = curve.reshape(-1, n_t)
    obs = np.isfinite(observed.reshape(-1, n_t))
    sig = sigma.reshape(-1, n_t)
    given = [r.reshape(-1, r.shape[-1]) for r in rest[:len(DATE_METRICS)]]
    dates = {name: to_days(values) if np.issubdtype(values.dtype, np.datetime64) else values
             for name, values in zip(DATE_METRICS, given, strict=True)}
    n, n_s = dates["pos"].shape
    paddy = (rest[-1].reshape(-1) > 0) if paddy_given else np.ones(n, bool)
    analysed = np.all(np.isfinite(flat), axis=1)
    if config.paddy_only:
        analysed &= paddy
    per_year = config.seasons_per_year
    # reasons: what the year held, and what the detection rejected (counted by phenology
    # with explain=True, else found again with the plausibility rules relaxed)
    rules = config.rules
    if dropped_given:
        rejected = rest[len(DATE_METRICS)].reshape(n, -1)
    else:
        rejected = np.zeros((n, len(years)))
        rows = np.flatnonzero(analysed)
        if rows.size:
            relaxed = replace(rules, min_length=1.0, max_length=1e5, min_peak=-1.0)
            found = detect_seasons(np.clip(flat[rows], -1.0, 1.0), days, relaxed)
            rejected[rows] = seasons_per_year(found["pos"], years[0], len(years),
                                              config.year_start_month)
    kept = seasons_per_year(dates["pos"], years[0], len(years), config.year_start_month)
    if not dropped_given:  # the relaxed detection found the kept seasons too
        rejected = np.maximum(rejected - kept, 0)
    observed_count, dates_per_year = observations_per_year(obs, days, years[0], len(years),
                                                           config.year_start_month)
    reason = season_reasons(
        np.isfinite(dates["pos"]), np.repeat(np.arange(len(years)), per_year),
        paddy=paddy | (not config.paddy_only), analysed=np.all(np.isfinite(flat), axis=1),
        observed_per_year=observed_count, dates_per_year=dates_per_year,
        cut=years_cut(days, years, config.year_start_month),
        rejected_per_year=rejected,
        min_observations=extras.min_observations,
        min_observed_share=extras.min_observed_share)
    intervals = {name: np.full((n, n_s), np.nan) for name in DATE_METRICS}
    rows = np.flatnonzero(np.isfinite(dates["pos"]).any(axis=1))
    hat = hat_matrix(days, extras.lam) if rows.size else None
    for start in range(0, rows.size, config.chunk_pixels):
        part = rows[start:start + config.chunk_pixels]
        got = date_intervals(flat[part], sig[part], obs[part],
                             {k: v[part] for k, v in dates.items()}, days, lam=extras.lam,
                             sos_fraction=rules.sos_fraction, eos_fraction=rules.eos_fraction,
                             hat=hat)
        for name in DATE_METRICS:
            intervals[name][part] = got[name]
    out = [intervals[name].reshape(*pixels, n_s).astype(np.float32) for name in DATE_METRICS]
    return (*out, reason.reshape(*pixels, n_s))


def season_extras(block: xr.Dataset, seasons: xr.Dataset, *,
                  config: PhenologyConfig | None = None,
                  extras: SeasonExtrasConfig | None = None) -> xr.Dataset:
    """``<date>_pm_days`` and ``season_reason`` for the seasons of a block.

    Args:
        block: The series: ``ndvi`` (screened observations), ``ndvi_smooth``, ``ndvi_sigma``
            and ``paddy_mask`` where the run has one.
        seasons: The phenology of the block (after its gates).
        config: The phenology options the seasons were detected with (default options).
        extras: The run's λ and the too-few-observations rule (default options).

    Returns:
        ``seasons`` with the new variables added on ``(season, y, x)``.
    """
    config = config or PhenologyConfig()
    extras = extras or SeasonExtrasConfig()
    missing = [n for n in (NDVI, NDVI_SMOOTH, NDVI_SIGMA) if n not in block]
    missing += [n for n in DATE_METRICS if n not in seasons]
    if missing:
        raise CubeSchemaError(f"season_extras() needs {missing}; run the gap-fill, smoothing, "
                              "provenance and phenology stages first.")
    times = block[TIME].values
    years = agricultural_years(times, config.year_start_month)
    series = [block[n].transpose(Y, X, TIME) for n in (NDVI_SMOOTH, NDVI, NDVI_SIGMA)]
    dated = [seasons[n].transpose(Y, X, SEASON) for n in DATE_METRICS]
    paddy = [block[PADDY_MASK].transpose(Y, X)] if PADDY_MASK in block else []
    dropped = [seasons[DROPPED_SEASONS].transpose(Y, X, YEAR)] if DROPPED_SEASONS in seasons else []
    core = [[TIME]] * 3 + [[SEASON]] * len(dated) + [[YEAR]] * len(dropped) + [[]] * len(paddy)
    results = xr.apply_ufunc(
        _kernel, *series, *dated, *dropped, *paddy, input_core_dims=core,
        output_core_dims=[[SEASON]] * (len(DATE_METRICS) + 1),
        kwargs={"days": to_days(times), "years": years, "config": config, "extras": extras,
                "paddy_given": bool(paddy), "dropped_given": bool(dropped)},
        dask="parallelized",
        output_dtypes=[np.float32] * len(DATE_METRICS) + [np.uint8])
    out = seasons.drop_vars(DROPPED_SEASONS, errors="ignore")
    for name, result in zip(DATE_METRICS, results[:-1], strict=True):
        out[pm_name(name)] = result.transpose(SEASON, Y, X)
        out[pm_name(name)].attrs = {"long_name": f"half-width of the 95 % interval of {name}",
                                    "units": "day"}
    out[SEASON_REASON] = results[-1].transpose(SEASON, Y, X)
    out[SEASON_REASON].attrs = dict(REASON_ATTRS)
    return out
