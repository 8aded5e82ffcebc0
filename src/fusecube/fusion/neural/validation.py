"""Honest validation of gap-fill: which pixels a model never saw, scores, baselines.

Pixels are split by square spatial blocks with a buffer (:class:`fusecube.splits.SpatialSplit`)
and whole dates are held out (:func:`fusecube.splits.hold_out_dates`); this module finds the
pixels far from anything a model trained on and scores predictions per group.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fusecube.evaluate.accuracy import ErrorSums
from fusecube.fusion.baselines import fill_array
from fusecube.grid.periods import cloudy_season
from fusecube.splits import SpatialSplit, buffer_zone


def trained_pixels(shape: tuple[int, int], windows: list[list[int]],
                   split: SpatialSplit) -> np.ndarray:
    """``(Y, X)`` bool: pixels a model may have trained on.

    That is its sample windows minus the validation blocks and their buffer.
    """
    eligible = split.train_pixels(shape)
    trained = np.zeros(shape, bool)
    for y0, y1, x0, x1 in windows:
        trained[y0:y1, x0:x1] = eligible[y0:y1, x0:x1]
    return trained


def holdout_pixels(trained: np.ndarray, buffer: int) -> np.ndarray:
    """``(Y, X)`` bool: pixels farther than ``buffer`` from any pixel that was trained on."""
    return ~buffer_zone(trained, buffer)


def wet_season(times: np.ndarray, ndvi: np.ndarray) -> np.ndarray:
    """``(T,)`` bool: dates in the scene's cloudy months (its wet season), from ``ndvi`` ``(N, T)``.

    See :func:`fusecube.grid.periods.cloudy_season`: derived from how often each month is
    observed, not fixed to Demak's November to March.
    """
    return cloudy_season(times, np.isfinite(ndvi).mean(axis=0))


def score_groups(pred: np.ndarray, target: np.ndarray, *, wet: np.ndarray,
                 paddy: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """RMSE, MAE, bias and R² of ``pred`` vs ``target`` ``(N, T)`` per group.

    Only finite targets count. Groups: all, wet, dry and, with a paddy mask ``(N,)``,
    paddy / non-paddy and paddy in the wet and the dry season.
    """
    groups: dict[str, np.ndarray] = {"all": np.ones(target.shape, bool),
                                     "wet": np.broadcast_to(wet[None], target.shape),
                                     "dry": np.broadcast_to(~wet[None], target.shape)}
    if paddy is not None:
        p = np.broadcast_to(paddy[:, None], target.shape)
        groups.update(paddy=p, non_paddy=~p, paddy_wet=p & groups["wet"],
                      paddy_dry=p & groups["dry"])
    out = {}
    for name, sel in groups.items():
        sums = ErrorSums()
        sums.add(pred[sel], target[sel])
        out[name] = sums.summary()
    return out


def baseline_fills(ndvi: np.ndarray, times_days: np.ndarray, lam: float = 2.0) -> dict[str, np.ndarray]:
    """Linear and Whittaker-only gap-fills of ``(N, T)`` inputs (the baselines always reported)."""
    return {"linear": fill_array(ndvi, times_days, "linear"),
            "whittaker": fill_array(ndvi, times_days, "whittaker", lam=lam)}


def compare(predictions: Mapping[str, np.ndarray], target: np.ndarray, *, wet: np.ndarray,
            paddy: np.ndarray | None = None) -> dict[str, dict]:
    """:func:`score_groups` for each named prediction (fusion and baselines, same targets)."""
    return {name: score_groups(pred, target, wet=wet, paddy=paddy)
            for name, pred in predictions.items()}
