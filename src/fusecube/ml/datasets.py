"""I/O and index: patch datasets (in memory, memory-mapped), patch-set checks, 4-D cube samples.

Every ``__getitem__`` returns a dict with fixed keys:

- patch datasets: ``image`` (float32 tensor ``(C, H, W)``) and ``index`` (the patch's index in
  the patch set, which keys its metadata row);
- :class:`CubeDataset`: ``image`` (float32 ``(band, time, y, x)``, NaN filled), ``mask`` (bool,
  True where the input value was valid), ``index``, ``source``, ``time``, ``row``, ``col``, and
  with targets also ``target`` and ``target_mask``.

Transforms (:mod:`fusecube.ml.transforms`) always receive a copy of what was read, never a
view of a memory map, and a generator seeded from ``(seed, epoch, index)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from fusecube.cube import TIME, X, Y, read_cube
from fusecube.errors import PatchError, require
from fusecube.ml.patches.patch_set import (
    PatchChunks,
    PatchSet,
    as_patch_set,
    open_shard,
)
from fusecube.ml.samplers import CubeWindows
from fusecube.ml.transforms import Transform
from fusecube.storage.atomic import write_text_atomic

torch = require("torch", "ml")
from torch.utils.data import Dataset  # noqa: E402

log = logging.getLogger(__name__)


class _PatchSamples(Dataset):
    """Shared sample building: copy, transform with a reproducible generator, to tensors."""

    transform = None
    seed = 0
    epoch = 0

    def _sample(self, image: np.ndarray, index: int) -> dict:
        sample = {"image": np.array(image, dtype=np.float32, copy=True)}  # never a view
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            sample = self.transform(sample, rng)
        return {"image": torch.from_numpy(np.ascontiguousarray(sample["image"], np.float32)),
                "index": int(index)}


class SARPatchDataset(_PatchSamples):
    """Patches held in memory as one ``(N, C, H, W)`` float32 array.

    Args:
        images: The patches.
        patch_ids: Index of each patch in its patch set (default ``0..N-1``).
        transform: Sample transform (see :mod:`fusecube.ml.transforms`).
        seed: Seed of the augmentation generators.
    """

    def __init__(self, images: np.ndarray, *, patch_ids: Sequence[int] | None = None,
                 transform: Transform | None = None, seed: int = 0) -> None:
        images = np.asarray(images)
        if images.ndim != 4:
            raise PatchError(
                f"SARPatchDataset needs (N, C, H, W) images; got shape {images.shape}.")
        self.images = images.astype(np.float32, copy=False)
        self.patch_ids = np.arange(len(images)) if patch_ids is None else np.asarray(patch_ids)
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    @classmethod
    def from_patch_set(cls, patches: PatchSet | str | os.PathLike, *,
                       indices: Sequence[int] | None = None, transform: Transform | None = None,
                       seed: int = 0) -> SARPatchDataset:
        """Load the patches at ``indices`` (default all) of a patch set into memory."""
        patch_set = as_patch_set(patches)
        ids = np.arange(patch_set.count) if indices is None else np.asarray(indices, np.int64)
        images = np.concatenate(list(PatchChunks(patch_set, ids, sort=False))) if ids.size else \
            np.zeros((0, *patch_set.meta["patch_shape"]), np.float32)
        return cls(images, patch_ids=ids, transform=transform, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (reproducibly)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return self._sample(self.images[i], int(self.patch_ids[i]))


class LazyPatchDataset(_PatchSamples):
    """Patches read on demand from many ``.npy`` shards opened with ``np.load(mmap_mode="r")``.

    A cumulative index maps a patch index to (shard, offset). At most ``max_open_shards``
    memory maps are open per process (least recently used closed first), which bounds the
    resident memory however large the set is; maps are opened lazily, so each DataLoader
    worker opens its own.

    Args:
        patches: Patch set folder or :class:`~fusecube.ml.patches.patch_set.PatchSet`.
        indices: Patch indices to serve (e.g. a training split; default all).
        shuffle_seed: Serve ``indices`` in a seeded permutation that changes with
            :meth:`set_epoch` (None: in the given order).
        transform: Sample transform, applied to a copy of the patch.
        seed: Seed of the augmentation generators.
        max_open_shards: Memory maps kept open per process.
    """

    def __init__(self, patches: PatchSet | str | os.PathLike, *,
                 indices: Sequence[int] | None = None, shuffle_seed: int | None = None,
                 transform: Transform | None = None, seed: int = 0,
                 max_open_shards: int = 4) -> None:
        self.patch_set = as_patch_set(patches)
        counts = self.patch_set.shard_counts
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        n = int(self.starts[-1])
        self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
            raise PatchError(f"Patch indices out of range for a set of {n} patches.")
        self.shuffle_seed = shuffle_seed
        self.transform = transform
        self.seed = seed
        self.max_open_shards = max(1, int(max_open_shards))
        self.set_epoch(0)
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: reshuffles (reproducibly) and changes the augmentation draw."""
        self.epoch = int(epoch)
        if self.shuffle_seed is None:
            self.order = self.indices
        else:
            rng = np.random.default_rng([self.shuffle_seed, self.epoch])
            self.order = self.indices[rng.permutation(self.indices.size)]

    def locate(self, index: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard, offset) of patch ``index`` (scalar or array) from the cumulative index."""
        shard = np.searchsorted(self.starts, index, side="right") - 1
        return shard, np.asarray(index) - self.starts[shard]

    def shard(self, k: int) -> np.ndarray:
        """The read-only memory map of shard ``k`` (opened on first use, LRU-bounded)."""
        if k in self._maps:
            self._maps.move_to_end(k)
            return self._maps[k]
        arr = open_shard(self.patch_set, k)
        self._maps[k] = arr
        while len(self._maps) > self.max_open_shards:
            self._maps.popitem(last=False)  # dropping the last reference unmaps it
        return arr

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"] = OrderedDict()  # each process maps its own shards
        return state

    def __len__(self) -> int:
        return int(self.order.size)

    def __getitem__(self, i: int) -> dict:
        index = int(self.order[i])
        shard, offset = self.locate(index)
        return self._sample(self.shard(int(shard))[int(offset)], index)


# ---------------------------------------------------------------------------- 4-D cube samples


class ChunkCache:
    """Least-recently-used decoded zarr chunks (as float32), bounded in bytes.

    A window smaller than the on-disk chunks (the cube default is all time x 256 x 256)
    would otherwise decode the same chunks again for every neighbouring window.

    Args:
        max_bytes: Memory budget; 0 keeps nothing.
    """

    def __init__(self, max_bytes: float) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = self.misses = 0
        self._blocks: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def get(self, key: tuple, load) -> np.ndarray:
        """The block under ``key``, from the cache or from ``load()`` (then cached)."""
        block = self._blocks.get(key)
        if block is not None:
            self.hits += 1
            self._blocks.move_to_end(key)
            return block
        self.misses += 1
        block = load()
        if block.nbytes <= self.max_bytes:
            self._blocks[key] = block
            self.nbytes += block.nbytes
            while self.nbytes > self.max_bytes:
                _, old = self._blocks.popitem(last=False)
                self.nbytes -= old.nbytes
        return block


def read_window(data: xr.DataArray, t: slice, y: slice, x: slice, *,
                cache: ChunkCache | None = None, key: tuple = ()) -> np.ndarray:
    """``data[t, y, x]`` as float32, assembled from whole on-disk chunks kept in ``cache``.

    Args:
        data: A lazily indexed ``(time, y, x)`` variable of a zarr store (``chunks=None``).
        t: Time slice (explicit start and stop).
        y: Row slice.
        x: Column slice.
        cache: Chunk cache; None reads just the window.
        key: Prefix identifying ``data`` in the cache (e.g. store index and variable name).

    Returns:
        The window.
    """
    if cache is None or cache.max_bytes <= 0:
        return np.asarray(data.isel({TIME: t, Y: y, X: x}).values, np.float32)
    bounds = [(s.start, min(s.stop, n)) for s, n in zip((t, y, x), data.shape, strict=True)]
    chunks = data.encoding.get("chunks") or data.shape
    out = np.empty([b - a for a, b in bounds], np.float32)
    ranges = [range(a // c, (b - 1) // c + 1) for (a, b), c in zip(bounds, chunks, strict=True)]
    for kt in ranges[0]:
        for ky in ranges[1]:
            for kx in ranges[2]:
                origin = (kt * chunks[0], ky * chunks[1], kx * chunks[2])
                sel = {d: slice(o, o + c) for d, o, c in zip((TIME, Y, X), origin, chunks, strict=True)}
                block = cache.get((*key, kt, ky, kx),
                                  lambda sel=sel: np.asarray(data.isel(sel).values, np.float32))
                lo = [max(a, o) for (a, _), o in zip(bounds, origin, strict=True)]
                hi = [min(b, o + n) for (_, b), o, n in zip(bounds, origin, block.shape, strict=True)]
                dst = tuple(slice(lo_ - a, hi_ - a) for lo_, hi_, (a, _) in zip(lo, hi, bounds, strict=True))
                src = tuple(slice(lo_ - o, hi_ - o) for lo_, hi_, o in zip(lo, hi, origin, strict=True))
                out[dst] = block[src]
    return out


class CubeDataset(Dataset):
    """4-D samples ``(band, time, y, x)`` cut lazily from chunked zarr cubes.

    Only the chunks under a window are read (the cube is never loaded whole); each process
    (DataLoader worker) opens its own stores on first use and keeps its own bounded cache of
    decoded chunks (``cache_mb``), so neighbouring windows do not decode a chunk again.

    Args:
        cubes: Cube zarr stores (window ``source`` indexes this list).
        windows: The windows to serve (:func:`fusecube.ml.samplers.grid_windows`).
        variables: Input bands, one cube variable each.
        targets: Stores holding the target variables, one per cube (e.g. ``truth.zarr``);
            None reads them from the cubes.
        target_variables: Target bands (e.g. ``("ndvi_true",)``); empty for no target.
        transform: Sample transform (e.g. ``Compose([Preprocess(p, channel_axis=-4),
            FillMissing()])``), given a copy of what was read.
        seed: Seed of the augmentation generators.
        cache_mb: Decoded-chunk cache per process in MB (0: read each window alone).
    """

    def __init__(self, cubes: Sequence[str | os.PathLike], windows: CubeWindows, *,
                 variables: Sequence[str] = ("vv", "vh"),
                 targets: Sequence[str | os.PathLike] | None = None,
                 target_variables: Sequence[str] = (), transform: Transform | None = None,
                 seed: int = 0, cache_mb: float = 256.0) -> None:
        self.cubes = [Path(p) for p in cubes]
        self.targets = None if targets is None else [Path(p) for p in targets]
        if self.targets is not None and len(self.targets) != len(self.cubes):
            raise PatchError(f"{len(self.targets)} target stores for {len(self.cubes)} cubes; "
                             "give one target store per cube.")
        self.windows = windows
        self.variables = tuple(variables)
        self.target_variables = tuple(target_variables)
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.cache_mb = cache_mb
        self._pid: int | None = None
        self._stores: list[tuple[xr.Dataset, xr.Dataset]] = []
        self._cache: ChunkCache | None = None

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (reproducibly)."""
        self.epoch = int(epoch)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_pid=None, _stores=[], _cache=None)
        return state

    def _open(self) -> list[tuple[xr.Dataset, xr.Dataset]]:
        if self._pid != os.getpid():
            stores = []
            for i, cube in enumerate(self.cubes):
                ds = read_cube(cube, chunks=None)
                missing = [v for v in self.variables if v not in ds.data_vars]
                if missing:
                    raise PatchError(f"Cube {cube} has no variable(s) {missing}.")
                tgt = ds if self.targets is None else read_cube(self.targets[i], chunks=None)
                missing = [v for v in self.target_variables if v not in tgt.data_vars]
                if missing:
                    raise PatchError(f"Target store of {cube} has no variable(s) {missing}; "
                                     "pass targets=[.../truth.zarr] or other target_variables.")
                stores.append((ds, tgt))
            self._stores, self._pid = stores, os.getpid()
            self._cache = ChunkCache(self.cache_mb * 2**20)
        return self._stores

    def __len__(self) -> int:
        return len(self.windows)

    def read(self, i: int) -> dict[str, np.ndarray]:
        """The raw arrays of window ``i``: ``image``/``mask`` and the targets, before transforms."""
        w = self.windows
        src, t, r, c = (int(a[i]) for a in (w.source, w.time, w.row, w.col))
        ds, tgt = self._open()[src]
        ts, ys, xs = slice(t, t + w.time_window), slice(r, r + w.size), slice(c, c + w.size)

        def window(store: xr.Dataset, kind: str, name: str) -> np.ndarray:
            return read_window(store[name], ts, ys, xs, cache=self._cache, key=(src, kind, name))

        image = np.stack([window(ds, "input", v) for v in self.variables])
        sar = np.array([v in ("vv", "vh") for v in self.variables])[:, None, None, None]
        with np.errstate(invalid="ignore"):
            mask = np.isfinite(image) & ~(sar & (image <= 0))
        sample = {"image": image, "mask": mask}
        if self.target_variables:
            target = np.stack([window(tgt, "target", v) for v in self.target_variables])
            sample.update(target=target, target_mask=np.isfinite(target))
        return sample

    def __getitem__(self, i: int) -> dict:
        sample = self.read(i)
        if self.transform is not None:
            sample = self.transform(sample, np.random.default_rng([self.seed, self.epoch, int(i)]))
        w = self.windows
        out = {"image": torch.from_numpy(np.ascontiguousarray(sample["image"], np.float32)),
               "mask": torch.from_numpy(np.ascontiguousarray(sample["mask"]))}
        if self.target_variables:
            target = np.where(sample["target_mask"], sample["target"], np.float32(0))
            out.update(target=torch.from_numpy(np.ascontiguousarray(target, np.float32)),
                       target_mask=torch.from_numpy(np.ascontiguousarray(sample["target_mask"])))
        out.update(index=int(i), source=int(w.source[i]), time=int(w.time[i]),
                   row=int(w.row[i]), col=int(w.col[i]))
        return out


