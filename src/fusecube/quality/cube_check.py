"""Checking a cube on disk before a run: read it, crop it to an AOI, run the gates, summarise.

What ``fusecube check`` does; the gates themselves are in :mod:`fusecube.quality.gates`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from fusecube.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from fusecube.quality.gates import QualityReport


def year_range(text: str | None) -> tuple[int, int] | None:
    """``"2023:2025"`` (or ``"2024"``) → ``(2023, 2025)``; None stays None.

    Raises:
        ConfigError: Not ``FIRST:LAST`` years, or the first after the last.
    """
    if text is None:
        return None
    try:
        first, _, last = text.partition(":")
        years = (int(first), int(last or first))
    except ValueError as exc:
        raise ConfigError(f"--years {text!r} must look like FIRST:LAST, e.g. 2023:2025.") from exc
    if years[0] > years[1]:
        raise ConfigError(f"--years {text!r}: the first year is after the last; use e.g. "
                          f"{years[1]}:{years[0]}.")
    return years


@dataclass
class CubeCheck:
    """The gate report of a cube, with what its diagnostics figures need."""

    report: QualityReport
    arrays: dict[str, np.ndarray]
    mask: xr.DataArray | None
    cube: xr.Dataset | None = None
    """The (cropped) cube the gates judged."""

    def summary_lines(self) -> list[str]:
        """The report as markdown, the mask's extent, and the count of failed gates."""
        report = self.report
        lines = [report.to_markdown()]
        if report.mask:
            m = report.mask
            lines.append(f"mask {m['source']}: {m['pixels']} pixels, {m['km2']:.2f} km², "
                         f"{m['percent_of_aoi']:.2f} % of the area of interest"
                         + (f" ({'; '.join(m['notes'])})" if m.get("notes") else ""))
        failed = report.failed
        lines.append(f"{len(report.gates)} gates, {len(failed)} failed"
                     + (f" ({', '.join(g.gate for g in failed)}): a run masks what they found "
                        "and continues; --strict stops at the first." if failed else "."))
        return lines

    def raise_if_run_refuses(self) -> None:
        """Raise the error a run would stop with at input, if the gates found its cause.

        A run refuses ±inf and nodata sentinels (:func:`fusecube.cube.validate_cube`) where the
        report only counts them (``*_finite`` gates); the values are read once more, and only
        then, to raise the run's own message.

        Raises:
            CubeSchemaError: A variable holds ±inf or a nodata sentinel.
        """
        from fusecube.cube import validate_cube

        if self.cube is not None and any(g.gate.endswith("_finite") for g in self.report.failed):
            validate_cube(self.cube)

    def write_diagnostics(self, out_dir: Path) -> dict[str, Path]:
        """Write quality.json, quality.md, quality.html and the figures into ``out_dir``."""
        from fusecube.quality.diagnostics import write_diagnostics

        return write_diagnostics(self.report, self.arrays, self.mask, out_dir)


def check_cube(cube: Path, *, mask: str = "cube", strict: bool = False, years: str | None = None,
               aoi: str | None = None) -> CubeCheck:
    """Run every quality gate on the cube store ``cube`` (and its mask).

    Args:
        cube: Cube zarr store.
        mask: ``"cube"``, ``"none"`` or a vector/raster mask file.
        strict: Stop at the first failing gate (raises :class:`~fusecube.errors.GateFailed`).
        years: Expected years ``FIRST:LAST`` of the series (default: the Sentinel era).
        aoi: Check only this area: bbox ``minx,miny,maxx,maxy`` (lon/lat) or a vector file.

    Raises:
        CubeSchemaError: The cube breaks the schema a run refuses at input
            (:func:`fusecube.cube.check_schema`: dtype, dims, time axis, Sentinel era, CRS),
            with the run's message.
        GateFailed: With ``strict``, the first failing gate.
    """
    from fusecube.cube import check_schema, read_cube
    from fusecube.grid.crop import crop_to_aoi
    from fusecube.quality.gates import GateThresholds, quality_report

    thresholds = GateThresholds(expected_years=year_range(years))
    ds = check_schema(read_cube(cube, chunks={}), source=cube)  # the run's own schema check
    if aoi is not None:
        ds = crop_to_aoi(ds, aoi)
        ds.encoding["source"] = str(cube)  # the store, named in messages
    return CubeCheck(*quality_report(ds, mask_spec=mask, source=str(cube), thresholds=thresholds,
                                     strict=strict), cube=ds)
