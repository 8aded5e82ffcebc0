"""Lightning DataModules: wiring only (split → fit preprocessing on train → datasets → loaders).

The parts live elsewhere: splits in :mod:`fusecube.ml.samplers`, statistics in
:mod:`fusecube.ml.sar`, transforms in :mod:`fusecube.ml.transforms`, I/O in
:mod:`fusecube.ml.datasets`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from fusecube.cube import TIME, X, Y, read_cube
from fusecube.errors import PatchError, require
from fusecube.ml.datasets import (
    CubeDataset,
    CubeRegionChunks,
    LazyPatchDataset,
    PatchChunks,
    SARPatchDataset,
    cached_statistics,
    store_token,
)
from fusecube.ml.patches.export import SAR_VARS
from fusecube.ml.patches.patch_set import PatchSet
from fusecube.ml.samplers import SeededShuffle, grid_windows
from fusecube.ml.sar import ClipMethod, NormMethod, SARPreprocessing, fit_preprocessing
from fusecube.ml.transforms import Compose, FillMissing, FlipRotate, Preprocess
from fusecube.splits import (
    Split,
    SplitBy,
    hold_out_dates,
    spatial_block_split,
    with_held_out_dates,
)

torch = require("torch", "ml")
lightning = require("lightning", "ml")
from torch.utils.data import DataLoader  # noqa: E402

log = logging.getLogger(__name__)


def default_stats_cache() -> Path:
    """``$XDG_CACHE_HOME/fusecube/ml-stats.json`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fusecube" / "ml-stats.json"


#: Batches each DataLoader worker prepares ahead (``prefetch_factor``).
PREFETCH_BATCHES = 4
#: Most DataLoader workers chosen by default.
MAX_DEFAULT_WORKERS = 8


class _NullSink:
    """A file-like object that discards what is written (a pickle check without a copy)."""

    def write(self, data) -> int:
        return len(data)


def picklable(dataset) -> bool:
    """Whether ``dataset`` can be sent to DataLoader worker processes (spawn or forkserver)."""
    import pickle

    try:
        pickle.dump(dataset, _NullSink(), protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        return False
    return True


def default_workers(dataset) -> int:
    """DataLoader workers when none are asked for: one per core but one (at most 8).

    One per core but one is the most Lightning suggests, so it does not warn of too few
    workers; each worker opens its own stores. 0 when the dataset cannot be pickled.
    """
    if not picklable(dataset):
        log.info("%s cannot be pickled: loading in the main process", type(dataset).__name__)
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_WORKERS, cores - 1))


def loader_options(dataset, num_workers: int | None, pin_memory: bool) -> dict:
    """``DataLoader`` keyword arguments for ``dataset``.

    Workers (``None``: :func:`default_workers`) kept alive between epochs, each preparing
    :data:`PREFETCH_BATCHES` batches ahead; pinned memory when asked (by default when CUDA
    is there).
    """
    workers = default_workers(dataset) if num_workers is None else int(num_workers)
    options: dict = {"num_workers": workers, "pin_memory": pin_memory}
    if workers > 0:
        options.update(persistent_workers=True, prefetch_factor=PREFETCH_BATCHES)
    return options


class _Loaders:
    """Loader construction shared by the DataModules."""

    batch_size: int
    num_workers: int | None
    pin_memory: bool
    seed: int

    def _loader(self, dataset, *, train: bool) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size,
            sampler=SeededShuffle(len(dataset), self.seed) if train else None,
            drop_last=False, **loader_options(dataset, self.num_workers, self.pin_memory),
        )


class SARDataModule(_Loaders, lightning.LightningDataModule):
    """Patch sets → train/val loaders, split by spatial block (or scene), reproducibly.

    Args:
        patches: Patch set folder (``fusecube patches export``).
        batch_size: Patches per batch.
        num_workers: DataLoader worker processes (each maps its own shards); None: one per
            core but one when the dataset pickles (:func:`default_workers`).
        pin_memory: Pin batches for faster host→GPU copies (default: when CUDA is there).
        lazy: Memory-mapped shards (True) or everything in memory.
        val_fraction: Share of blocks (or scenes) for validation.
        block_size: Split block side in pixels (default 4 patch sizes).
        buffer: Training patches within this many pixels of a validation patch are dropped.
        split_by: ``block`` or ``source``.
        val_dates: Time indices held out: their patches leave training for validation.
        seed: Seed of the split, the shuffle and the augmentation.
        db: Convert to dB before clipping (default: when the shards hold linear SAR values).
        clip_method: ``percentile``, ``fixed``, ``sigma`` or None.
        norm: ``minmax`` ([0, 1] over the clip range) or ``zscore``.
        augment: Random flips and 90° rotations of training patches.
        max_open_shards: Memory maps open per process (lazy mode).
        **clip_options: ``low_pct``, ``high_pct``, ``low``, ``high``, ``k``.
    """

    def __init__(self, patches: str | os.PathLike, *, batch_size: int = 8, num_workers: int | None = None,
                 pin_memory: bool | None = None, lazy: bool = True, val_fraction: float = 0.2,
                 block_size: int | None = None, buffer: int = 0, split_by: SplitBy = "block",
                 val_dates: Sequence[int] | None = None, seed: int = 0, db: bool | None = None,
                 clip_method: ClipMethod | None = "percentile", norm: NormMethod = "minmax",
                 augment: bool = True, max_open_shards: int = 4, **clip_options) -> None:
        super().__init__()
        self.patches = Path(patches)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.lazy, self.augment, self.max_open_shards = lazy, augment, max_open_shards
        self.split_options = {"val_fraction": val_fraction, "block_size": block_size,
                              "buffer": buffer, "by": split_by, "seed": seed}
        self.val_dates = val_dates
        self.db, self.clip_method, self.norm = db, clip_method, norm
        self.clip_options = clip_options
        self.patch_set: PatchSet | None = None
        self.split: Split | None = None
        self.params: SARPreprocessing | None = None
        self.train_dataset = self.val_dataset = None

    def setup(self, stage: str | None = None) -> None:
        """Split, fit the preprocessing on the training patches (streaming), build datasets."""
        if self.split is not None:
            return
        ps = self.patch_set = PatchSet.open(self.patches)
        split = spatial_block_split(ps.column("source"), ps.column("row"), ps.column("col"),
                                    int(ps.meta["patch_shape"][-1]), **self.split_options)
        if self.val_dates is not None:
            n_times = max(len(s["times"]) for s in ps.meta["sources"])
            split = with_held_out_dates(split, ps.column("time_index"),
                                        hold_out_dates(n_times, indices=self.val_dates))
        if split.train.size == 0:
            raise PatchError(f"No training patches left in {self.patches} after the split "
                             f"{split.to_dict()}; lower buffer or val_fraction.")
        self.split = split
        units = ps.meta["preprocessing"].get("units", {})
        db = self.db
        if db is None:
            db = bool(units) and all(v in SAR_VARS and units.get(v) == "linear"
                                     for v in ps.variables)
        self.params = fit_preprocessing(PatchChunks(ps, split.train), db=db,
                                        clip_method=self.clip_method, norm=self.norm,
                                        **self.clip_options)
        base = [Preprocess(self.params)]
        train_tf = Compose(base + [FlipRotate()] if self.augment else base)
        if self.lazy:
            def make(idx, tf):
                return LazyPatchDataset(ps, indices=idx, transform=tf, seed=self.seed,
                                        max_open_shards=self.max_open_shards)
        else:
            def make(idx, tf):
                return SARPatchDataset.from_patch_set(ps, indices=idx, transform=tf, seed=self.seed)
        self.train_dataset = make(split.train, train_tf)
        self.val_dataset = make(split.val, Compose(base))
        log.info("patch split %s", split.to_dict())

    @property
    def preprocessing_params(self) -> dict:
        """The fitted preprocessing and the split that produced it (after :meth:`setup`)."""
        if self.params is None:
            raise PatchError("Call setup() (or let the Trainer do it) before reading "
                             "preprocessing_params.")
        return {**self.params.to_dict(), "split": self.split.to_dict(),
                "variables": self.patch_set.variables}

    def train_dataloader(self) -> DataLoader:
        """Training batches, reshuffled reproducibly each epoch."""
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in patch order."""
        return self._loader(self.val_dataset, train=False)


class CubeDataModule(_Loaders, lightning.LightningDataModule):
    """Zarr cubes → 4-D ``(band, time, y, x)`` sample loaders with streaming, cached statistics.

    Args:
        cubes: Cube zarr stores.
        variables: Input bands.
        targets: Target stores, one per cube (e.g. ``truth.zarr``); None reads targets from
            the cubes.
        target_variables: Target bands, e.g. ``("ndvi_true",)``.
        size: Crop side in pixels.
        time_window: Time steps per sample.
        stride: Pixel step between crops (default ``size``).
        time_stride: Step between time windows (default ``time_window``).
        batch_size: Samples per batch.
        num_workers: DataLoader workers (each opens its own stores); None: one per core but
            one when the dataset pickles (:func:`default_workers`).
        pin_memory: Pin batches (default: when CUDA is there).
        val_fraction: Share of spatial blocks (or cubes) for validation.
        block_size: Split block side in pixels (default 4 crop sizes).
        buffer: Training crops within this many pixels of a validation crop are dropped.
        split_by: ``block`` or ``source``.
        seed: Seed of the split, shuffle and augmentation.
        db: Convert the (SAR) inputs to dB first.
        clip_method: Clip method for the statistics, or None.
        norm: ``zscore`` or ``minmax``.
        augment: Random flips/rotations of training samples (all keys alike).
        stats_cache: JSON cache of the statistics (default :func:`default_stats_cache`;
            None: no file).
        cache_mb: Decoded-chunk cache per loader process in MB (0: none).
        **clip_options: ``low_pct``, ``high_pct``, ``low``, ``high``, ``k``.
    """

    def __init__(self, cubes: Sequence[str | os.PathLike], *,
                 variables: Sequence[str] = ("vv", "vh"),
                 targets: Sequence[str | os.PathLike] | None = None,
                 target_variables: Sequence[str] = (), size: int = 32, time_window: int = 8,
                 stride: int | None = None, time_stride: int | None = None, batch_size: int = 4,
                 num_workers: int | None = None, pin_memory: bool | None = None,
                 val_fraction: float = 0.2,
                 block_size: int | None = None, buffer: int = 0, split_by: SplitBy = "block",
                 seed: int = 0, db: bool = True, clip_method: ClipMethod | None = "percentile",
                 norm: NormMethod = "zscore", augment: bool = True,
                 stats_cache: str | os.PathLike | None = "default", cache_mb: float = 256.0,
                 **clip_options) -> None:
        super().__init__()
        self.cubes = [Path(p) for p in ([cubes] if isinstance(cubes, str | os.PathLike) else cubes)]
        self.targets = None if targets is None else [Path(p) for p in targets]
        self.variables, self.target_variables = tuple(variables), tuple(target_variables)
        if db and not all(v in SAR_VARS for v in self.variables):
            raise PatchError(f"db=True converts every input band, but {self.variables} are not "
                             "all SAR (vv, vh); pass db=False.")
        self.window_options = {"size": size, "time_window": time_window, "stride": stride,
                               "time_stride": time_stride}
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.split_options = {"val_fraction": val_fraction, "block_size": block_size,
                              "buffer": buffer, "by": split_by, "seed": seed}
        self.stats_options = {"db": db, "clip_method": clip_method, "norm": norm, **clip_options}
        self.augment = augment
        self.cache_mb = cache_mb
        self.stats_cache = default_stats_cache() if stats_cache == "default" else stats_cache
        self.split: Split | None = None
        self.params: SARPreprocessing | None = None
        self.train_dataset = self.val_dataset = None

    def setup(self, stage: str | None = None) -> None:
        """Windows → split → statistics on the training region (streamed, cached) → datasets."""
        if self.split is not None:
            return
        shapes = []
        for cube in self.cubes:
            ds = read_cube(cube, chunks=None)
            shapes.append((ds.sizes[TIME], ds.sizes[Y], ds.sizes[X]))
        windows = grid_windows(shapes, **self.window_options)
        split = spatial_block_split(windows.source, windows.row, windows.col, windows.size,
                                    **self.split_options)
        if split.train.size == 0:
            raise PatchError(f"No training windows left after the split {split.to_dict()}; "
                             "lower buffer or val_fraction.")
        self.split = split
        train = windows.subset(split.train)
        key = {"stores": [store_token(p) for p in self.cubes], "variables": self.variables,
               "train": [train.source.tolist(), train.row.tolist(), train.col.tolist()],
               "size": windows.size, "options": self.stats_options}
        params = cached_statistics(self.stats_cache, key, lambda: fit_preprocessing(
            CubeRegionChunks(self.cubes, train, self.variables), **self.stats_options).to_dict())
        self.params = SARPreprocessing.from_dict(params)
        keys = ("image", "mask") + (("target", "target_mask") if self.target_variables else ())
        base = [Preprocess(self.params, channel_axis=-4), FillMissing()]
        train_tf = Compose(base + [FlipRotate(keys=keys)] if self.augment else base)
        common = {"variables": self.variables, "targets": self.targets,
                  "target_variables": self.target_variables, "seed": self.seed,
                  "cache_mb": self.cache_mb}
        self.train_dataset = CubeDataset(self.cubes, train, transform=train_tf, **common)
        self.val_dataset = CubeDataset(self.cubes, windows.subset(split.val),
                                       transform=Compose(base), **common)
        log.info("cube window split %s", split.to_dict())

    @property
    def preprocessing_params(self) -> dict:
        """The fitted statistics and the split (after :meth:`setup`)."""
        if self.params is None:
            raise PatchError("Call setup() before reading preprocessing_params.")
        return {**self.params.to_dict(), "split": self.split.to_dict(),
                "variables": list(self.variables)}

    def train_dataloader(self) -> DataLoader:
        """Training samples, reshuffled reproducibly each epoch."""
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation samples in window order."""
        return self._loader(self.val_dataset, train=False)



#: The patch DataModule under its role name (TorchGeo-style).
PatchDataModule = SARDataModule
