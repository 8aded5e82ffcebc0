"""The one pass over a (possibly lazy) cube that gathers every statistic the input gates need."""

from __future__ import annotations

import numpy as np
import xarray as xr

from fusecube.cube import (
    DIMS,
    SENTINEL_VALUES,
    X,
    Y,
)


# ----------------------------------------------------------------------------- data pass
def _block_stats(values: np.ndarray, low: float, high: float, step: int = 0,
                 origin: tuple[int, int] = (0, 0)) -> dict:
    """Statistics of one ``(time, y, x)`` numpy block, summable across blocks.

    ``step`` > 0 adds the temporal mean on every ``step``-th row and column of the whole grid
    (``origin`` is the block's offset in it), so the composite stays small for big cubes.
    """
    n_t = values.shape[0]
    finite = np.isfinite(values)
    sentinel = np.zeros(values.shape, bool)
    if values.dtype.kind == "f":
        for value in SENTINEL_VALUES:
            sentinel |= values == values.dtype.type(value)
    usable = finite & ~sentinel
    in_range = usable & (values >= low) & (values <= high)
    kept = np.where(in_range, values, np.nan).reshape(n_t, -1)
    stats = {
        "row_count": in_range.sum(axis=2),
        "n_valid": in_range.reshape(n_t, -1).sum(axis=1),
        "vmin": np.fmin.reduce(kept, axis=1), "vmax": np.fmax.reduce(kept, axis=1),
        "n_inf": int(np.isinf(values).sum()), "n_sentinel": int(sentinel.sum()),
        "n_out": int((usable & ~in_range).sum()), "n_negative": int((usable & (values < 0)).sum()),
        "n_usable": int(usable.sum()),
    }
    if step:  # mean of the valid values, zeros left out (they are broken composites)
        rows = slice((-origin[0]) % step, None, step)
        cols = slice((-origin[1]) % step, None, step)
        sub = values[:, rows, cols]
        nonzero = in_range[:, rows, cols] & (sub != 0)
        stats["composite_sum"] = np.where(nonzero, sub, 0.0).sum(axis=0, dtype=np.float64)
        stats["composite_n"] = nonzero.sum(axis=0)
    return stats


def _stat_tasks(var: xr.DataArray, low: float, high: float, step: int) -> list:
    """One delayed :func:`_block_stats` per spatial chunk (all times) with its offsets."""
    import dask
    import dask.array as da

    data = var.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(-1, 256, 256))
    data = data.rechunk({0: -1})  # whole series per block
    y_edges = np.cumsum((0, *data.chunks[1]))
    x_edges = np.cumsum((0, *data.chunks[2]))
    tasks = []
    for (_, iy, ix), block in zip(np.ndindex(*data.numblocks), data.to_delayed().ravel(),
                                  strict=True):
        origin = (int(y_edges[iy]), int(x_edges[ix]))
        stats = dask.delayed(_block_stats)(block, low, high, step, origin)
        tasks.append(((y_edges[iy], y_edges[iy + 1], x_edges[ix], x_edges[ix + 1]), stats))
    return tasks


def _combine(tasks: list, results: list, shape: tuple[int, int, int], step: int) -> dict:
    """Sum the block statistics of :func:`_stat_tasks` into whole-cube ones."""
    n_t, ny, nx = shape
    rows = np.zeros((n_t, ny))
    out = {"n_valid": np.zeros(n_t, np.int64), "vmin": np.full(n_t, np.nan),
           "vmax": np.full(n_t, np.nan)}
    out.update({k: 0 for k in ("n_inf", "n_sentinel", "n_out", "n_negative", "n_usable")})
    sub_shape = (-(-ny // step), -(-nx // step)) if step else (0, 0)
    comp_sum, comp_n = np.zeros(sub_shape), np.zeros(sub_shape)
    for ((y0, y1, x0, _), _), block in zip(tasks, results, strict=True):
        rows[:, y0:y1] += block["row_count"]
        out["n_valid"] += block["n_valid"]
        out["vmin"] = np.fmin(out["vmin"], block["vmin"])
        out["vmax"] = np.fmax(out["vmax"], block["vmax"])
        for key in ("n_inf", "n_sentinel", "n_out", "n_negative", "n_usable"):
            out[key] += block[key]
        if step:
            r0, c0 = -(-y0 // step), -(-x0 // step)
            h, w = block["composite_sum"].shape
            comp_sum[r0:r0 + h, c0:c0 + w] = block["composite_sum"]
            comp_n[r0:r0 + h, c0:c0 + w] = block["composite_n"]
    out["row_valid"] = rows / max(nx, 1)
    if step:
        with np.errstate(invalid="ignore", divide="ignore"):
            out["composite"] = np.where(comp_n > 0, comp_sum / np.maximum(comp_n, 1), np.nan)
    return out


#: Largest edge (pixels) of the mean-NDVI composite kept for the figures.
COMPOSITE_EDGE = 1024


def composite_step(ny: int, nx: int, edge: int | None = None) -> int:
    """Subsampling step that keeps a ``(ny, nx)`` composite within ``edge`` pixels a side."""
    return max(1, -(-max(ny, nx) // (edge or COMPOSITE_EDGE)))


def variable_stats(variables: dict[str, tuple[xr.DataArray, float, float, bool]],
                   extra: dict[str, xr.DataArray] | None = None) -> dict[str, dict]:
    """Per-period statistics of ``(time, y, x)`` variables in one parallel pass over the chunks.

    Args:
        variables: ``{name: (variable, low, high, composite)}``: values outside ``[low, high]``
            are counted as out of range; ``composite`` adds the temporal mean (zeros left out)
            on every :func:`composite_step`-th pixel (every pixel up to 1024 x 1024).
        extra: Further (small) arrays to compute in the same pass, returned under ``"extra"``.

    Returns:
        Per name: ``row_valid`` ``(time, y)`` valid share per row, ``n_valid``, ``vmin``,
        ``vmax`` per period, counts ``n_inf``, ``n_sentinel``, ``n_out``, ``n_negative``,
        ``n_usable`` and, if asked, ``composite`` and its ``composite_step``.
    """
    import dask

    steps = {name: composite_step(var.sizes[Y], var.sizes[X]) if comp else 0
             for name, (var, _, _, comp) in variables.items()}
    tasks = {name: _stat_tasks(var.transpose(*DIMS), low, high, steps[name])
             for name, (var, low, high, _) in variables.items()}
    flat = [stats for name in tasks for _, stats in tasks[name]]
    extra = extra or {}
    results = dask.compute(*flat, *[v.data for v in extra.values()])
    out: dict[str, dict] = {}
    start = 0
    for name, (var, _, _, _) in variables.items():
        n = len(tasks[name])
        shape = tuple(var.sizes[d] for d in DIMS)
        out[name] = _combine(tasks[name], list(results[start:start + n]), shape, steps[name])
        out[name]["composite_step"] = steps[name]
        start += n
    out["extra"] = {k: np.asarray(v) for k, v in zip(extra, results[start:], strict=True)}
    return out


