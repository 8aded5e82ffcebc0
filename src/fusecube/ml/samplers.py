"""Where to read: regular windows over cubes and a seeded shuffle.

Which windows train and which validate is decided by :mod:`fusecube.splits`
(:func:`~fusecube.splits.spatial_block_split`, :func:`~fusecube.splits.hold_out_dates`).
Numpy only; :class:`SeededShuffle` works as a ``torch`` DataLoader sampler.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from fusecube.errors import PatchError


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
