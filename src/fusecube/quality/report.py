"""The quality report (``quality.json``) of a cube and its mask."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from fusecube.cube import (
    PADDY_MASK,
    TIME,
)
from fusecube.quality.input_gates import input_gates
from fusecube.quality.results import GateResult, GateThresholds, PeriodScreen
from fusecube.storage.atomic import write_text_atomic


# ----------------------------------------------------------------------------- report
@dataclass
class QualityReport:
    """Every gate and its result for one cube (and mask), written as ``quality.json``."""

    cube: str
    """The cube checked (path or description)."""
    strict: bool
    """Whether the gates ran in strict mode."""
    times: list[str]
    """Period dates (ISO days)."""
    screen: PeriodScreen
    """Per-period findings and the input gate results."""
    mask: dict | None = None
    """The mask report (:class:`fusecube.masks.report.MaskReport` as a dict), if a mask was used."""
    stage_results: list[dict] = field(default_factory=list)
    """Results of gates run after stages (when a run recorded them)."""

    @property
    def gates(self) -> list[GateResult]:
        """All gate results, input gates first."""
        return [GateResult(**g) for g in self.screen.gates + self.stage_results]

    @property
    def failed(self) -> list[GateResult]:
        """The failing gates."""
        return [g for g in self.gates if g.status == "fail"]

    def to_dict(self) -> dict:
        """JSON-able dictionary."""
        counts: dict[str, int] = {}
        for g in self.gates:
            counts[g.status] = counts.get(g.status, 0) + 1
        return {"cube": self.cube, "strict": self.strict, "summary": counts,
                "times": self.times, "screen": asdict(self.screen), "mask": self.mask,
                "gates": [g.to_dict() for g in self.gates]}

    def write_json(self, path: str | Path) -> Path:
        """Write ``quality.json`` atomically (temporary name, then rename)."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2, default=str))

    def to_markdown(self) -> str:
        """A markdown table of every gate (for terminals and docs)."""
        lines = ["| gate | stage | status | value | threshold | finding |",
                 "|---|---|---|---|---|---|"]
        for g in self.gates:
            value = "" if g.value is None else f"{g.value:.4g}"
            threshold = "" if g.threshold is None else f"{g.threshold:.4g}"
            finding = g.message + (f" → {g.action}" if g.status == "fail" and g.action else "")
            lines.append(f"| {g.gate} | {g.stage} | {g.status} | {value} | {threshold} | "
                         f"{finding.replace('|', '/')} |")
        return "\n".join(lines)


def quality_report(cube: xr.Dataset, *, mask_spec: str = "cube", source: str = "",
                   thresholds: GateThresholds = GateThresholds(), strict: bool = False,
                   ) -> tuple[QualityReport, dict[str, np.ndarray], xr.DataArray | None]:
    """Resolve the mask and run every input gate on a cube.

    Args:
        cube: The cube.
        mask_spec: ``"cube"``, ``"none"`` or a mask file (see :func:`fusecube.masks.resolve.resolve_mask`).
        source: Name of the cube for the report (e.g. its path).
        thresholds: Gate thresholds.
        strict: Raise :class:`GateFailed` at the first failing gate.

    Returns:
        ``(report, arrays for the diagnostics plots, mask or None)``.
    """
    from fusecube.masks.resolve import mask_with_report

    if source:
        cube = cube.assign_attrs(fusecube_source=source)  # named in decoding errors
    if mask_spec == "cube" and PADDY_MASK not in cube:
        mask_spec = "none"  # a cube without its own mask is checked without one
    mask, mask_report = mask_with_report(mask_spec, cube)
    screen, arrays = input_gates(cube, mask=mask, thresholds=thresholds, strict=strict,
                                 mask_source=mask_spec)
    times = [np.datetime_as_string(t, unit="D") for t in cube[TIME].values]
    report = QualityReport(cube=source, strict=strict, times=times, screen=screen,
                           mask=mask_report.to_dict() if mask is not None else None)
    return report, arrays, mask
