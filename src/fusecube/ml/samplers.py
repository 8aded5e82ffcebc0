"""Where to read: reproducible spatial-block splits with a buffer, held-out dates, cube windows.

Splits never leak: all time steps of a location fall on the same side (blocks are spatial),
blocks are drawn from a seeded permutation of their sorted keys (so the split depends only
on the seed and the patch positions, not their order), and training windows that overlap or
come within ``buffer`` pixels of any validation window of the same source are dropped.
Numpy only; :class:`SeededShuffle` works as a ``torch`` DataLoader sampler.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fusecube.errors import PatchError

SplitBy = Literal["block", "source"]


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
    """One integer key per sample: its source, or its source and spatial block (by centre)."""
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

    Rasterises the validation footprint with a 2-D difference array, then answers every
    training window's (buffer-grown) box with one integral-image lookup: vectorised.
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
    covered = (diff.cumsum(0).cumsum(1) > 0).astype(np.int64)
    integral = np.zeros((height + 2, width + 2), dtype=np.int64)
    integral[1:, 1:] = covered.cumsum(0).cumsum(1)
    r0 = np.clip(row[train] - buffer, 0, height + 1)
    c0 = np.clip(col[train] - buffer, 0, width + 1)
    r1 = np.clip(row[train] + size + buffer, 0, height + 1)
    c1 = np.clip(col[train] + size + buffer, 0, width + 1)
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
    """Split samples by whole spatial blocks (or whole sources) without leakage.

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
    rng = np.random.default_rng(seed)
    n_val = min(unique.size - 1, max(1, int(round(val_fraction * unique.size))))
    val_keys = np.sort(unique[rng.permutation(unique.size)[:n_val]])
    is_val = np.isin(keys, val_keys)
    val = np.flatnonzero(is_val)
    candidates = np.flatnonzero(~is_val)
    drop = np.zeros(candidates.size, dtype=bool)
    for src in np.unique(source[val]):
        tr = candidates[source[candidates] == src]
        va = val[source[val] == src]
        drop[source[candidates] == src] = _touching(tr, va, row, col, size, buffer)
    params = {"seed": seed, "by": by, "block_size": block_size, "buffer": buffer,
              "val_fraction": val_fraction, "blocks": int(unique.size), "val_blocks": int(n_val)}
    return Split(candidates[~drop], val, candidates[drop], params)


def hold_out_dates(
    n_times: int, *, n: int | None = None, indices: Sequence[int] | None = None, seed: int = 0
) -> np.ndarray:
    """Boolean mask over time steps marking held-out dates (given, or ``n`` drawn from ``seed``)."""
    mask = np.zeros(n_times, dtype=bool)
    if indices is not None:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n_times):
            raise PatchError(f"Held-out date indices {list(idx)} out of range for {n_times} dates.")
        mask[idx] = True
    elif n:
        if not 0 < n < n_times:
            raise PatchError(f"Cannot hold out {n} of {n_times} dates; choose 0 < n < {n_times}.")
        mask[np.random.default_rng(seed).choice(n_times, size=n, replace=False)] = True
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


@dataclass(frozen=True)
class CubeWindows:
    """Sample windows over cubes: source, first time step, row and col origins (columnar)."""

    source: np.ndarray
    """Cube index of each window."""
    time: np.ndarray
    """First time step of each window."""
    row: np.ndarray
    """Row origin of each window."""
    col: np.ndarray
    """Column origin of each window."""
    size: int
    """Window height and width in pixels."""
    time_window: int
    """Time steps per window."""

    def __len__(self) -> int:
        return int(self.source.size)

    def subset(self, index: np.ndarray) -> CubeWindows:
        """The windows at ``index``."""
        return CubeWindows(self.source[index], self.time[index], self.row[index],
                           self.col[index], self.size, self.time_window)


def grid_windows(
    shapes: Sequence[tuple[int, int, int]],
    *,
    size: int,
    time_window: int,
    stride: int | None = None,
    time_stride: int | None = None,
) -> CubeWindows:
    """Regular windows over cubes of ``(time, y, x)`` sizes, each fully inside its cube.

    Args:
        shapes: ``(n_time, height, width)`` of each cube.
        size: Window side in pixels.
        time_window: Time steps per window.
        stride: Pixel step between windows (default ``size``).
        time_stride: Time step between windows (default ``time_window``).

    Returns:
        The windows, cube-major, then time, row, col.
    """
    stride = stride or size
    time_stride = time_stride or time_window
    parts = []
    for src, (n_t, h, w) in enumerate(shapes):
        ts = np.arange(0, max(n_t - time_window + 1, 0), time_stride)
        rs = np.arange(0, max(h - size + 1, 0), stride)
        cs = np.arange(0, max(w - size + 1, 0), stride)
        t, r, c = (a.ravel() for a in np.meshgrid(ts, rs, cs, indexing="ij"))
        parts.append((np.full(t.size, src), t, r, c))
    if not parts or sum(p[0].size for p in parts) == 0:
        raise PatchError(
            f"No {time_window}-step, {size} x {size} px window fits in cubes of shape(s) "
            f"{list(shapes)}; use a smaller size or time window."
        )
    s, t, r, c = (np.concatenate([p[i] for p in parts]).astype(np.int64) for i in range(4))
    return CubeWindows(s, t, r, c, size, time_window)


class SeededShuffle:
    """A reproducible shuffling sampler: the order depends only on ``seed`` and the epoch.

    Works as a ``torch.utils.data.DataLoader`` sampler; Lightning calls :meth:`set_epoch`.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch``."""
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        """The permutation of the current epoch."""
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return self.n
