"""Data wiring of the cube model: the cubes under ``zarr_root`` as windows, split by blocks.

:class:`CubeFusionDataModule` finds the cubes and reuses
:class:`~fusecube.ml.datamodules.CubeDataModule` (streaming windows, spatial-block split,
statistics fitted on training windows). Its state (statistics, split, content hash of the
cubes) goes into every checkpoint, so ``predict`` uses the training statistics and a result
names exactly the data that produced it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fusecube.cube import NDVI, TIME, VH, VV, X, Y, read_cube
from fusecube.errors import CubeModelError
from fusecube.ml.datamodules import CubeDataModule
from fusecube.ml.datasets import CubeDataset
from fusecube.ml.samplers import CubeWindows
from fusecube.ml.sar import SARPreprocessing
from fusecube.ml.transforms import Compose, FillMissing, Preprocess

log = logging.getLogger(__name__)


def find_cubes(zarr_root: str | os.PathLike, pattern: str = "**/cube.zarr") -> list[Path]:
    """Cube stores under ``zarr_root`` (sorted), or ``zarr_root`` itself when it is one."""
    root = Path(zarr_root)
    if (root / "zarr.json").exists():
        return [root]
    if not root.is_dir():
        raise CubeModelError(f"--data.zarr_root {root} does not exist; give a folder holding cube "
                             "stores (e.g. made by `fusecube convert` or `fusecube synth`) or one store.")
    found = sorted(p for p in root.glob(pattern) if (p / "zarr.json").exists())
    if not found:
        raise CubeModelError(f"No cube matching {pattern!r} under {root}; convert inputs with "
                             "`fusecube convert IN --out ROOT/NAME/cube.zarr` or pass --data.pattern.")
    return found


def covering_windows(shapes: Sequence[tuple[int, int, int]], *, size: int, time_window: int,
                     stride: int, time_stride: int) -> CubeWindows:
    """Windows that cover every pixel and date of each cube (the last ones snapped to the edge)."""
    def starts(n: int, w: int, step: int) -> np.ndarray:
        if n < w:
            raise CubeModelError(f"A cube of {n} along one axis is smaller than the window {w}; use "
                                 "a smaller --data.size / --data.time_window.")
        return np.unique(np.append(np.arange(0, n - w + 1, step), n - w))

    parts = []
    for src, (n_t, h, w) in enumerate(shapes):
        t, r, c = (a.ravel() for a in np.meshgrid(starts(n_t, time_window, time_stride),
                                                  starts(h, size, stride), starts(w, size, stride),
                                                  indexing="ij"))
        parts.append((np.full(t.size, src), t, r, c))
    s, t, r, c = (np.concatenate([p[i] for p in parts]).astype(np.int64) for i in range(4))
    return CubeWindows(s, t, r, c, size, time_window)


class CubeFusionDataModule(CubeDataModule):
    """Cubes under ``zarr_root`` → windows of S1 (vv, vh) and observed NDVI, split by blocks.

    Args:
        zarr_root: A folder of cube stores (searched with ``pattern``) or one store.
        pattern: Glob of the stores under ``zarr_root``.
        size: Window side in pixels.
        time_window: Time steps per window.
        stride: Pixel step between training windows (default ``size``).
        time_stride: Step between time windows (default ``time_window``).
        predict_overlap: Overlap in pixels of prediction windows (blended).
        batch_size: Windows per batch.
        num_workers: DataLoader workers (None: one per core but one, see
            :func:`~fusecube.ml.datamodules.default_workers`).
        val_fraction: Share of spatial blocks held out for validation.
        block_size: Split block side in pixels (default 4 window sizes).
        buffer: Training windows within this many pixels of a validation window are dropped.
        seed: Seed of the split, shuffle and augmentation.
        augment: Random flips/rotations of training windows.
        stats_cache: JSON cache of the SAR statistics (``default``: the user cache; None: none).
        cache_mb: Decoded-chunk cache per loader process, MB.
        hash_data: Record a content hash of the cubes (reads every byte once per ``fit``).
    """

    def __init__(self, zarr_root: str, *, pattern: str = "**/cube.zarr", size: int = 32,
                 time_window: int = 16, stride: int | None = None, time_stride: int | None = None,
                 predict_overlap: int = 8, batch_size: int = 4, num_workers: int | None = None,
                 val_fraction: float = 0.2, block_size: int | None = None, buffer: int = 0,
                 seed: int = 0, augment: bool = True, stats_cache: str | None = "default",
                 cache_mb: float = 256.0, hash_data: bool = True) -> None:
        self.zarr_root = Path(zarr_root)
        cubes = find_cubes(zarr_root, pattern)
        super().__init__(cubes, variables=(VV, VH), target_variables=(NDVI,), size=size,
                         time_window=time_window, stride=stride, time_stride=time_stride,
                         batch_size=batch_size, num_workers=num_workers, val_fraction=val_fraction,
                         block_size=block_size, buffer=buffer, seed=seed, db=True,
                         clip_method="percentile", norm="zscore", augment=augment,
                         stats_cache=stats_cache, cache_mb=cache_mb)
        self.predict_overlap = predict_overlap
        self.hash_data = hash_data
        self.data_manifest: dict | None = None
        self.restored: dict | None = None
        self.predict_dataset: CubeDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Fit: split, statistics and the data hash; predict: nothing until statistics are known."""
        if stage == "predict":
            return
        super().setup(stage)
        if self.hash_data and self.data_manifest is None:
            from fusecube.storage.manifest import dataset_manifest

            self.data_manifest = dataset_manifest(self.cubes)
        if self.restored is not None:
            self._use_restored()

    def state_dict(self) -> dict:
        """Statistics, split and data hash: saved in every checkpoint."""
        if self.params is None:
            return {}
        return {"preprocessing": self.params.to_dict(), "split": self.split.to_dict(),
                "data_manifest": self.data_manifest, "cubes": [str(p) for p in self.cubes],
                "variables": list(self.variables)}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the training statistics (a checkpoint's), used for every later batch."""
        if not state_dict:
            return
        self.restored = state_dict
        self._use_restored()

    def _use_restored(self) -> None:
        state = self.restored
        self.params = SARPreprocessing.from_dict(state["preprocessing"])
        base = Compose([Preprocess(self.params, channel_axis=-4), FillMissing()])
        for dataset in (self.val_dataset, self.predict_dataset):
            if dataset is not None:
                dataset.transform = base
        if self.train_dataset is not None:
            self.train_dataset.transform.transforms[0] = Preprocess(self.params, channel_axis=-4)
        old = (state.get("data_manifest") or {}).get("digest")
        new = (self.data_manifest or {}).get("digest")
        if old and new and old != new:
            log.warning("the cubes under %s (digest %s) differ from those the checkpoint was trained "
                        "on (digest %s); using the checkpoint's statistics", self.zarr_root, new[:12],
                        old[:12])

    def predict_dataloader(self):
        """Windows covering every pixel and date of every cube, with the training statistics."""
        if self.params is None:
            log.warning("no checkpoint statistics: fitting them on the training windows of %s",
                        self.zarr_root)
            super().setup("fit")
        shapes = []
        for cube in self.cubes:
            ds = read_cube(cube, chunks=None)
            shapes.append((ds.sizes[TIME], ds.sizes[Y], ds.sizes[X]))
        size, tw = self.window_options["size"], self.window_options["time_window"]
        windows = covering_windows(shapes, size=size, time_window=tw,
                                   stride=max(1, size - self.predict_overlap),
                                   time_stride=max(1, tw - min(self.predict_overlap, tw // 2)))
        self.predict_shapes = shapes
        self.predict_dataset = CubeDataset(
            self.cubes, windows, variables=self.variables, target_variables=self.target_variables,
            transform=Compose([Preprocess(self.params, channel_axis=-4), FillMissing()]),
            seed=self.seed, cache_mb=self.cache_mb)
        return self._loader(self.predict_dataset, train=False)
