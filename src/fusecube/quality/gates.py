"""Quality gates: screens that run before and after stages and report what they found.

Input gates (:func:`input_gates`, run once on the whole, possibly lazy, cube in one pass over
the data): time axis monotonic, regular, consistent with its periods and in the expected
years; non-finite values and nodata sentinels; NDVI and backscatter ranges; constant and
all-zero periods; per-period valid fraction of S1 and S2 and the longest S2 gap; S1/S2 grid
alignment; paddy coverage. Stage gates (:func:`stage_gates`, run on each block after
gap-fill, smoothing and phenology): NDVI in range, gap-filled series complete, season
lengths positive and plausible, season dates ordered and inside the series. For sources that
load S1 and S2 separately, :func:`grids_gate` checks that they share one grid.

Every gate gives a :class:`GateResult`. In strict mode the first failing gate raises
:class:`~fusecube.errors.GateFailed` naming the gate, the periods/pixels and the fix; by
default what is bad is masked (set to NaN), the run continues and the result is reported.

This module is the public face of :mod:`fusecube.quality`; the gates live in
``results`` (types), ``time_axis``, ``stats`` (the one data pass), ``alignment``,
``input_gates``, ``stage_gates`` and ``report``.
"""

from fusecube.quality.alignment import alignment_gate, coverage_gate, grids_gate, shift_correlation
from fusecube.quality.input_gates import apply_screen, input_gates, screen_periods
from fusecube.quality.report import QualityReport, quality_report
from fusecube.quality.results import (
    SENTINEL_ERA_START,
    VALUE_METRICS,
    GateResult,
    GateStatus,
    GateThresholds,
    MaskArg,
    PeriodScreen,
    Stage,
    stage_results,
    thresholds_for,
)
from fusecube.quality.stage_gates import stage_gates
from fusecube.quality.stats import COMPOSITE_EDGE, composite_step, variable_stats
from fusecube.quality.time_axis import period_days_of, time_gates

__all__ = [
    "COMPOSITE_EDGE", "SENTINEL_ERA_START", "VALUE_METRICS", "GateResult", "GateStatus",
    "GateThresholds", "MaskArg", "PeriodScreen", "QualityReport", "Stage", "alignment_gate",
    "apply_screen", "composite_step", "coverage_gate", "grids_gate", "input_gates",
    "period_days_of", "quality_report", "screen_periods", "shift_correlation", "stage_gates",
    "stage_results", "thresholds_for", "time_gates", "variable_stats",
]
