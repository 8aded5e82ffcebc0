"""What one run reads, resolved once: the input cube, its mask, the gate thresholds and the screen.

The runner builds one :class:`RunInputs` before any block runs and hands the same value to
every block (local or on a Dask worker), to the stage gates, the evaluation, the product
writers and the report. Nothing downstream resolves the mask or the thresholds again, so the
coverage gate, the stage gates and the quality report always describe the mask the run used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import xarray as xr

from fusecube.config import RunConfig
from fusecube.grid.geobox import VECTOR_SUFFIXES
from fusecube.masks.resolve import mask_with_report
from fusecube.quality.gates import GateThresholds, PeriodScreen, screen_periods, thresholds_for


@dataclass
class RunInputs:
    """The resolved inputs of one run (picklable: a Dask worker opens ``cube_path`` itself)."""

    cube_path: Path
    """The input cube (zarr)."""
    truth_path: Path | None
    """The synthetic truth next to it, when there is one (enables accuracy scoring)."""
    mask: xr.DataArray | None
    """The run's ``(y, x)`` paddy mask on the cube's grid, or None for ``--mask none``."""
    mask_report: dict | None
    """Where the mask came from and what it covers (:class:`~fusecube.masks.report.MaskReport`)."""
    thresholds: GateThresholds
    """The gate thresholds of the run, for input and stage gates alike."""
    screen: PeriodScreen
    """What the input gates found on the whole cube, with the run's mask and thresholds."""
    strict: bool = False
    """Stop at the first failing gate instead of masking what is bad."""
    blocks: Path | None = None
    """Irrigation-block polygons for the per-block calendar (a vector mask, or the synthetic
    scene's blocks), or None."""
    sigma: object | None = None
    """The σ calibration of the run's gap-fill (:class:`~fusecube.evaluate.uncertainty.SigmaModel`),
    set after the validation step when ``provenance`` is on; None leaves ``ndvi_sigma`` NaN."""


def block_polygons(mask_spec: str, cube_path: Path) -> Path | None:
    """Irrigation-block polygons: a vector mask file, or the blocks written beside a synthetic cube."""
    mask = Path(mask_spec)
    if mask.suffix.lower() in VECTOR_SUFFIXES and mask.exists():
        return mask
    synthetic = Path(cube_path).with_name("blocks.gpkg")
    return synthetic if synthetic.exists() else None


def resolve_mask(config: RunConfig, cube: xr.Dataset) -> tuple[xr.DataArray | None, dict | None]:
    """The run's mask and its report (``--mask cube|auto|none|PATH``), resolved once."""
    mask, report = mask_with_report(config.mask, cube)
    return mask, (report.to_dict() if mask is not None else None)


def screen_inputs(config: RunConfig, cube: xr.Dataset, mask: xr.DataArray | None,
                  ) -> PeriodScreen:
    """The input gates on the whole cube, with the run's mask and thresholds."""
    return screen_periods(cube, mask=mask, thresholds=thresholds_for(config),
                          mask_source=config.mask)


def run_inputs(config: RunConfig, cube_path: Path, truth_path: Path | None,
               mask: xr.DataArray | None, mask_report: dict | None,
               screen: PeriodScreen) -> RunInputs:
    """Bundle what :func:`resolve_mask` and :func:`screen_inputs` resolved for the run."""
    return RunInputs(cube_path=Path(cube_path), truth_path=truth_path, mask=mask,
                     mask_report=mask_report, thresholds=thresholds_for(config), screen=screen,
                     strict=config.strict, blocks=block_polygons(config.mask, cube_path))
