"""Calibrated uncertainty of gap-filled NDVI: σ from the run's own held-out residuals.

The validation of the gap-fill choice (:mod:`fusecube.evaluate.selection`) hides observed NDVI
the way real gaps fall (whole dates, cloud-like runs) and refills it. Here the method the run
uses is refilled the same way and every hidden value's residual is kept with its distance
(days) to the nearest value still shown. σ is fitted per distance bin as a split-conformal
quantile: ``σ = q95(|residual|) / 1.96``, so ±1.96 σ holds 95 % of the held-out residuals of
its bin (per stratum, paddy and other, where a bin holds enough values of each). σ never
decreases with the distance. Observed values get the observation noise: the robust spread
(1.4826·MAD) of observations around a Whittaker fit of the same windows.

The residuals are against *hidden observations*, so σ describes how far a clear-sky
observation would be from the filled value (sensor noise included), the only truth a real
scene has.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import xarray as xr

from fusecube.cube import DIMS, NDVI, NDVI_FUSED, TIME, VH, VV, X, Y
from fusecube.evaluate.selection import (
    SelectionConfig,
    held_out_dates,
    span_mask,
    validation_windows,
)
from fusecube.fusion.baselines import gapfill as baseline_gapfill
from fusecube.fusion.ridge.model import RidgeConfig, fuse_ridge
from fusecube.grid.periods import to_days
from fusecube.kernels.gaps import days_to_observation
from fusecube.kernels.whittaker import whittaker

Z95 = 1.959964
"""Half-width of the central 95 % of a standard normal."""


@dataclass
class HeldOut:
    """Residuals of hidden values refilled by one method, with what σ is fitted on."""

    distance: np.ndarray
    """Days from each hidden value to the nearest value still shown."""
    residual: np.ndarray
    """Filled minus hidden observation."""
    paddy: np.ndarray | None
    """Whether each value lies on a paddy pixel (None without a mask)."""
    noise: float
    """Observation noise of the windows (σ of an observed value)."""


@dataclass(frozen=True)
class SigmaModel:
    """σ of a gap-filled value as a function of its distance to the nearest observation."""

    method: str
    """The gap-fill method the residuals come from."""
    edges: tuple[float, ...]
    """Upper edge (days, inclusive) of each distance bin; beyond the last, the last bin."""
    sigma: dict[str, tuple[float, ...]]
    """σ per bin: ``all`` always, ``paddy`` / ``other`` where the strata were fitted."""
    count: dict[str, tuple[int, ...]]
    """Held-out values per bin and stratum."""
    noise: float
    """σ of an observed value (observation noise)."""
    level: float = 0.95

    def bins(self, distance: np.ndarray) -> np.ndarray:
        """Bin index of each distance (days)."""
        return np.minimum(np.searchsorted(np.asarray(self.edges), distance, side="left"),
                          len(self.edges) - 1)

    def sigma_of(self, distance: np.ndarray, paddy: np.ndarray | None = None) -> np.ndarray:
        """σ (float32) of values at ``distance`` days from an observation (0: observed).

        Args:
            distance: Days to the nearest observation, any shape; 0 means observed.
            paddy: Bool of the same shape (broadcastable), when the strata were fitted.
        """
        distance = np.asarray(distance)
        index = self.bins(distance)
        sigma = np.asarray(self.sigma["all"], np.float32)[index]
        if paddy is not None and "paddy" in self.sigma:
            paddy = np.broadcast_to(paddy, distance.shape)
            by_stratum = np.where(paddy, np.asarray(self.sigma["paddy"], np.float32)[index],
                                  np.asarray(self.sigma["other"], np.float32)[index])
            sigma = by_stratum
        return np.where(distance > 0, sigma, np.float32(self.noise)).astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-able dictionary (also the ``calibration`` attribute of ``ndvi_sigma``)."""
        return asdict(self)

    def to_json(self) -> str:
        """One-line JSON of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), separators=(",", ":"))


def _fill(method: str, shown: xr.Dataset, *, lam: float, ridge: RidgeConfig, model,
          linear_below: int) -> np.ndarray:
    if method == "ridge":
        filled = fuse_ridge(shown, config=ridge)
    elif method == "fusion":
        filled = model.predict(shown)
    else:
        filled = baseline_gapfill(shown, method=method, lam=lam, linear_below=linear_below)
    return np.asarray(filled[NDVI_FUSED].transpose(*DIMS).values, np.float64)


def observation_noise(ndvi: np.ndarray, days: np.ndarray, lam: float) -> float:
    """Robust σ (1.4826·MAD) of ``(T, ...)`` observations around their Whittaker fit."""
    flat = ndvi.reshape(ndvi.shape[0], -1).T
    fit = whittaker(flat, days, lam=lam)
    residual = (flat - fit)[np.isfinite(flat) & np.isfinite(fit)]
    if residual.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(residual - np.median(residual))))


def held_out_residuals(cube: xr.Dataset, method: str, *, mask: xr.DataArray | None = None,
                       lam: float = 2.0, ridge: RidgeConfig | None = None, model=None,
                       linear_below: int = 0, config: SelectionConfig | None = None) -> HeldOut:
    """Hide observed NDVI as the gap-fill validation does, refill with ``method``, keep residuals.

    Args:
        cube: The screened input cube (lazy is fine: only the validation windows are read).
        method: ``linear``, ``whittaker``, ``ridge`` or ``fusion`` (needs ``model``).
        mask: The run's paddy mask (per-stratum σ).
        lam: Whittaker λ (the ``whittaker`` baseline and the observation-noise fit).
        ridge: Ridge options.
        model: The neural model for ``fusion``.
        linear_below: The whittaker baseline's linear fill of short gaps (the run's).
        config: Windows, shares and seed of the hiding (another seed: another split).

    Returns:
        The residuals, their distances and strata, and the observation noise.
    """
    config = config or SelectionConfig()
    ridge = ridge or RidgeConfig()
    rng = np.random.default_rng([config.seed, 21])
    days = to_days(cube[TIME].values)
    names = [n for n in (NDVI, VV, VH) if n in cube]
    parts = [cube[names].isel({Y: ys, X: xs}).transpose(TIME, Y, X).load()
             for ys, xs in validation_windows(cube, config)]
    masks = [None if mask is None else np.asarray(mask.isel({Y: ys, X: xs}).values) > 0
             for ys, xs in validation_windows(cube, config)]
    observed_all = np.concatenate([np.isfinite(p[NDVI].values).reshape(p.sizes[TIME], -1)
                                   for p in parts], axis=1)
    distance, residual, paddy, noise = [], [], [], []
    for _ in range(config.repeats):
        held = held_out_dates(observed_all, config.holdout_dates, rng)
        for part, part_mask in zip(parts, masks, strict=True):
            ndvi = np.asarray(part[NDVI].values, np.float64)
            observed = np.isfinite(ndvi)
            hide = observed & (held[:, None, None] | span_mask(
                ndvi.shape, config.span, config.span_share, rng))
            shown = part.copy()
            shown[NDVI] = part[NDVI].where(~xr.DataArray(hide, dims=(TIME, Y, X)))
            pred = _fill(method, shown, lam=lam, ridge=ridge, model=model,
                         linear_below=linear_below)
            scored = hide & np.isfinite(pred)
            shown_obs = (observed & ~hide).reshape(ndvi.shape[0], -1).T
            dist = days_to_observation(shown_obs, days).T.reshape(ndvi.shape)
            distance.append(dist[scored])
            residual.append((pred - ndvi)[scored])
            if part_mask is not None:
                paddy.append(np.broadcast_to(part_mask[None], ndvi.shape)[scored])
    noise = [observation_noise(np.asarray(part[NDVI].values), days, lam) for part in parts]
    return HeldOut(distance=np.concatenate(distance), residual=np.concatenate(residual),
                   paddy=np.concatenate(paddy) if paddy else None,
                   noise=float(np.median(noise)))


def _conformal(abs_residual: np.ndarray, level: float) -> float:
    """Split-conformal quantile of ``|residual|`` (finite-sample corrected), as a σ."""
    n = abs_residual.size
    if n == 0:
        return float("nan")
    rank = min(n, int(np.ceil((n + 1) * level))) - 1
    return float(np.partition(abs_residual, rank)[rank] / Z95)


def distance_bins(distance: np.ndarray, min_count: int) -> tuple[float, ...]:
    """Upper edges of distance bins holding at least ``min_count`` values each.

    The last bin absorbs a remainder smaller than ``min_count``.
    """
    values, counts = np.unique(np.round(distance, 3), return_counts=True)
    edges, running = [], 0
    for value, count in zip(values, counts, strict=True):
        running += count
        if running >= min_count:
            edges.append(float(value))
            running = 0
    if not edges:
        return (float(values[-1]) if values.size else 0.0,)
    if running:  # the remainder joins the last bin
        edges[-1] = float(values[-1])
    return tuple(edges)


def fit_sigma(held: HeldOut, method: str, *, min_count: int = 200,
              level: float = 0.95) -> SigmaModel:
    """σ per distance bin (and stratum where each bin holds ``min_count / 2`` of it).

    Args:
        held: Held-out residuals (:func:`held_out_residuals`).
        method: The gap-fill method they come from.
        min_count: Smallest number of residuals in a bin.
        level: Coverage the ±1.96 σ interval is fitted to.

    Returns:
        The fitted model; σ is made non-decreasing with the distance.
    """
    finite = np.isfinite(held.residual) & np.isfinite(held.distance)
    distance, abs_res = held.distance[finite], np.abs(held.residual[finite])
    paddy = None if held.paddy is None else held.paddy[finite]
    edges = distance_bins(distance, min_count)
    index = np.minimum(np.searchsorted(np.asarray(edges), distance, side="left"), len(edges) - 1)
    groups = {"all": np.ones(distance.size, bool)}
    if paddy is not None and paddy.any() and (~paddy).any():
        groups.update(paddy=paddy, other=~paddy)
    sigma, count = {}, {}
    for name, sel in groups.items():
        per_bin = [abs_res[sel & (index == k)] for k in range(len(edges))]
        count[name] = tuple(int(v.size) for v in per_bin)
        sigma[name] = [_conformal(v, level) for v in per_bin]
    for name in groups:  # a thin stratum bin borrows the pooled σ
        values = [s if c >= min_count // 2 else pooled for s, c, pooled in
                  zip(sigma[name], count[name], sigma["all"], strict=True)]
        sigma[name] = tuple(float(v) for v in np.maximum.accumulate(
            np.nan_to_num(values, nan=0.0)))
    return SigmaModel(method=method, edges=edges, sigma=sigma, count=count,
                      noise=held.noise, level=level)


def coverage(model: SigmaModel, held: HeldOut, z: float = Z95) -> dict:
    """Share of held-out residuals within ±``z`` σ: overall, per distance bin and stratum."""
    finite = np.isfinite(held.residual) & np.isfinite(held.distance)
    distance, residual = held.distance[finite], held.residual[finite]
    paddy = None if held.paddy is None else held.paddy[finite]
    sigma = model.sigma_of(distance, paddy)
    inside = np.abs(residual) <= z * sigma
    index = model.bins(distance)
    out = {"n": int(inside.size), "coverage": float(inside.mean()) if inside.size else None,
           "by_distance": {f"<={edge:g}d": float(inside[index == k].mean())
                           for k, edge in enumerate(model.edges) if (index == k).any()}}
    if paddy is not None:
        out["by_stratum"] = {name: float(inside[sel].mean()) for name, sel in
                             (("paddy", paddy), ("other", ~paddy)) if sel.any()}
    return out


def sigma_for_run(cube: xr.Dataset, method: str, *, mask: xr.DataArray | None = None,
                  lam: float = 2.0, ridge: RidgeConfig | None = None, model=None,
                  linear_below: int = 0, config: SelectionConfig | None = None) -> SigmaModel:
    """The σ model of a run: :func:`held_out_residuals` of its method, then :func:`fit_sigma`.

    One hiding per window by default (``repeats=1``): the windows hold far more held-out
    values than the bins need, and the fit then costs one gap-fill of the windows.
    """
    config = config or SelectionConfig(repeats=1)
    held = held_out_residuals(cube, method, mask=mask, lam=lam, ridge=ridge, model=model,
                              linear_below=linear_below, config=config)
    return fit_sigma(held, method)
