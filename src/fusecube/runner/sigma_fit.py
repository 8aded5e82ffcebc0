"""The run's σ calibration: held-out residuals of the gap-fill it uses (issue 22)."""

from __future__ import annotations

import xarray as xr

from fusecube.config import RunConfig
from fusecube.evaluate.uncertainty import SigmaModel, sigma_for_run
from fusecube.runner.inputs import RunInputs
from fusecube.runner.pipeline import gapfill_config


def fit_run_sigma(config: RunConfig, screened: xr.Dataset, inputs: RunInputs,
                  model=None) -> SigmaModel:
    """σ of the run's gap-filled NDVI per distance to the nearest observation.

    Args:
        config: The run configuration, its ``gapfill`` already resolved (not ``auto``).
        screened: The cube after the input screen (lazy; only validation windows are read).
        inputs: The run's inputs (the mask gives per-stratum σ).
        model: The neural model when the run uses ``fusion``.

    Returns:
        The fitted :class:`~fusecube.evaluate.uncertainty.SigmaModel`.
    """
    gap = gapfill_config(config)
    return sigma_for_run(screened, gap.method, mask=inputs.mask, lam=gap.lam, ridge=gap.ridge,
                         model=model, linear_below=gap.linear_below)
