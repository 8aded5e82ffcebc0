"""Gate results, thresholds and the per-period screen every gate fills in."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import xarray as xr

from fusecube.errors import GateFailed
from fusecube.grid.periods import SENTINEL_ERA_START  # noqa: F401  (re-exported)

GateStatus = Literal["pass", "warn", "fail", "skip"]
Stage = Literal["input", "mask", "gapfill", "smooth", "phenology"]
MaskArg = np.ndarray | xr.DataArray | Literal["cube"] | None
VALUE_METRICS = ("base_value", "peak_value")


@dataclass(frozen=True)
class GateThresholds:
    """Thresholds of the quality gates (defaults suit 5-12 day S1/S2 composites of rice areas)."""

    s1_min_valid_fraction: float = 0.9
    """Smallest share of pixels with VV and VH in every period (radar sees through clouds)."""
    s2_min_valid_fraction: float = 0.05
    """Smallest share of (pixel, period) pairs with an NDVI observation over the whole series."""
    s2_empty_fraction: float = 0.01
    """A period with less than this share of NDVI observations counts as empty."""
    s2_max_gap_days: float = 96.0
    """Longest run of empty NDVI periods that gap-filling can bridge (days)."""
    ndvi_range: tuple[float, float] = (-1.0, 1.0)
    """Valid NDVI values."""
    backscatter_range: tuple[float, float] = (0.0, 30.0)
    """Valid linear sigma0 (VV, VH); negative values are usually dB."""
    regular_tolerance_days: float = 1.0
    """Allowed deviation of a time step from the period length (days)."""
    expected_years: tuple[int, int] | None = None
    """First and last calendar year the series must lie in; None: the Sentinel era to today."""
    max_alignment_shift: int = 3
    """Largest S1/S2 pixel shift searched by the alignment gate."""
    alignment_margin: float = 0.01
    """Correlation gain a shifted grid needs over the unshifted one to be called misaligned."""
    alignment_window: int = 128
    """Edge of the central window (pixels) searched by the alignment gate."""
    min_paddy_fraction: float = 0.005
    """Smallest share of the area of interest inside the paddy mask."""
    min_paddy_pixels: int = 10
    """Smallest number of paddy pixels."""
    min_season_days: float = 40.0
    """Shortest plausible season (SOS to EOS, days)."""
    max_season_days: float = 200.0
    """Longest plausible season (SOS to EOS, days)."""
    max_unfilled_fraction: float = 0.01
    """Largest share of (paddy) pixels a gap-fill may leave with missing values."""
    max_paddy_without_season: float = 0.5
    """Largest share of paddy pixels a run's results may leave without any rice season."""


@dataclass
class GateResult:
    """The outcome of one gate."""

    gate: str
    """Gate name, e.g. ``s2_valid_fraction``."""
    stage: str
    """Where it ran: ``input``, ``mask``, ``gapfill``, ``smooth`` or ``phenology``."""
    status: GateStatus
    """``pass``, ``warn`` (reported, harmless), ``fail`` or ``skip`` (not applicable)."""
    value: float | None = None
    """The measured value."""
    threshold: float | None = None
    """The threshold it was compared with."""
    message: str = ""
    """What was found, naming periods and pixels."""
    fix: str = ""
    """What the user can do about a failure."""
    periods: list[int] = field(default_factory=list)
    """Affected period indices (0-based)."""
    pixels: int = 0
    """Number of affected values/pixels."""
    action: str = ""
    """What the default (non-strict) mode did about it."""

    def to_dict(self) -> dict:
        """JSON-able dictionary."""
        return asdict(self)

    def error(self) -> GateFailed:
        """The :class:`GateFailed` raised for this result in strict mode."""
        text = f"Quality gate {self.gate!r} ({self.stage}) failed: {self.message}"
        if self.fix:
            text += f" Fix: {self.fix}"
        value = float("nan") if self.value is None else float(self.value)
        threshold = float("nan") if self.threshold is None else float(self.threshold)
        return GateFailed(self.gate, value, threshold, text)


@dataclass
class PeriodScreen:
    """Per-period findings of :func:`screen_periods`, applied to blocks by :func:`apply_screen`."""

    valid_fraction: list[float] = field(default_factory=list)
    """Share of pixels with an NDVI observation, per period."""
    zero_periods: list[int] = field(default_factory=list)
    """Periods whose observed NDVI is all exactly 0 (a broken composite): treated as missing."""
    empty_periods: list[int] = field(default_factory=list)
    """Periods with no NDVI observation at all (fully clouded)."""
    s1_valid_fraction: list[float] = field(default_factory=list)
    """Share of pixels with both VV and VH, per period."""
    constant_periods: dict[str, list[int]] = field(default_factory=dict)
    """Per variable, periods whose valid values are all equal: treated as missing."""
    masked_values: dict[str, int] = field(default_factory=dict)
    """Per variable, values out of range, infinite or nodata sentinels: set to NaN."""
    gates: list[dict] = field(default_factory=list)
    """Every input gate result (:meth:`GateResult.to_dict`)."""
    stage_counts: dict[str, int] = field(default_factory=dict)
    """Per stage gate (``stage:gate``), values flagged after a stage, summed over the blocks of
    this process."""
    stage_status: dict[str, str] = field(default_factory=dict)
    """Per stage gate, the worst status seen over the blocks (pass < warn < fail)."""
    ranges: dict[str, list[float]] = field(default_factory=dict)
    """Per variable, the valid ``[low, high]`` range used to mask values."""

    def first_failure(self) -> GateResult | None:
        """The first failing input gate, or None."""
        for gate in self.gates:
            if gate["status"] == "fail":
                return GateResult(**gate)
        return None

    def raise_first_failure(self) -> None:
        """Raise :class:`GateFailed` for the first failing input gate (strict mode)."""
        failure = self.first_failure()
        if failure is not None:
            raise failure.error()




def thresholds_for(config) -> GateThresholds:
    """Gate thresholds of a :class:`~fusecube.config.RunConfig` (season lengths from phenology)."""
    return GateThresholds(min_season_days=config.phenology.min_length,
                          max_season_days=config.phenology.max_length)



_SEVERITY = {"skip": 0, "pass": 1, "warn": 2, "fail": 3}


def stage_results(screen: PeriodScreen | dict) -> list[GateResult]:
    """Gate results of the stage gates of a run, from the counts they left in the screen."""
    data = screen.__dict__ if isinstance(screen, PeriodScreen) else screen
    counts, worst = data.get("stage_counts", {}), data.get("stage_status", {})
    out = []
    for key, n_bad in counts.items():
        stage, gate = key.split(":", 1)
        status = worst.get(key, "fail" if n_bad else "pass")
        out.append(GateResult(
            gate, stage, status, value=float(n_bad), threshold=0.0, pixels=int(n_bad),
            message=(f"{n_bad} values, pixels or seasons flagged after {stage} over all blocks"
                     if n_bad else f"every block passed after {stage}."),
            action=("masked (NaN), seasons removed or reported, see the gate table in "
                    "docs/quality.md" if n_bad else "")))
    return out

