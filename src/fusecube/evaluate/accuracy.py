"""Accuracy against ground truth (synthetic scenes): gap-fill under clouds and season dates.

Streams block by block over the result, cube and truth stores, accumulating sums, so memory
stays flat whatever the scene size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from fusecube.cube import DIMS, NDVI, NDVI_FUSED, NDVI_SMOOTH, PADDY_MASK, TIME, X, Y
from fusecube.grid.periods import cloudy_season, to_days

DATE_KEYS = ("planting", "sos", "pos", "eos", "harvest")


@dataclass
class HiddenSample:
    """A seeded random sample of cloud-hidden paddy NDVI: true, gap-filled and smoothed.

    Drawn while :func:`evaluate` streams the blocks (for the scatter figure); each block
    contributes in proportion to its pixels, up to ``max_points`` in all.
    """

    max_points: int = 50_000
    seed: int = 0
    values: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, share: float, arrays: dict[str, np.ndarray]) -> None:
        """Keep a random ``share`` of the (equal-length) ``arrays``' values, at most all."""
        n = len(next(iter(arrays.values())))
        keep = min(n, int(np.ceil(self.max_points * share)))
        rng = np.random.default_rng([self.seed, sum(len(v) for v in self.values.get("true", []))])
        pick = np.sort(rng.choice(n, size=keep, replace=False)) if keep < n else np.arange(n)
        for name, array in arrays.items():
            self.values.setdefault(name, []).append(np.asarray(array)[pick])

    def arrays(self) -> dict[str, np.ndarray]:
        """The sample as one array per name (empty when nothing was drawn)."""
        return {name: np.concatenate(parts) for name, parts in self.values.items()}


@dataclass
class ErrorSums:
    """Running sums for RMSE, MAE, bias and R²."""

    n: float = 0.0
    se: float = 0.0
    ae: float = 0.0
    err: float = 0.0
    y: float = 0.0
    yy: float = 0.0

    def add(self, pred: np.ndarray, true: np.ndarray) -> None:
        """Add pairs where both are finite."""
        ok = np.isfinite(pred) & np.isfinite(true)
        p, t = pred[ok].astype(np.float64), true[ok].astype(np.float64)
        d = p - t
        self.n += d.size
        self.se += float((d * d).sum())
        self.ae += float(np.abs(d).sum())
        self.err += float(d.sum())
        self.y += float(t.sum())
        self.yy += float((t * t).sum())

    def summary(self) -> dict[str, float]:
        """RMSE, MAE, bias, R² and the number of values."""
        if self.n == 0:
            return {"n": 0, "rmse": float("nan"), "mae": float("nan"), "bias": float("nan"),
                    "r2": float("nan")}
        sst = self.yy - self.y**2 / self.n
        return {"n": int(self.n), "rmse": float(np.sqrt(self.se / self.n)),
                "mae": float(self.ae / self.n), "bias": float(self.err / self.n),
                "r2": float(1 - self.se / sst) if sst > 0 else float("nan")}


@dataclass
class SeasonSums:
    """Matching of detected to true seasons and date errors."""

    true_seasons: int = 0
    detected_seasons: int = 0
    matched: int = 0
    abs_err: dict[str, float] = field(default_factory=lambda: dict.fromkeys(DATE_KEYS, 0.0))
    err: dict[str, float] = field(default_factory=lambda: dict.fromkeys(DATE_KEYS, 0.0))
    n_err: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DATE_KEYS, 0))
    count_pixels: int = 0
    count_correct: int = 0
    count_by_truth: dict[int, list[int]] = field(default_factory=dict)
    impossible: int = 0
    values: int = 0


def match_seasons(true_pos: np.ndarray, det_pos: np.ndarray, tolerance: float) -> np.ndarray:
    """Index of the detected season nearest (by peak) to each true season.

    Returns ``(N, S_true)`` indices into the detected seasons, -1 where none is within
    ``tolerance`` days.
    """
    dist = np.abs(true_pos[:, :, None] - det_pos[:, None, :])
    dist = np.where(np.isfinite(dist), dist, np.inf)
    best = np.argmin(dist, axis=2)
    best_d = np.take_along_axis(dist, best[:, :, None], axis=2)[:, :, 0]
    return np.where(best_d <= tolerance, best, -1)


def _days(var: xr.DataArray) -> np.ndarray:
    values = var.values
    if np.issubdtype(values.dtype, np.datetime64):
        return to_days(values)
    return values.astype(np.float64)


