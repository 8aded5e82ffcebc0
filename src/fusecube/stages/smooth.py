"""Smoothing stage: weighted Whittaker over time, vectorised over all pixels of a block."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import xarray as xr

from fusecube.cube import CF_ATTRS, DIMS, NDVI, NDVI_FUSED, NDVI_QUALITY, NDVI_SMOOTH, TIME
from fusecube.errors import ConfigError, CubeSchemaError
from fusecube.grid.periods import to_days
from fusecube.kernels.whittaker import upper_envelope, whittaker
from fusecube.kernels.whittaker_lambda import DEFAULT_LAMBDAS, whittaker_gcv, whittaker_vcurve

log = logging.getLogger(__name__)

LambdaMethod = Literal["fixed", "gcv", "vcurve"]


@dataclass(frozen=True)
class SmoothConfig:
    """Options of the Whittaker smoothing stage."""

    lam: float = 1.0
    """Smoothing strength (second differences, scaled to the mean sample spacing). 1.0 keeps
    the 95-130 day rice seasons of a 12-day series sharp (SOS/EOS within ~3-5 days of truth
    on gap-free input); larger values flatten the peaks of 3-season pixels."""
    method: LambdaMethod = "fixed"
    """``fixed`` uses ``lam``; ``gcv`` / ``vcurve`` choose it per pixel from ``lambdas``."""
    gap_weight: float = 0.3
    """Weight of gap-filled values relative to a clear observation."""
    envelope_iterations: int = 0
    """Upper-envelope iterations (clouds and haze only bias NDVI downward); 0 disables.
    Only real observations are down-weighted, never gap-filled values. Off by default: with
    quality weights and screened periods it made SOS/EOS worse on the synthetic scene."""
    envelope_low_weight: float = 0.3
    """Weight factor of an observation that lies below the curve, per iteration."""
    lambdas: tuple[float, ...] = field(default_factory=lambda: tuple(DEFAULT_LAMBDAS))
    """Candidate smoothing strengths for ``gcv`` and ``vcurve``."""
    chunk_pixels: int = 16384
    """Pixels per vectorised solve (cache-friendly batches)."""

    def __post_init__(self) -> None:
        if self.method not in ("fixed", "gcv", "vcurve"):
            raise ConfigError(
                f"Unknown smoothing method {self.method!r}; use fixed, gcv or vcurve.")
        if not self.lam > 0:
            raise ConfigError(f"Smoothing strength lam must be > 0; got {self.lam}.")
        if not 0 <= self.gap_weight <= 1:
            raise ConfigError(f"gap_weight must be within [0, 1]; got {self.gap_weight}.")
        if self.envelope_iterations < 0:
            raise ConfigError("envelope_iterations must be >= 0.")
        if self.chunk_pixels < 1:
            raise ConfigError("chunk_pixels must be >= 1.")


def _pixel_batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def smooth_array(values: np.ndarray, weights: np.ndarray, times_days: np.ndarray,
                 config: SmoothConfig, observed: np.ndarray | None = None) -> np.ndarray:
    """Smooth ``(N, T)`` series with weights; returns float32 ``(N, T)`` within [-1, 1].

    Args:
        values: ``(N, T)`` series (NaN where missing).
        weights: ``(N, T)`` observation weights.
        times_days: ``(T,)`` sample times in days.
        config: Smoothing options.
        observed: Optional ``(N, T)`` mask of real observations: the only values the upper
            envelope may down-weight (default: every finite value).
    """
    out = np.empty(values.shape, dtype=np.float32)
    for sl in _pixel_batches(values.shape[0], config.chunk_pixels):
        v, w = values[sl], weights[sl]
        lam: float | np.ndarray = config.lam
        if config.method == "gcv":
            out[sl], lam = whittaker_gcv(v, times_days, lambdas=np.asarray(config.lambdas),
                                         weights=w)
        elif config.method == "vcurve":
            out[sl], lam = whittaker_vcurve(v, times_days, lambdas=np.asarray(config.lambdas),
                                            weights=w)
        if config.envelope_iterations > 0:
            out[sl] = upper_envelope(v, times_days, lam=lam, weights=w,
                                     iterations=config.envelope_iterations,
                                     low_weight=config.envelope_low_weight,
                                     adjustable=None if observed is None else observed[sl])
        elif config.method == "fixed":
            out[sl] = whittaker(v, times_days, lam=lam, weights=w)
    # NDVI outside [-1, 1] is impossible: long gaps at the ends of a series make the linear
    # extrapolation of a second-order Whittaker run away
    return np.clip(out, -1.0, 1.0, out=out)


def _smooth_kernel(values: np.ndarray, *others: np.ndarray, names: tuple[str, ...],
                   times_days: np.ndarray, config: SmoothConfig) -> np.ndarray:
    """``(..., T)`` series → smoothed ``(..., T)``: the numpy kernel under :func:`smooth`.

    Pixels are flattened row-major into ``(N, T)`` and weighted as the stage defines it.
    ``others`` are the observed NDVI and the observation quality, named by ``names``, each
    only when the cube has it.
    """
    shape = values.shape
    flat = values.reshape(-1, shape[-1])
    given = {name: array.reshape(flat.shape) for name, array in zip(names, others, strict=True)}
    observed = np.isfinite(given[NDVI] if NDVI in given else flat)
    quality = given[NDVI_QUALITY] if NDVI_QUALITY in given else np.ones_like(flat)
    weights = np.where(observed, np.nan_to_num(quality, nan=0.0), config.gap_weight)
    return smooth_array(flat, weights, times_days, config, observed=observed).reshape(shape)


def smooth(cube: xr.Dataset, *, config: SmoothConfig = SmoothConfig(),
           variable: str = NDVI_FUSED) -> xr.Dataset:
    """Add ``ndvi_smooth``: Whittaker-smoothed ``variable`` with observation-quality weights.

    Observed values weigh their ``ndvi_quality`` (1 when absent); values that were gap-filled
    weigh ``config.gap_weight``. Missing values (NaN) weigh 0 and are filled by the smoother.
    On a dask-backed cube the result stays lazy (one task per spatial chunk, all time steps).

    Args:
        cube: Cube with ``variable`` and ``ndvi`` (observations) on ``(time, y, x)``.
        config: Smoothing options.
        variable: The gap-filled NDVI to smooth (falls back to ``ndvi`` when absent).

    Returns:
        The cube with ``ndvi_smooth`` added.
    """
    source = variable if variable in cube else NDVI
    if source not in cube:
        raise CubeSchemaError(
            f"smooth() needs {variable!r} or {NDVI!r} in the cube; "
            f"it has {sorted(cube.data_vars)}.")
    if source != variable:
        log.info("smooth: %r not in the cube, smoothing %r", variable, source)
    # observations (when smoothing a gap-fill) and their quality, where the cube has them
    names = tuple(n for n in (NDVI, NDVI_QUALITY) if n in cube and n != source)
    inputs = [cube[name].transpose(*DIMS) for name in (source, *names)]
    if inputs[0].chunks:  # a task holds whole series: chunked in space only
        inputs = [var.chunk({TIME: -1}) for var in inputs]
    smoothed = xr.apply_ufunc(
        _smooth_kernel, *inputs,
        input_core_dims=[[TIME]] * len(inputs), output_core_dims=[[TIME]],
        kwargs={"names": names, "times_days": to_days(cube[TIME].values), "config": config},
        dask="parallelized", output_dtypes=[np.float32])
    out = cube.copy()
    attrs = {**CF_ATTRS[NDVI_SMOOTH], "whittaker_method": config.method,
             "whittaker_lambda": config.lam if config.method == "fixed" else "per pixel"}
    out[NDVI_SMOOTH] = (DIMS, smoothed.transpose(*DIMS).data, attrs)
    return out
