"""Train/validation splits that do not leak: spatial blocks with a buffer, held-out dates.

One implementation for fusion (pixels of a scene), paddy (labelled pixels) and ml (patch
windows over cubes):

- **Blocks**: square blocks of ``block`` pixels over the ``(y, x)`` grid, numbered row-major
  (:func:`block_ids`). All time steps of a location fall in the same block.
- **Draw** (:func:`draw_blocks`), from the caller's seeded generator: ``"share"`` sends the
  first ``round(fraction * n)`` blocks of a random permutation to validation; ``"each"``
  sends every block whose uniform draw is below ``fraction`` (each block independently with
  that probability). Either way at least one block and at most ``n - 1`` when there are two
  or more (the lowest draws decide), none when there is one.
- **Buffer** (:func:`buffer_zone`): training keeps out of every pixel within ``buffer``
  pixels (Chebyshev distance, a square) of validation: neighbouring pixels of one field are
  nearly copies of each other, so without a buffer a "held-out" pixel is not held out.
- **Dates** (:func:`hold_out_dates`): whole dates drawn without replacement, spread evenly
  over pools of candidate dates (e.g. wet and dry season), each pool keeping one date for
  training.

:func:`split_pixels` and :class:`SpatialSplit` split a pixel grid, :func:`spatial_block_split`
splits sample windows (a window belongs to the block holding its centre; training windows
touching the buffer around validation windows are dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from fusecube.errors import PatchError

#: How many blocks :func:`draw_blocks` sends to validation.
BlockCount = Literal["share", "each"]
#: Unit of :func:`spatial_block_split`: spatial blocks within sources, or whole sources.
SplitBy = Literal["block", "source"]


def block_ids(shape: tuple[int, int], block: int) -> np.ndarray:
    """``(y, x)`` int64: row-major index of the ``block`` x ``block`` square holding each pixel."""
    ny, nx = shape
    n_cols = -(-nx // block)
    return (np.arange(ny)[:, None] // block) * n_cols + (np.arange(nx)[None, :] // block)


def draw_blocks(n: int, fraction: float, rng: np.random.Generator, *,
                count: BlockCount = "share") -> np.ndarray:
    """``(n,)`` bool: which of ``n`` candidate blocks go to validation (see the module doc).

    Args:
        n: Number of candidate blocks.
        fraction: Share of blocks (``"share"``) or probability per block (``"each"``).
        rng: Generator to draw from (nothing is drawn for fewer than two blocks).
        count: ``"share"`` (a permutation) or ``"each"`` (one uniform draw per block).

    Returns:
        The validation blocks, between 1 and ``n - 1`` of them when ``n >= 2``.
    """
    chosen = np.zeros(n, dtype=bool)
    if n < 2:
        return chosen
    if count == "share":
        order = rng.permutation(n)
        k = int(round(fraction * n))
    else:
        draw = rng.random(n)
        order = np.argsort(draw, kind="stable")
        k = int(np.count_nonzero(draw < fraction))
    chosen[order[:min(max(k, 1), n - 1)]] = True
    return chosen


def buffer_zone(mask: np.ndarray, buffer: int) -> np.ndarray:
    """``mask`` grown by ``buffer`` pixels in every direction (a square: Chebyshev distance)."""
    if buffer <= 0:
        return np.asarray(mask, dtype=bool).copy()
    return ndimage.maximum_filter(np.asarray(mask, dtype=bool), size=2 * buffer + 1,
                                  mode="constant", cval=False)


def split_pixels(eligible: np.ndarray, *, block: int, fraction: float, buffer: int,
                 rng: np.random.Generator, count: BlockCount = "share",
                 strata: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split the eligible pixels of a grid into training and validation by whole blocks.

    Args:
        eligible: ``(y, x)`` bool: pixels that may be used at all (e.g. labelled ones).
        block: Block edge in pixels.
        fraction: Validation share or probability (see :func:`draw_blocks`).
        buffer: Pixels around validation blocks that training leaves out.
        rng: Generator of the block draw.
        count: How many blocks are drawn (:func:`draw_blocks`).
        strata: Optional ``(y, x)`` bool: blocks holding any such pixel and the other blocks
            are drawn separately, so that both kinds are validated (e.g. paddy / no paddy).
            Should neither stratum yield a block, one is drawn from all candidates.

    Returns:
        ``(train, validate)`` boolean ``(y, x)`` masks.
    """
    ids = block_ids(eligible.shape, block)
    candidates = np.unique(ids[eligible])
    if strata is None:
        groups = [candidates]
    else:
        marked = np.intersect1d(candidates, ids[strata])
        groups = [marked, np.setdiff1d(candidates, marked)]
    chosen = np.concatenate([g[draw_blocks(g.size, fraction, rng, count=count)] for g in groups])
    if chosen.size == 0 and candidates.size > 1:
        chosen = candidates[draw_blocks(candidates.size, fraction, rng, count=count)]
    in_val = np.isin(ids, chosen)
    return eligible & ~buffer_zone(in_val, buffer), eligible & in_val


