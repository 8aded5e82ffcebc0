"""Blocks read with a halo, decoding each chunk about once instead of up to nine times.

Ridge and the neural model read every block with a few pixels of spatial context around it
(:func:`fusecube.stages.gapfill.context_halo`). Zarr decodes whole chunks, so a block that is one
chunk plus a 2-pixel halo decodes its chunk and all 8 neighbours, for every variable: an
interior block costs 9 chunk decodes for 1 chunk of data (a ridge run at Demak size spent
4.0 s reading blocks, against 1.0 s for linear interpolation without a halo).

:class:`HaloReader` keeps the borders (``halo`` pixels wide) of every chunk it decodes, for
every variable on the cube's chunk grid, and assembles each block from its own chunk and its
neighbours' borders, decoding a neighbour only when its border is not kept yet. Blocks taken
in row order then decode about 3 chunks each (their own, the next one to the right and the one
below it). The kept borders are bounded (three rows of chunks and two more by default, at
most 32 MB; least recently used dropped first, and a dropped border is decoded again when
needed). The result is the very array a plain read gives (tested); blocks that are not
exactly one chunk are read plainly.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import xarray as xr

from fusecube.cube import X, Y

#: Chunk borders kept by default: three rows of chunks and two more, all that blocks taken in
#: row order still need (the row above, their own and the one below), up to
#: :data:`MAX_BUDGET` (a chunk's borders: 4 x halo x edge x periods x 4 bytes per variable,
#: 0.5 MB for 256 px, 62 periods and a 2-px halo; 1.7 MB for a Demak chunk's 4 variables).
ROWS_KEPT = 3
#: Most bytes of borders kept by default: memory stays flat on wide scenes, which then decode
#: some chunks again.
MAX_BUDGET = 32 * 2**20


def _along(values: np.ndarray, axis: int, sl: slice) -> np.ndarray:
    """``values[..., sl, ...]`` with ``sl`` on ``axis`` (a view)."""
    index = [slice(None)] * values.ndim
    index[axis] = sl
    return values[tuple(index)]


def _edges(chunks: tuple[int, ...]) -> np.ndarray:
    """Chunk boundaries along an axis: ``[0, c0, c0 + c1, ..., size]``."""
    return np.concatenate([[0], np.cumsum(chunks)])


class HaloReader:
    """Reads ``(ys, xs)`` windows of ``cube`` grown by ``halo`` px, reusing chunk borders.

    Args:
        cube: The lazy (dask-backed) input cube; its chunks are the store's.
        halo: Pixels of context around each window.
        budget: Bytes of borders kept (default: three rows of chunks and two more, at most
            :data:`MAX_BUDGET`).
    """

    def __init__(self, cube: xr.Dataset, halo: int, budget: int | None = None) -> None:
        self.cube, self.halo, self.budget = cube, halo, budget
        spatial = {name: self._spatial_chunks(var) for name, var in cube.data_vars.items()}
        grids = [g for g in spatial.values() if g is not None]
        common = max(set(grids), key=grids.count) if grids else None
        # the variables on the common chunk grid; others (a mask chunked its own way) are read
        # plainly with the window
        self.grid = [name for name, g in spatial.items() if g is not None and g == common]
        first = cube[self.grid[0]] if self.grid else None
        self.y_edges = _edges(first.chunks[first.dims.index(Y)]) if first is not None else None
        self.x_edges = _edges(first.chunks[first.dims.index(X)]) if first is not None else None
        self.fits = first is not None and halo > 0 and all(
            np.diff(edges).min() >= halo for edges in (self.y_edges, self.x_edges))
        """Whether a halo lies within one neighbouring chunk (else every read is plain)."""
        self.borders: OrderedDict[tuple[int, int], dict[str, dict[str, np.ndarray]]] = OrderedDict()
        self.kept = 0
        self.decoded = 0
        """Chunks decoded so far (each counts once for all grid variables)."""
        self.lock = threading.Lock()

    @staticmethod
    def _spatial_chunks(var: xr.DataArray) -> tuple | None:
        """``(y chunks, x chunks)`` of a chunked variable with both axes, else None."""
        if var.chunks is None or Y not in var.dims or X not in var.dims:
            return None
        return var.chunks[var.dims.index(Y)], var.chunks[var.dims.index(X)]

    def _chunk(self, ys: slice, xs: slice) -> tuple[int, int] | None:
        """The chunk index ``(cy, cx)`` when the window is exactly one chunk of the grid."""
        if not self.fits:
            return None
        cy = np.searchsorted(self.y_edges, ys.start)
        cx = np.searchsorted(self.x_edges, xs.start)
        exact = (cy + 1 < self.y_edges.size and cx + 1 < self.x_edges.size
                 and self.y_edges[cy] == ys.start and self.y_edges[cy + 1] == ys.stop
                 and self.x_edges[cx] == xs.start and self.x_edges[cx + 1] == xs.stop)
        return (int(cy), int(cx)) if exact else None

    def _load(self, cy: int, cx: int, *, keep_data: bool = True
              ) -> tuple[dict[str, np.ndarray], dict]:
        """Decode chunk ``(cy, cx)``, keep and return its borders (and its data if asked).

        For a border only, one variable is decoded at a time: the transient memory is one
        variable's chunk, not all of them.
        """
        sel = {Y: slice(self.y_edges[cy], self.y_edges[cy + 1]),
               X: slice(self.x_edges[cx], self.x_edges[cx + 1])}
        h = self.halo
        data, borders = {}, {}
        for name in self.grid:
            values = np.asarray(self.cube[name].isel(sel).values)
            ya, xa = self.cube[name].dims.index(Y), self.cube[name].dims.index(X)
            borders[name] = {side: _along(values, axis, sl).copy() for side, axis, sl in (
                ("top", ya, slice(0, h)), ("bottom", ya, slice(-h, None)),
                ("left", xa, slice(0, h)), ("right", xa, slice(-h, None)))}
            if keep_data:
                data[name] = values
            del values
        size = sum(a.nbytes for b in borders.values() for a in b.values())
        with self.lock:
            if self.budget is None:  # three rows of chunks and two more, capped
                self.budget = min(MAX_BUDGET, (ROWS_KEPT * (self.x_edges.size - 1) + 2) * size)
            self.decoded += 1
            if (cy, cx) not in self.borders:
                self.borders[(cy, cx)] = borders
                self.kept += size
            self.borders.move_to_end((cy, cx))
            while self.kept > self.budget and len(self.borders) > 1:  # never the newest
                _, dropped = self.borders.popitem(last=False)
                self.kept -= sum(a.nbytes for b in dropped.values() for a in b.values())
        return data, borders

    def close(self) -> None:
        """Drop the kept borders (the blocks are done)."""
        with self.lock:
            self.borders.clear()
            self.kept = 0

    def _borders(self, cy: int, cx: int) -> dict[str, dict[str, np.ndarray]]:
        with self.lock:
            kept = self.borders.get((cy, cx))
            if kept is not None:
                self.borders.move_to_end((cy, cx))
                return kept
        return self._load(cy, cx, keep_data=False)[1]

    def read(self, ys: slice, xs: slice, read_y: slice, read_x: slice) -> xr.Dataset:
        """The cube over ``read_y x read_x`` (``ys x xs`` grown by the halo), in memory."""
        chunk = self._chunk(ys, xs)
        window = self.cube.isel({Y: read_y, X: read_x})
        if chunk is None:
            return window.load()
        cy, cx = chunk
        ny, nx = self.y_edges.size - 1, self.x_edges.size - 1
        h = self.halo
        # the neighbours' borders first: a neighbour decoded for its border is gone before
        # the block's own chunk is in memory
        around = {(dy, dx): self._borders(cy + dy, cx + dx)
                  for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                  if (dy, dx) != (0, 0) and 0 <= cy + dy < ny and 0 <= cx + dx < nx}
        core = self._load(cy, cx)[0]
        cols = {-1: slice(-h, None), 0: slice(None), 1: slice(0, h)}  # of an above/below border
        out = window.copy()
        for name in self.grid:
            var = window[name]
            ya, xa = var.dims.index(Y), var.dims.index(X)
            rows = []
            for dy in (-1, 0, 1):
                pieces = []
                for dx in (-1, 0, 1):
                    if (dy, dx) == (0, 0):
                        pieces.append(core[name])
                    elif (dy, dx) in around:
                        band = around[(dy, dx)][name]
                        if dy == 0:
                            pieces.append(band["right"] if dx == -1 else band["left"])
                        else:
                            pieces.append(_along(band["bottom"] if dy == -1 else band["top"], xa,
                                                 cols[dx]))
                if pieces:
                    rows.append(np.concatenate(pieces, axis=xa))
            values = np.concatenate(rows, axis=ya)
            if values.shape != var.shape:  # not what a plain read gives: never guess
                return window.load()
            out[name] = var.copy(data=values)
        return out.load()
