"""Honest validation of gap-fill: spatial block split with a buffer, held-out dates, scores.

Pixels are split by square spatial blocks: validation blocks are never trained on, and
training pixels keep a buffer away from them (neighbouring pixels of one field are nearly
copies of each other, so without a buffer a "held-out" pixel is not held out). Whole dates
are also held out: their observations are used neither as inputs nor as targets in training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from fusecube.evaluate.accuracy import WET_MONTHS, ErrorSums
from fusecube.fusion.baselines import fill_array


@dataclass(frozen=True)
class SpatialSplit:
    """Train/validation split of a grid by square blocks.

    Attributes:
        block: Block edge in pixels.
        val_fraction: Share of blocks held out for validation.
        buffer: Pixels around validation blocks excluded from training.
        seed: Random seed of the block draw.
    """

    block: int = 48
    val_fraction: float = 0.25
    buffer: int = 8
    seed: int = 0

    def val_blocks(self, shape: tuple[int, int]) -> np.ndarray:
        """``(Y, X)`` bool: pixels in validation blocks.

        With two blocks or more, at least one is held out and one is kept for training; a grid
        of a single block has no validation block.
        """
        ny, nx = shape
        nby, nbx = -(-ny // self.block), -(-nx // self.block)
        rng = np.random.default_rng([self.seed, 7])
        draw = rng.random((nby, nbx))
        is_val = (draw < self.val_fraction) & (nby * nbx > 1)
        if nby * nbx > 1:
            if not is_val.any():
                is_val.flat[np.argmin(draw)] = True
            if is_val.all():
                is_val.flat[np.argmax(draw)] = False
        blocks = np.repeat(np.repeat(is_val, self.block, axis=0), self.block, axis=1)
        return blocks[:ny, :nx]

    def train_pixels(self, shape: tuple[int, int]) -> np.ndarray:
        """``(Y, X)`` bool: pixels that may be trained on (outside validation blocks + buffer)."""
        val = self.val_blocks(shape)
        near = ndimage.maximum_filter(val, size=2 * self.buffer + 1, mode="constant", cval=False)
        return ~near


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
    near = ndimage.maximum_filter(trained, size=2 * buffer + 1, mode="constant", cval=False)
    return ~near


def wet_season(times: np.ndarray) -> np.ndarray:
    """``(T,)`` bool: time steps in the wet season (November to March)."""
    return np.isin(pd.DatetimeIndex(np.asarray(times)).month, WET_MONTHS)


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
