"""The output store: a zarr v3 template over the whole grid, block regions written into it.

Chunks are exactly one block in y/x, so writers of different blocks never touch the same
chunk file (safe for parallel Dask workers) and a block rewritten on resume replaces its
chunks whole. After a region is written its chunk files are fsynced, so a block the ledger
calls done survives a crash of the machine, not only of the process.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from fusecube.cube import X, Y, with_geobox, zarr_layout
from fusecube.products.cf import dates_as_days, storage_encoding
from fusecube.storage.atomic import fsync_path, fsync_tree
from fusecube.storage.chunks import WRITE_ALL_CHUNKS, check_chunks, complete_attrs

log = logging.getLogger(__name__)


def partial_store_path(out: Path, run_id: str) -> Path:
    """The stable temporary name of a run's output store (renamed to ``result.zarr`` at the end)."""
    return out / f".result.zarr.partial-{run_id}"


def merge_block(series: xr.Dataset, seasons: xr.Dataset) -> xr.Dataset:
    """One dataset of a block's outputs, without the grid coordinates the store already has."""
    merged = xr.merge([series, seasons], compat="override", join="override")
    return merged.drop_vars([c for c in ("spatial_ref",) if c in merged.coords])


def template(block: xr.Dataset, geobox: GeoBox, edge: int) -> xr.Dataset:
    """Lazy full-grid dataset with the variables, dtypes and attrs of a processed block."""
    import dask.array as da

    ny, nx = geobox.shape
    data = {}
    for name, var in block.data_vars.items():
        dims = var.dims
        shape = tuple(ny if d == Y else nx if d == X else var.sizes[d] for d in dims)
        chunks = tuple(min(edge, s) if d in (Y, X) else s for d, s in zip(dims, shape, strict=True))
        fill = np.zeros((), dtype=var.dtype)
        data[name] = (dims, da.full(shape, fill, dtype=var.dtype, chunks=chunks), var.attrs)
    coords = {k: v for k, v in block.coords.items() if Y not in v.dims and X not in v.dims}
    return with_geobox(xr.Dataset(data, coords=coords), geobox)


def write_template(block: xr.Dataset, geobox: GeoBox, edge: int, store: Path) -> None:
    """Create (or recreate) the store's metadata and coordinates; no data chunks yet."""
    ds, enc = zarr_layout(template(dates_as_days(block), geobox, edge))
    for name, cf in storage_encoding(ds).items():  # season count: uint8, nodata 255 (GDAL sees it too)
        enc[name].update(cf, fill_value=cf["_FillValue"])
    ds.attrs.update(complete_attrs())  # blocks write every chunk: a missing one is damage
    ds.to_zarr(store, mode="w", compute=False, zarr_format=3, consolidated=False, encoding=enc,
               **WRITE_ALL_CHUNKS)
    fsync_tree(store)


def write_region(block: xr.Dataset, store: Path, ys: slice, xs: slice) -> None:
    """Write a processed block (or part of one) into its region of the store, durably."""
    region = {d: slice(None) for d in block.dims if d not in (Y, X)}
    region.update({Y: ys, X: xs})
    data = dates_as_days(block).drop_vars(
        [Y, X, *[c for c in block.coords if c not in block.dims]], errors="ignore")
    data.to_zarr(store, region=region, zarr_format=3, consolidated=False, **WRITE_ALL_CHUNKS)
    fsync_region(store, ys, xs)


def verify_store(store: Path) -> None:
    """Refuse to finish a run whose store lacks a chunk of a written block (it would read as NaN).

    Raises:
        InputFileError: Naming the variable and chunk, and the fix.
    """
    check_chunks(store, fix="a chunk written by an earlier block was lost; start the run again "
                            "without --resume (the earlier result is kept).")


def fsync_region(store: Path, ys: slice, xs: slice) -> None:
    """Flush the chunk files holding region ``(ys, xs)`` of every array, and their folders."""
    for meta_path in store.glob("*/zarr.json"):
        meta = json.loads(meta_path.read_text())
        dims = meta.get("dimension_names") or []
        if Y not in dims or X not in dims:
            continue
        chunk_shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
        ranges = []
        for dim, size, chunk in zip(dims, meta["shape"], chunk_shape, strict=True):
            if dim == Y:
                ranges.append(range(ys.start // chunk, (ys.stop - 1) // chunk + 1))
            elif dim == X:
                ranges.append(range(xs.start // chunk, (xs.stop - 1) // chunk + 1))
            else:
                ranges.append(range(-(-size // chunk)))
        folders = set()
        for key in np.ndindex(*[len(r) for r in ranges]):
            parts = [str(r[i]) for r, i in zip(ranges, key, strict=True)]
            chunk_file = meta_path.parent / "c" / Path(*parts)
            if chunk_file.exists():  # stores of older releases lack all-fill chunks
                fsync_path(chunk_file)
                folders.add(chunk_file.parent)
        for folder in folders:
            fsync_path(folder)