class CubeRegionChunks:
    """Re-iterable ``(1, C, M)`` chunks of the cube values inside the given windows' footprint.

    Reads one on-disk spatial chunk (all time steps) at a time, so normalisation statistics
    of a training region stream over cubes larger than RAM (each pixel counted once, however
    many windows overlap it).
    """

    def __init__(self, cubes: Sequence[str | os.PathLike], windows: CubeWindows,
                 variables: Sequence[str], block: int = 256) -> None:
        self.cubes = [Path(p) for p in cubes]
        self.windows = windows
        self.variables = tuple(variables)
        self.block = block

    def _footprint(self, src: int, height: int, width: int) -> np.ndarray:
        w = self.windows.subset(self.windows.source == src)
        diff = np.zeros((height + 1, width + 1), np.int64)
        s = w.size
        np.add.at(diff, (w.row, w.col), 1)
        np.add.at(diff, (w.row + s, w.col), -1)
        np.add.at(diff, (w.row, w.col + s), -1)
        np.add.at(diff, (w.row + s, w.col + s), 1)
        return diff.cumsum(0).cumsum(1)[:height, :width] > 0

    def _blocks(self) -> list[tuple[int, int, int]]:
        out = []
        for src in np.unique(self.windows.source):
            for r in range(0, int(self.windows.row.max()) + self.windows.size, self.block):
                for c in range(0, int(self.windows.col.max()) + self.windows.size, self.block):
                    out.append((int(src), r, c))
        return out

    def __len__(self) -> int:
        return len(self._blocks())

    def __iter__(self) -> Iterator[np.ndarray]:
        current, ds, region = None, None, None
        for src, r, c in self._blocks():
            if src != current:
                ds = read_cube(self.cubes[src], chunks=None)
                region = self._footprint(src, ds.sizes[Y], ds.sizes[X])
                current = src
            inside = region[r:r + self.block, c:c + self.block]
            if not inside.any():
                continue
            sel = {Y: slice(r, r + self.block), X: slice(c, c + self.block)}
            values = np.stack([np.asarray(ds[v].isel(sel).values, np.float32)[:, inside]
                               for v in self.variables])
            yield values.reshape(1, len(self.variables), -1)


def cached_statistics(cache: str | os.PathLike | None, key: dict, compute):
    """Return ``compute()``'s JSON-able result, cached in the JSON file ``cache`` under ``key``.

    The key should name everything the result depends on (stores and their modification
    times, variables, windows, options); a changed input gives a new key.
    """
    token = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    path = None if cache is None else Path(cache)
    entries = {}
    if path is not None and path.exists():
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            log.warning("statistics cache %s is unreadable; recomputing", path)
            entries = {}
        if token in entries:
            log.info("statistics from cache %s", path)
            return entries[token]
    result = compute()
    if path is not None:
        entries[token] = result
        write_text_atomic(path, json.dumps(entries, indent=1))
    return result


def store_token(path: str | os.PathLike) -> str:
    """Identity of a zarr store for cache keys: path and newest metadata modification time."""
    path = Path(path)
    mtimes = [p.stat().st_mtime_ns for p in path.glob("**/zarr.json")] or [path.stat().st_mtime_ns]
    return f"{path.resolve()}@{max(mtimes)}"
