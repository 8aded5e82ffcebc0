"""One block, start to end: read its window, run all stages, write its region.

The same function runs in the runner's process and as a task on a Dask worker, so the
two backends write the same bytes.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import xarray as xr
import zarr

from fusecube.config import RunConfig
from fusecube.cube import PADDY_MASK, X, Y
from fusecube.runner.control import block_delay, fault_point
from fusecube.runner.halo import HaloReader
from fusecube.runner.inputs import RunInputs
from fusecube.runner.memory import peak_rss_bytes, release_memory, rss_bytes
from fusecube.runner.pipeline import StageTimer, gapfill_config, process_block
from fusecube.runner.store import merge_block, write_region
from fusecube.stages.gapfill import context_halo
from fusecube.storage.chunks import raise_if_bad_chunk


@dataclass(frozen=True)
class BlockTask:
    """A block: its tile index and pixel window."""

    index: tuple[int, int]
    ys: slice
    xs: slice


@dataclass
class BlockOutcome:
    """What processing a block took."""

    index: tuple[int, int]
    seconds: float
    rss: int
    """Resident memory of the worker after the block (heap trimmed)."""
    worker: str
    peak_rss: int
    """Peak resident memory of the worker process so far (``VmHWM``)."""
    stage_seconds: dict[str, float] = field(default_factory=dict)


def worker_id() -> str:
    """``host:pid`` of this process, as blocks record who ran them."""
    return f"{socket.gethostname()}:{os.getpid()}"


#: Chunks zarr reads and decodes at once for a block. Its default (10) decoded the whole 3 x 3
#: chunk neighbourhood of an interior block with its halo at once, +100-160 MB per worker on
#: such blocks, which larger scenes have more of (Dask worker peak 715 MB at Demak size,
#: 827 MB at 4x, 669 MB at 4x with 2, no slower); 2 keeps both cores of a worker busy.
READ_CONCURRENCY = 2


def read_block(cube: xr.Dataset, mask: xr.DataArray | None, ys: slice, xs: slice, *,
               reader: HaloReader | None = None, inner: tuple[slice, slice] | None = None
               ) -> xr.Dataset:
    """The block's window of the cube (all time steps) in memory, with the run's paddy mask.

    With a ``reader`` and ``inner`` (the block without its halo), the halo comes from the
    reader's kept chunk borders where it can (:mod:`fusecube.runner.halo`): the same values.
    """
    with zarr.config.set({"async.concurrency": READ_CONCURRENCY}):
        if reader is not None and inner is not None:
            block = reader.read(*inner, ys, xs)
        else:
            block = cube.isel({Y: ys, X: xs}).load()
    if mask is not None:
        block[PADDY_MASK] = mask.isel({Y: ys, X: xs})
    elif PADDY_MASK in block:
        block = block.drop_vars(PADDY_MASK)
    return block


def with_halo(window: slice, halo: int, size: int) -> tuple[slice, slice]:
    """``window`` grown by ``halo`` px on both sides (within ``0..size``).

    Returns:
        ``(grown, inner)``: the grown window, and where ``window`` lies inside it.
    """
    start, stop = max(0, window.start - halo), min(size, window.stop + halo)
    inner = slice(window.start - start, window.stop - start)
    return slice(start, stop), inner


def sub_windows(ys: slice, xs: slice, split: int) -> list[tuple[slice, slice]]:
    """``ys x xs`` cut into ``split x split`` windows (fewer where the block is too small)."""

    def cuts(s: slice) -> list[slice]:
        n = s.stop - s.start
        parts = max(1, min(split, n))
        edges = [s.start + (n * i) // parts for i in range(parts + 1)]
        return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]

    return [(y, x) for y in cuts(ys) for x in cuts(xs)]


def run_block(task: BlockTask, *, cube: xr.Dataset, inputs: RunInputs,
              config: RunConfig, model, store: Path, split: int = 1,
              before_write: Callable[[xr.Dataset], None] | None = None,
              reader: HaloReader | None = None) -> BlockOutcome:
    """Read, process and durably write one block (in ``split x split`` parts under pressure).

    Args:
        task: The block.
        cube: The (lazy) input cube.
        inputs: The run's resolved mask, thresholds and period screen.
        config: The run configuration.
        model: The fusion model, or None.
        store: The partial output store; its template must exist unless ``before_write``
            creates it.
        split: Process the block in ``split x split`` windows, one after the other.
        before_write: Called with the first processed window before it is written.
        reader: Reads windows with their halo from kept chunk borders (the runner's, one per
            run); None reads them plainly.

    Returns:
        Timings and memory of the block.
    """
    start = time.perf_counter()
    timer = StageTimer()
    delay = block_delay()
    halo = context_halo(gapfill_config(config), model)
    for ys, xs in sub_windows(task.ys, task.xs, split):
        t0 = time.perf_counter()
        # read with the gap-fill's spatial context around the window, keep the window only
        (read_y, keep_y), (read_x, keep_x) = (with_halo(ys, halo, cube.sizes[Y]),
                                              with_halo(xs, halo, cube.sizes[X]))
        try:
            block = read_block(cube, inputs.mask, read_y, read_x, reader=reader if halo else None,
                               inner=(ys, xs))
        except Exception as exc:  # a chunk that cannot be decoded: name it, else re-raise
            raise_if_bad_chunk(inputs.cube_path, exc, window={Y: read_y, X: read_x})
            raise
        timer.seconds["read"] += time.perf_counter() - t0
        series, seasons = process_block(block, config, inputs.screen, timer, model,
                                        thresholds=inputs.thresholds, sigma=inputs.sigma)
        if halo:
            series, seasons = (part.isel({Y: keep_y, X: keep_x}) for part in (series, seasons))
        merged = merge_block(series, seasons)
        del block, series, seasons
        if delay:
            time.sleep(delay / split**2)
        if before_write is not None:
            before_write(merged)
            before_write = None
        t0 = time.perf_counter()
        write_region(merged, store, ys, xs)
        timer.seconds["write"] += time.perf_counter() - t0
        fault_point("window_written")
    fault_point("block_written")
    release_memory()  # the block's heap back to the OS before the next one, on any backend
    return BlockOutcome(index=task.index, seconds=time.perf_counter() - start, rss=rss_bytes(),
                        worker=worker_id(), peak_rss=peak_rss_bytes(),
                        stage_seconds=dict(timer.seconds))


def run_block_task(task: BlockTask, *, inputs: RunInputs, config: RunConfig, model, store: str,
                   split: int = 1) -> BlockOutcome:
    """:func:`run_block` for a Dask worker: opens the cube itself, window by window."""
    from fusecube.cube import read_cube
    from fusecube.runner.memory import keep_heap_flat

    keep_heap_flat()
    if config.gapfill == "fusion":  # one worker per core: torch's pool would oversubscribe
        import torch

        torch.set_num_threads(1)
    cube = read_cube(inputs.cube_path)
    try:
        return run_block(task, cube=cube, inputs=inputs, config=config, model=model,
                         store=Path(store), split=split)
    finally:
        cube.close()