@dataclass(frozen=True)
class SpatialSplit:
    """Train/validation split of a whole grid by square blocks (each drawn with ``val_fraction``).

    Attributes:
        block: Block edge in pixels.
        val_fraction: Probability of each block to be held out for validation.
        buffer: Pixels around validation blocks excluded from training.
        seed: Random seed of the block draw.
    """

    block: int = 48
    val_fraction: float = 0.25
    buffer: int = 8
    seed: int = 0

    def _split(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        return split_pixels(np.ones(shape, dtype=bool), block=self.block,
                            fraction=self.val_fraction, buffer=self.buffer,
                            rng=np.random.default_rng([self.seed, 7]), count="each")

    def val_blocks(self, shape: tuple[int, int]) -> np.ndarray:
        """``(Y, X)`` bool: pixels in validation blocks.

        With two blocks or more, at least one is held out and one is kept for training; a grid
        of a single block has no validation block.
        """
        return self._split(shape)[1]

    def train_pixels(self, shape: tuple[int, int]) -> np.ndarray:
        """``(Y, X)`` bool: pixels that may be trained on (outside validation blocks + buffer)."""
        return self._split(shape)[0]


# ----------------------------------------------------------------------------- windows
@dataclass(frozen=True)
class Split:
    """Indices of a train/validation split and what was dropped to keep them apart."""

    train: np.ndarray
    """Training sample indices (sorted)."""
    val: np.ndarray
    """Validation sample indices (sorted)."""
    dropped: np.ndarray
    """Training candidates dropped because they touch validation windows (within the buffer)."""
    params: dict
    """How the split was made (seed, block size, buffer, validation block keys...)."""

    def to_dict(self) -> dict:
        """JSON-ready summary (counts and parameters, not the index lists)."""
        return {"train": int(self.train.size), "val": int(self.val.size),
                "dropped": int(self.dropped.size), **self.params}


def _block_keys(source: np.ndarray, row: np.ndarray, col: np.ndarray, size: int,
                block_size: int, by: SplitBy) -> np.ndarray:
    """One integer key per sample: its source, or its source and spatial block (by centre).

    Keys sort like ``(source, block row, block column)``.
    """
    if by == "source":
        return source.astype(np.int64)
    centre_r = (row + size // 2) // block_size
    centre_c = (col + size // 2) // block_size
    n_c = int(centre_c.max()) + 1 if centre_c.size else 1
    n_r = int(centre_r.max()) + 1 if centre_r.size else 1
    return (source.astype(np.int64) * n_r + centre_r) * n_c + centre_c


def _touching(train: np.ndarray, val: np.ndarray, row: np.ndarray, col: np.ndarray,
              size: int, buffer: int) -> np.ndarray:
    """Mask over ``train`` of windows within ``buffer`` px of any ``val`` window (one source).

    Rasterises the validation footprint with a 2-D difference array, grows it by the buffer
    (:func:`buffer_zone`), then answers every training window with one integral-image lookup.
    """
    if train.size == 0 or val.size == 0:
        return np.zeros(train.size, dtype=bool)
    height = int(max(row[train].max(), row[val].max())) + size + 1
    width = int(max(col[train].max(), col[val].max())) + size + 1
    diff = np.zeros((height + 1, width + 1), dtype=np.int64)
    r, c = row[val], col[val]
    np.add.at(diff, (r, c), 1)
    np.add.at(diff, (r + size, c), -1)
    np.add.at(diff, (r, c + size), -1)
    np.add.at(diff, (r + size, c + size), 1)
    zone = buffer_zone(diff.cumsum(0).cumsum(1) > 0, buffer).astype(np.int64)
    integral = np.zeros((height + 2, width + 2), dtype=np.int64)
    integral[1:, 1:] = zone.cumsum(0).cumsum(1)
    r0, c0 = row[train], col[train]
    r1, c1 = r0 + size, c0 + size
    hits = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    return hits > 0


def spatial_block_split(
    source: Sequence[int] | np.ndarray,
    row: Sequence[int] | np.ndarray,
    col: Sequence[int] | np.ndarray,
    size: int,
    *,
    val_fraction: float = 0.2,
    block_size: int | None = None,
    buffer: int = 0,
    seed: int = 0,
    by: SplitBy = "block",
) -> Split:
    """Split sample windows by whole spatial blocks (or whole sources) without leakage.

    Blocks are drawn from a seeded permutation of the sorted block keys (:func:`draw_blocks`,
    ``"share"``), so the split depends only on the seed and the window positions, not on their
    order.

    Args:
        source: Source (cube) index of each sample.
        row: Window row origin of each sample, in pixels of its source.
        col: Window column origin of each sample.
        size: Window size in pixels.
        val_fraction: Share of blocks (or sources) sent to validation (at least one).
        block_size: Block side in pixels (default ``4 * size``); a sample belongs to the
            block holding its centre, so all its time steps go the same way.
        buffer: Training windows closer than this (pixels) to a validation window of the
            same source are dropped (overlapping ones always are).
        seed: Seed of the block draw.
        by: ``block`` (spatial blocks within sources) or ``source`` (whole scenes).

    Returns:
        The split.
    """
    source, row, col = (np.asarray(a, dtype=np.int64) for a in (source, row, col))
    if not source.shape == row.shape == col.shape:
        raise PatchError("source, row and col must have one value per sample.")
    if not 0.0 < val_fraction < 1.0:
        raise PatchError(f"val_fraction must be in (0, 1); got {val_fraction}.")
    if buffer < 0:
        raise PatchError(f"buffer must be >= 0 pixels; got {buffer}.")
    block_size = int(block_size or 4 * size)
    keys = _block_keys(source, row, col, size, block_size, by)
    unique = np.unique(keys)
    if unique.size < 2:
        raise PatchError(
            f"All {keys.size} samples fall in one {by} (block_size={block_size} px); a split "
            "needs at least two: use a smaller block_size or more sources."
        )
    val_keys = unique[draw_blocks(unique.size, val_fraction, np.random.default_rng(seed))]
    is_val = np.isin(keys, val_keys)
    val = np.flatnonzero(is_val)
    candidates = np.flatnonzero(~is_val)
    drop = np.zeros(candidates.size, dtype=bool)
    for src in np.unique(source[val]):
        tr = candidates[source[candidates] == src]
        va = val[source[val] == src]
        drop[source[candidates] == src] = _touching(tr, va, row, col, size, buffer)
    params = {"seed": seed, "by": by, "block_size": block_size, "buffer": buffer,
              "val_fraction": val_fraction, "blocks": int(unique.size),
              "val_blocks": int(val_keys.size)}
    return Split(candidates[~drop], val, candidates[drop], params)


# ----------------------------------------------------------------------------- dates
def hold_out_dates(n_times: int, *, n: int | None = None, indices: Sequence[int] | None = None,
                   pools: Sequence[np.ndarray] | None = None,
                   seed: int | np.random.Generator = 0) -> np.ndarray:
    """Boolean mask over time steps marking held-out dates.

    Args:
        n_times: Number of time steps.
        n: Dates to draw without replacement (``0 < n < n_times``), spread evenly over
            ``pools`` (later pools take the remainder), each pool keeping at least one date.
        indices: The held-out dates themselves (instead of a draw).
        pools: Candidate date indices per pool (default: one pool of all dates).
        seed: Seed, or a generator to draw from (its state advances).

    Returns:
        ``(n_times,)`` bool.
    """
    mask = np.zeros(n_times, dtype=bool)
    if indices is not None:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n_times):
            raise PatchError(f"Held-out date indices {list(idx)} out of range for {n_times} dates.")
        mask[idx] = True
    elif n:
        if not 0 < n < n_times:
            raise PatchError(f"Cannot hold out {n} of {n_times} dates; choose 0 < n < {n_times}.")
        rng = np.random.default_rng(seed)
        pools = [np.arange(n_times)] if pools is None else [np.asarray(p) for p in pools]
        spread = n // len(pools) + (np.arange(len(pools)) >= len(pools) - n % len(pools))
        for pool, count in zip(pools, spread, strict=True):
            count = min(int(count), max(pool.size - 1, 0))
            if count:
                mask[rng.choice(pool, size=count, replace=False)] = True
    return mask


def with_held_out_dates(split: Split, time_index: np.ndarray, held_out: np.ndarray) -> Split:
    """Move samples on held-out dates out of training and into validation.

    Args:
        split: A spatial split.
        time_index: Time step index of each sample.
        held_out: Mask over time steps (:func:`hold_out_dates`).

    Returns:
        A split whose training set has no held-out date.
    """
    time_index = np.asarray(time_index)
    on_held = held_out[time_index[split.train]]
    val = np.union1d(split.val, split.train[on_held])
    params = {**split.params, "held_out_dates": np.flatnonzero(held_out).tolist()}
    return Split(split.train[~on_held], val, split.dropped, params)
