"""Smoothing stage: weighted Whittaker over time, vectorised over all pixels of a block."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import xarray as xr

from fusecube.cube import CF_ATTRS, DIMS, NDVI, NDVI_FUSED, NDVI_QUALITY, NDVI_SMOOTH, TIME
from fusecube.kernels_whittaker import upper_envelope, whittaker, whittaker_gcv
from fusecube.periods import to_days

LambdaMethod = Literal["fixed", "gcv"]


@dataclass(frozen=True)
class SmoothConfig:
    """Options of the Whittaker smoothing stage."""

    lam: float = 2.0
    """Smoothing strength (second differences, scaled to the mean sample spacing)."""
    method: LambdaMethod = "fixed"
    """``fixed`` uses ``lam``; ``gcv`` chooses it per pixel by generalised cross-validation."""
    gap_weight: float = 0.3
    """Weight of gap-filled values relative to a clear observation."""
    envelope_iterations: int = 1
    """Upper-envelope iterations (clouds and haze only bias NDVI downward); 0 disables."""
    chunk_pixels: int = 32768
    """Pixels per vectorised solve (cache-friendly batches)."""


def _pixel_batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def smooth_array(values: np.ndarray, weights: np.ndarray, times_days: np.ndarray,
                 config: SmoothConfig) -> np.ndarray:
    """Smooth ``(N, T)`` series with weights; returns float32 ``(N, T)``."""
    out = np.empty(values.shape, dtype=np.float32)
    for sl in _pixel_batches(values.shape[0], config.chunk_pixels):
        v, w = values[sl], weights[sl]
        if config.method == "gcv":
            out[sl], _ = whittaker_gcv(v, times_days, weights=w)
        elif config.envelope_iterations > 0:
            out[sl] = upper_envelope(v, times_days, lam=config.lam, weights=w,
                                     iterations=config.envelope_iterations)
        else:
            out[sl] = whittaker(v, times_days, lam=config.lam, weights=w)
    return out


def smooth(cube: xr.Dataset, *, config: SmoothConfig = SmoothConfig(),
           variable: str = NDVI_FUSED) -> xr.Dataset:
    """Add ``ndvi_smooth``: Whittaker-smoothed ``variable`` with observation-quality weights.

    Observed values weigh their ``ndvi_quality`` (1 when absent); values that were gap-filled
    weigh ``config.gap_weight``.

    Args:
        cube: Cube with ``variable`` and ``ndvi`` (observations) on ``(time, y, x)``.
        config: Smoothing options.
        variable: The gap-filled NDVI to smooth (falls back to ``ndvi`` when absent).

    Returns:
        The cube with ``ndvi_smooth`` added.
    """
    source = variable if variable in cube else NDVI
    values = cube[source].transpose(*DIMS).values
    t, ny, nx = values.shape
    flat = values.reshape(t, -1).T
    observed = np.isfinite(cube[NDVI].transpose(*DIMS).values.reshape(t, -1).T)
    quality = (cube[NDVI_QUALITY].transpose(*DIMS).values.reshape(t, -1).T
               if NDVI_QUALITY in cube else np.ones_like(flat))
    weights = np.where(observed, np.nan_to_num(quality, nan=0.0), config.gap_weight)
    smoothed = smooth_array(flat, weights, to_days(cube[TIME].values), config)
    out = cube.copy()
    out[NDVI_SMOOTH] = (DIMS, smoothed.T.reshape(t, ny, nx), CF_ATTRS[NDVI_SMOOTH])
    return out
