"""The stages chained on one block: screen → gap-fill → smooth → phenology, gated after each.

Every stage is a pure ``Dataset -> Dataset`` function; this module only chains them and
times them. The runner decides how blocks are cut, read and written.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field, replace

import xarray as xr

from fusecube.config import RunConfig
from fusecube.cube import NDVI, NDVI_FUSED, NDVI_SMOOTH, PADDY_MASK, TIME
from fusecube.errors import ConfigError
from fusecube.kernels.seasons import SeasonRules
from fusecube.quality.gates import (
    GateThresholds,
    PeriodScreen,
    apply_screen,
    period_days_of,
    stage_gates,
    thresholds_for,
)
from fusecube.stages.gapfill import GapfillConfig, gapfill
from fusecube.stages.phenology import PhenologyConfig, phenology
from fusecube.stages.provenance import provenance
from fusecube.stages.season_extras import SeasonExtrasConfig, season_extras
from fusecube.stages.smooth import SmoothConfig, smooth

BLOCK_STAGES = ("screen", "gapfill", "smooth", "phenology")
"""The stages every block runs through, in order."""


@dataclass
class StageTimer:
    """Seconds spent per stage, summed over blocks."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def time(self, stage: str, func, *args, **kwargs):
        """Run ``func`` and add its wall time to ``stage``."""
        start = time.perf_counter()
        result = func(*args, **kwargs)
        self.seconds[stage] += time.perf_counter() - start
        return result


def smooth_config(config: RunConfig) -> SmoothConfig:
    """The smoothing stage options of a run."""
    s = config.smooth
    gap_weight = s.gap_weight
    if gap_weight is None:  # measured on the synthetic truth: radar-backed values earn full weight
        # (ridge, 192x192 seed 7: SOS MAE 3.5 d at weight 1.0 against 4.2 d at 0.3)
        gap_weight = 1.0 if config.gapfill in ("fusion", "ridge") else 0.3
    return SmoothConfig(lam=s.lam, method=s.method, gap_weight=gap_weight,
                        envelope_iterations=s.envelope_iterations)


def phenology_config(config: RunConfig) -> PhenologyConfig:
    """The phenology stage options of a run."""
    p = config.phenology
    rules = SeasonRules(min_amplitude=p.min_amplitude, sos_fraction=p.sos_fraction,
                        eos_fraction=p.eos_fraction, min_length=p.min_length,
                        max_length=p.max_length, method=p.method)
    return PhenologyConfig(rules=rules, seasons_per_year=p.seasons_per_year,
                           year_start_month=p.year_start_month, paddy_only=p.paddy_only)


def gapfill_config(config: RunConfig) -> GapfillConfig:
    """The gap-fill stage options of a run (the whittaker baseline uses the run's ``lam``).

    Raises:
        ConfigError: ``gapfill: auto`` not yet resolved (the runner's ``validate`` step
            replaces it with the chosen method, :mod:`fusecube.runner.gapfill_choice`).
    """
    if config.gapfill == "auto":
        raise ConfigError("gapfill 'auto' is resolved by a run's validation step; to process "
                          "blocks yourself, give a method (linear, whittaker, ridge, fusion) or "
                          "use fusecube.runner.gapfill_choice.choose_gapfill first.")
    return GapfillConfig(method=config.gapfill, lam=config.smooth.lam,
                         linear_below=config.gapfill_linear_below)


def process_block(block: xr.Dataset, config: RunConfig, screen: PeriodScreen,
                  timer: StageTimer | None = None, model=None, *,
                  thresholds: GateThresholds | None = None,
                  sigma=None) -> tuple[xr.Dataset, xr.Dataset]:
    """Run all stages on one in-memory block.

    Args:
        block: The block's window of the screened cube, with the run's ``paddy_mask``.
        config: The run configuration (stage options, strictness).
        screen: The run's period screen (:attr:`fusecube.runner.inputs.RunInputs.screen`).
        timer: Adds each stage's seconds here.
        model: The fusion model, or None.
        thresholds: The run's gate thresholds (default: those of ``config``).
        sigma: The run's σ calibration (:class:`~fusecube.evaluate.uncertainty.SigmaModel`)
            for ``ndvi_sigma`` (with ``config.provenance``; None leaves σ NaN).

    Returns:
        ``(series, seasons)``: the gap-filled and smoothed NDVI ``(time, y, x)`` (with
        ``ndvi_source`` and ``ndvi_sigma``) and the phenology ``(season|year, y, x)`` (with
        ``<date>_pm_days`` and ``season_reason``).
    """
    timer = timer or StageTimer()
    if config.strict:  # the input gates ran on the whole cube: stop before any work
        screen.raise_first_failure()
    thresholds = thresholds_for(config) if thresholds is None else thresholds
    gate = {"thresholds": thresholds, "strict": config.strict, "screen": screen}
    raw_ndvi = block[NDVI] if config.provenance and NDVI in block else None
    block = timer.time("screen", apply_screen, block, screen)
    block = timer.time("gapfill", gapfill, block, config=gapfill_config(config), model=model)
    block, _ = timer.time("gates", stage_gates, "gapfill", block, **gate)
    block = timer.time("smooth", smooth, block, config=smooth_config(config))
    block, _ = timer.time("gates", stage_gates, "smooth", block, **gate)
    layers = []
    if raw_ndvi is not None:  # where each value comes from and how sure it is (issue 22)
        extra = timer.time("provenance", provenance, block, raw_ndvi=raw_ndvi,
                           method=config.gapfill, sigma=sigma)
        block, layers = block.assign(extra.data_vars), list(extra.data_vars)
    pheno = phenology_config(config)
    if layers:  # count the seasons the rules reject: their reason code
        pheno = replace(pheno, explain=True)
    seasons = timer.time("phenology", phenology, block, config=pheno)
    seasons, _ = timer.time("gates", stage_gates, "phenology", seasons, **gate,
                            times=block[TIME].values, period_days=period_days_of(block))
    if layers:
        seasons = timer.time("season_extras", season_extras, block, seasons, config=pheno,
                             extras=SeasonExtrasConfig(lam=smooth_config(config).lam))
    series = block[[NDVI_FUSED, NDVI_SMOOTH, *layers]]
    if PADDY_MASK in block:
        seasons[PADDY_MASK] = block[PADDY_MASK]
    return series, seasons