def evaluate(result: xr.Dataset, cube: xr.Dataset, truth: xr.Dataset, *, block: int = 256,
             tolerance: float = 40.0, sample: HiddenSample | None = None) -> dict:
    """Score a run against the truth of a synthetic scene.

    Args:
        result: The run's result store (``ndvi_fused``, ``ndvi_smooth``, seasons).
        cube: The input cube (observed ``ndvi``).
        truth: The truth store (``ndvi_true``, ``cloud``, ``true_*`` seasons).
        block: Block edge in pixels for streaming.
        tolerance: Largest peak-date distance (days) for a detected season to match a true one.
        sample: Filled with a random sample of cloud-hidden paddy values (true, fused,
            smoothed) on the way, for the scatter figure (no second read of the stores).

    Returns:
        Nested dict of metrics: gap-fill on cloud-hidden values (all land, paddy, wet/dry
        season) and phenology on paddy pixels.
    """
    observed_share = cube[NDVI].notnull().mean((Y, X)).values  # one streamed pass
    wet = cloudy_season(cube[TIME].values, observed_share)[:, None, None]
    gap = {key: ErrorSums() for key in (
        "fused_all", "fused_paddy", "smooth_all", "smooth_paddy",
        "fused_paddy_wet", "fused_paddy_dry", "smooth_paddy_wet", "smooth_paddy_dry")}
    seasons = SeasonSums()
    ny, nx = truth.sizes[Y], truth.sizes[X]
    for y0 in range(0, ny, block):
        for x0 in range(0, nx, block):
            sel = {Y: slice(y0, y0 + block), X: slice(x0, x0 + block)}
            r, c, t = result.isel(sel), cube.isel(sel), truth.isel(sel)
            hidden = np.isnan(c[NDVI].transpose(*DIMS).values)
            true_ndvi = t["ndvi_true"].transpose(*DIMS).values
            paddy = (t[PADDY_MASK].values > 0)[None]
            land = (t["land_class"].values > 0)[None]
            drawn = {"true": true_ndvi[hidden & paddy]}
            for name, var in (("fused", NDVI_FUSED), ("smooth", NDVI_SMOOTH)):
                if var not in r:
                    continue
                pred = r[var].transpose(*DIMS).values
                drawn[var] = pred[hidden & paddy]
                gap[f"{name}_all"].add(pred[hidden & land], true_ndvi[hidden & land])
                gap[f"{name}_paddy"].add(pred[hidden & paddy], true_ndvi[hidden & paddy])
                gap[f"{name}_paddy_wet"].add(pred[hidden & paddy & wet], true_ndvi[hidden & paddy & wet])
                gap[f"{name}_paddy_dry"].add(pred[hidden & paddy & ~wet], true_ndvi[hidden & paddy & ~wet])
            if sample is not None and drawn["true"].size:
                sample.add(hidden[0].size / (ny * nx), drawn)
            if "pos" in r:
                _score_seasons(seasons, r, t, tolerance)
    out = {"gapfill_hidden": {k: v.summary() for k, v in gap.items()}}
    if seasons.count_pixels:
        out["phenology"] = {
            "paddy_pixels": seasons.count_pixels,
            "season_count_accuracy": seasons.count_correct / seasons.count_pixels,
            "season_count_accuracy_by_truth": {
                str(k): v[0] / v[1] for k, v in sorted(seasons.count_by_truth.items()) if v[1]},
            "true_seasons": seasons.true_seasons, "detected_seasons": seasons.detected_seasons,
            "matched_seasons": seasons.matched,
            "detection_rate": seasons.matched / max(seasons.true_seasons, 1),
            "false_season_rate": 1 - seasons.matched / max(seasons.detected_seasons, 1),
            **{f"{k}_mae_days": seasons.abs_err[k] / max(seasons.n_err[k], 1) for k in DATE_KEYS},
            **{f"{k}_bias_days": seasons.err[k] / max(seasons.n_err[k], 1) for k in DATE_KEYS},
            "impossible_value_share": seasons.impossible / max(seasons.values, 1),
        }
    return out


def _score_seasons(sums: SeasonSums, r: xr.Dataset, t: xr.Dataset, tolerance: float) -> None:
    paddy = t[PADDY_MASK].values.reshape(-1) > 0
    if not paddy.any():
        return

    def flat(var: xr.DataArray) -> np.ndarray:
        return _days(var).reshape(var.shape[0], -1).T[paddy]

    true_pos, det_pos = flat(t["true_pos"]), flat(r["pos"])
    match = match_seasons(true_pos, det_pos, tolerance)
    has_true = np.isfinite(true_pos)
    sums.true_seasons += int(has_true.sum())
    sums.detected_seasons += int(np.isfinite(det_pos).sum())
    ok = (match >= 0) & has_true
    sums.matched += int(ok.sum())
    for key in DATE_KEYS:
        true_k = flat(t[f"true_{key}"])
        det_k = np.take_along_axis(flat(r[key]), np.maximum(match, 0), axis=1)
        both = ok & np.isfinite(true_k) & np.isfinite(det_k)
        diff = (det_k - true_k)[both]
        sums.abs_err[key] += float(np.abs(diff).sum())
        sums.err[key] += float(diff.sum())
        sums.n_err[key] += int(diff.size)
    true_count = t["true_season_count"].values.reshape(t["true_season_count"].shape[0], -1).T[paddy]
    det_count = r["season_count"].values.reshape(r["season_count"].shape[0], -1).T[paddy]
    correct = np.all(true_count == np.nan_to_num(det_count, nan=-1), axis=1)
    sums.count_pixels += int(paddy.sum())
    sums.count_correct += int(correct.sum())
    per_pixel_max = np.nanmax(true_count, axis=1).astype(int)
    for k in np.unique(per_pixel_max):
        sel = per_pixel_max == k
        acc = sums.count_by_truth.setdefault(int(k), [0, 0])
        acc[0] += int(correct[sel].sum())
        acc[1] += int(sel.sum())
    peak = r["peak_value"].values.reshape(r["peak_value"].shape[0], -1).T[paddy]
    length = r["length"].values.reshape(r["length"].shape[0], -1).T[paddy]
    finite = np.isfinite(peak)
    sums.values += int(finite.sum())
    sums.impossible += int(((peak > 1) | (peak < -1) | (length <= 0))[finite].sum())
