"""Export fixed-size patches from cubes to a patch set folder.

The export walks each cube block by block (a group of patch rows/cols over a bounded number
of time steps), so cubes larger than RAM are fine. Every patch is one time step of the chosen
variables over one window; patches with too many invalid pixels are skipped and counted, the
rest have their invalid pixels filled (:func:`fusecube.ml.sar.handle_invalid_values`). The set
is staged under a temporary name and renamed when complete.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from affine import Affine
from odc.geo.geobox import GeoBox

from fusecube.cube import TIME, VH, VV, X, Y, read_cube
from fusecube.errors import PatchError
from fusecube.ml.patches.patch_set import PatchSet
from fusecube.ml.patches.shards import ShardWriter, write_metadata
from fusecube.ml.sar import InvalidCounts, handle_invalid_values
from fusecube.storage.atomic import atomic_path, prepare_output
from fusecube.units import to_db

log = logging.getLogger(__name__)


SAR_VARS = frozenset({VV, VH})


@dataclass(frozen=True)
class PatchExportConfig:
    """What to export and how (all of it is written to ``metadata.json``)."""

    size: int = 256
    """Patch height and width in pixels."""
    stride: int | None = None
    """Step between patch origins (default: ``size``, no overlap)."""
    variables: tuple[str, ...] = (VH,)
    """Cube variables, one channel each, in this order."""
    db: bool = False
    """Convert SAR variables (vv, vh) to dB after filling invalid values."""
    max_invalid_fraction: float = 0.05
    """Skip a patch when more than this share of its values is invalid."""
    fill: Literal["nan", "constant", "median"] = "median"
    """How invalid values of kept patches are filled."""
    fill_value: float = 0.0
    """Fill value for ``fill='constant'``."""
    nodata: float | None = None
    """An extra nodata value treated as invalid."""
    shard_size: int = 256
    """Patches per shard file."""
    block_size: int = 1024
    """Pixels per side of a read block (patch origins grouped by block)."""
    max_block_mb: float = 256.0
    """Memory budget of one read (time steps per read are derived from it)."""
    time_indices: tuple[int, ...] | None = None
    """Export only these time steps (default: all)."""

    @property
    def step(self) -> int:
        """The effective stride."""
        return self.stride or self.size

    def check(self) -> None:
        """Raise :class:`PatchError` for impossible settings."""
        if self.size < 1 or self.step < 1:
            raise PatchError(f"Patch size ({self.size}) and stride ({self.stride}) must be >= 1.")
        if not self.variables:
            raise PatchError("No variables to export; pass e.g. --vars vh.")
        if not 0.0 <= self.max_invalid_fraction <= 1.0:
            raise PatchError(
                f"max_invalid_fraction must be in [0, 1]; got {self.max_invalid_fraction}."
            )
        if self.shard_size < 1:
            raise PatchError(f"shard_size must be >= 1; got {self.shard_size}.")

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        out = asdict(self)
        out["stride"] = self.step
        out["variables"] = list(self.variables)
        out["time_indices"] = None if self.time_indices is None else list(self.time_indices)
        return out


def patch_origins(length: int, size: int, stride: int) -> np.ndarray:
    """Origins of the windows of ``size`` that fit in ``length`` with step ``stride``."""
    return np.arange(0, max(length - size + 1, 0), stride, dtype=np.int64)


def _geobox_dict(gbox: GeoBox) -> dict:
    return {"shape": [int(v) for v in gbox.shape], "affine": list(gbox.affine)[:6],
            "crs": f"EPSG:{gbox.crs.epsg}" if gbox.crs.epsg else gbox.crs.to_wkt()}


def _bboxes(affine: Affine, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """Bounding boxes ``(n, 4)`` = x_min, y_min, x_max, y_max of windows (vectorised)."""
    a, b, c, d, e, f = list(affine)[:6]
    corners_c = np.stack([cols, cols + size, cols, cols + size])
    corners_r = np.stack([rows, rows, rows + size, rows + size])
    xs = a * corners_c + b * corners_r + c
    ys = d * corners_c + e * corners_r + f
    return np.stack([xs.min(0), ys.min(0), xs.max(0), ys.max(0)], axis=1)


def _prepare(patches: np.ndarray, cfg: PatchExportConfig, linear: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, InvalidCounts]:
    """Skip too-invalid patches, fill the rest, convert to dB: (kept patches, keep, counts).

    Works in place on ``patches`` (a fresh copy out of the read block) and touches only the
    patches that have invalid values, so memory stays near one copy of the block.
    """
    bad = ~np.isfinite(patches)
    with np.errstate(invalid="ignore"):
        bad |= (patches <= 0) & linear[None, :, None, None]
    if cfg.nodata is not None:
        bad |= patches == cfg.nodata
    keep = bad.mean(axis=(1, 2, 3)) <= cfg.max_invalid_fraction
    kept = patches if keep.all() else patches[keep]
    bad = bad if keep.all() else bad[keep]
    counts = InvalidCounts()
    for c in range(kept.shape[1]):
        rows = np.flatnonzero(bad[:, c].any(axis=(1, 2)))
        if rows.size:
            filled, n = handle_invalid_values(kept[rows, c], strategy=cfg.fill,
                                              fill_value=cfg.fill_value, nodata=cfg.nodata,
                                              linear=bool(linear[c]))
            kept[rows, c] = filled
            counts = counts + n
        if cfg.db and linear[c]:
            channel = kept[:, c]
            to_db(channel, out=channel)  # in place; 0 (constant fill) -> NaN
    return kept, keep, counts


def export_patches(
    cubes: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: PatchExportConfig | None = None,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PatchSet:
    """Export fixed-size patches from one or more cubes to a patch set folder.

    Args:
        cubes: Cube zarr store(s); each becomes one ``source`` in the metadata.
        out_dir: Folder of the patch set (shards + ``metadata.json``); written atomically.
        config: What to export (default: 256 px vh patches, no overlap).
        overwrite: Replace an existing patch set at ``out_dir``.
        progress: Called with (blocks done, blocks total).

    Returns:
        The written patch set.
    """
    cfg = config or PatchExportConfig()
    cfg.check()
    paths = [Path(cubes)] if isinstance(cubes, str | os.PathLike) else [Path(p) for p in cubes]
    out_dir = Path(out_dir)
    prepare_output(out_dir, kind="patches")  # the output rule, before any work
    if out_dir.exists() and not overwrite:
        raise PatchError(f"{out_dir} already exists; choose another --out or pass --overwrite.")
    datasets = [read_cube(p, chunks=None) for p in paths]
    plans = [_plan(ds, p, cfg) for ds, p in zip(datasets, paths, strict=True)]
    total = sum(len(plan) for plan in plans)
    if total == 0 or not any(plan for plan in plans):
        shapes = [tuple(ds.sizes[d] for d in (Y, X)) for ds in datasets]
        raise PatchError(
            f"No {cfg.size} x {cfg.size} patch fits in the cube(s) {[str(p) for p in paths]} "
            f"(y, x sizes {shapes}); use a smaller --size."
        )
    with atomic_path(out_dir, folder=True) as staged:
        staged.mkdir()
        writer = ShardWriter(staged, cfg.shard_size)
        invalid = InvalidCounts()
        candidates = skipped = done = 0
        linear = np.array([v in SAR_VARS for v in cfg.variables])
        sources = []
        for src, (ds, path, plan) in enumerate(zip(datasets, paths, plans, strict=True)):
            times = ds[TIME].values
            sources.append({"path": str(path), "geobox": _geobox_dict(ds.odc.geobox),
                            "times": [str(t)[:19] for t in times.astype("datetime64[s]")]})
            affine = ds.odc.geobox.affine
            for rows, cols, t_idx in plan:
                block = _read_block(ds, cfg, rows, cols, t_idx)
                patches, (t_of, r_of, c_of) = _windows(block, cfg, rows, cols, t_idx)
                kept, keep, counts = _prepare(patches, cfg, linear)
                candidates += len(patches)
                skipped += int((~keep).sum())
                invalid = invalid + counts
                t_k, r_k, c_k = t_of[keep], r_of[keep], c_of[keep]
                writer.add(kept, {
                    "source": [src] * len(kept), "time_index": t_k.tolist(),
                    "time": [sources[src]["times"][t] for t in t_k],
                    "row": r_k.tolist(), "col": c_k.tolist(),
                    "bbox": _bboxes(affine, r_k, c_k, cfg.size).round(6).tolist(),
                })
                done += 1
                if progress is not None:
                    progress(done, total)
        writer.close()
        if not writer.shards:
            raise PatchError(
                f"All {candidates} candidate patches had more than "
                f"{cfg.max_invalid_fraction:.0%} invalid values; raise --max-invalid or check "
                f"the variables {list(cfg.variables)}."
            )
        counts = {"candidates": candidates, "written": candidates - skipped,
                  "skipped_invalid": skipped, "invalid_values": invalid.to_dict()}
        write_metadata(staged, shards=writer.shards, table=writer.table, variables=cfg.variables,
                       patch_shape=(len(cfg.variables), cfg.size, cfg.size), sources=sources,
                       preprocessing={"export": cfg.to_dict(), "units": _units(cfg)},
                       counts=counts)
    log.info("exported %d patches (%d skipped) to %s", candidates - skipped, skipped, out_dir)
    return PatchSet.open(out_dir)


def _units(cfg: PatchExportConfig) -> dict[str, str]:
    return {v: ("dB" if cfg.db else "linear") if v in SAR_VARS else "1" for v in cfg.variables}


def _plan(ds, path: Path, cfg: PatchExportConfig
          ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Read units: (patch row origins, patch col origins, time indices), each bounded in memory."""
    missing = [v for v in cfg.variables if v not in ds.data_vars]
    if missing:
        raise PatchError(
            f"Cube {path} has no variable(s) {missing}; it has {sorted(ds.data_vars)}.")
    for v in cfg.variables:
        if ds[v].dims != (TIME, Y, X):
            raise PatchError(
                f"Variable {v!r} of {path} has dims {ds[v].dims}; export needs (time, y, x).")
    n_time = ds.sizes[TIME]
    times = np.arange(n_time) if cfg.time_indices is None else np.asarray(cfg.time_indices)
    if times.size and (times.min() < 0 or times.max() >= n_time):
        raise PatchError(
            f"time_indices {cfg.time_indices} out of range for {n_time} time steps in {path}.")
    rows = patch_origins(ds.sizes[Y], cfg.size, cfg.step)
    cols = patch_origins(ds.sizes[X], cfg.size, cfg.step)
    # bytes per pixel and time step of one read: the block, the windows copied out of it
    # (times the overlap), masks and the shard being assembled
    overlap = max(1.0, (cfg.size / cfg.step) ** 2)
    per_px = len(cfg.variables) * 4 * (1.5 + 2 * overlap)
    budget = cfg.max_block_mb * 2**20
    # prefer whole time series (chunks hold all time) over a large spatial block
    side = int(np.sqrt(budget / (per_px * max(times.size, 1))))
    per_block = max(1, min((min(side, cfg.block_size) - cfg.size) // cfg.step + 1,
                           (cfg.block_size - cfg.size) // cfg.step + 1))
    block_px = ((per_block - 1) * cfg.step + cfg.size) ** 2
    t_batch = max(1, min(times.size, int(budget // (per_px * block_px))))
    plan = []
    for r in range(0, rows.size, per_block):
        for c in range(0, cols.size, per_block):
            for t in range(0, times.size, t_batch):
                plan.append((rows[r:r + per_block], cols[c:c + per_block], times[t:t + t_batch]))
    return plan


def _read_block(ds, cfg: PatchExportConfig, rows: np.ndarray, cols: np.ndarray,
                t_idx: np.ndarray) -> np.ndarray:
    """Read ``(t, C, h, w)`` covering the windows at ``rows`` x ``cols`` (only those chunks)."""
    ys = slice(int(rows[0]), int(rows[-1]) + cfg.size)
    xs = slice(int(cols[0]), int(cols[-1]) + cfg.size)
    parts = [np.asarray(ds[v].isel({TIME: t_idx, Y: ys, X: xs}).values, dtype=np.float32)
             for v in cfg.variables]
    return np.stack(parts, axis=1)


def _windows(block: np.ndarray, cfg: PatchExportConfig, rows: np.ndarray, cols: np.ndarray,
             t_idx: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """All windows of a block as ``(n, C, size, size)`` plus their time/row/col (t-major)."""
    view = np.lib.stride_tricks.sliding_window_view(block, (cfg.size, cfg.size), axis=(2, 3))
    view = view[:, :, :: cfg.step, :: cfg.step][:, :, : rows.size, : cols.size]
    n_t, n_c = view.shape[:2]
    patches = view.transpose(0, 2, 3, 1, 4, 5).reshape(-1, n_c, cfg.size, cfg.size)
    if not patches.flags.writeable:  # reshape kept a view of the read-only window view
        patches = patches.copy()
    t_of, r_of, c_of = (a.ravel() for a in np.meshgrid(t_idx, rows, cols, indexing="ij"))
    return patches, (t_of, r_of, c_of)
