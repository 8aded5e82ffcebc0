"""Fixed-size patches from cubes to ``.npy`` shards ``(N, C, H, W)`` float32 + ``metadata.json``.

The export walks each cube block by block (a group of patch rows/cols over a bounded number
of time steps), so cubes larger than RAM are fine. Every patch is one time step of the chosen
variables over one window; patches with too many invalid pixels are skipped and counted, the
rest have their invalid pixels filled (:func:`fusecube.ml.sar.handle_invalid_values`).

``metadata.json`` lists the shard files (count, shape, dtype, sha256), the variables, the
preprocessing applied, the skip counts, each source's GeoBox and one row per patch (source,
time, window row/col, bounding box, shard and offset) from which :meth:`PatchSet.geobox`
rebuilds the patch's GeoBox. The set is written under a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from affine import Affine
from odc.geo.geobox import GeoBox

from fusecube.cube import TIME, VH, VV, X, Y, read_cube, replace_path
from fusecube.errors import PatchError, PatchFileError
from fusecube.ml.sar import InvalidCounts, handle_invalid_values

log = logging.getLogger(__name__)

FORMAT = "fusecube-patches"
FORMAT_VERSION = 1
METADATA = "metadata.json"
SAR_VARS = frozenset({VV, VH})
#: Columns of the per-patch table in ``metadata.json``.
PATCH_COLUMNS = ("source", "time", "time_index", "row", "col", "shard", "offset", "bbox")


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


class _HashingFile:
    """A write-only file wrapper that hashes what passes through (for ``np.save``)."""

    def __init__(self, fh) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.fh.write(data)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 hex digest of a file, read in chunks."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            sha.update(block)
    return sha.hexdigest()


@dataclass
class ShardWriter:
    """Buffers patches and writes them as ``shard_NNNNN.npy`` files of ``shard_size`` patches.

    Use :meth:`add` with patches and their table rows, then :meth:`close`; the shard list and
    the patch table then go to :func:`write_metadata`.
    """

    out_dir: Path
    """Folder the shards are written to."""
    shard_size: int
    """Patches per shard (the last shard may hold fewer)."""
    shards: list[dict] = field(default_factory=list)
    """One entry per written shard: file, count, shape, dtype, sha256."""
    table: dict[str, list] = field(default_factory=lambda: {k: [] for k in PATCH_COLUMNS})
    """Per-patch rows (columnar)."""
    _buffer: list[np.ndarray] = field(default_factory=list)
    _buffered: int = 0

    def add(self, patches: np.ndarray, rows: dict[str, Sequence]) -> None:
        """Queue ``patches`` ``(n, C, H, W)`` with their table ``rows`` (all but shard/offset)."""
        n = len(patches)
        if n == 0:
            return
        shard0 = len(self.shards)
        position = self._buffered + np.arange(n)
        self.table["shard"] += (shard0 + position // self.shard_size).tolist()
        self.table["offset"] += (position % self.shard_size).tolist()
        for key in PATCH_COLUMNS:
            if key not in ("shard", "offset"):
                self.table[key] += list(rows[key])
        self._buffer.append(np.ascontiguousarray(patches, dtype=np.float32))
        self._buffered += n
        while self._buffered >= self.shard_size:
            self._flush(self.shard_size)

    def _flush(self, n: int) -> None:
        """Write the first ``n`` buffered patches as one shard, piece by piece (no concatenation)."""
        pieces, taken = [], 0
        while taken < n:
            piece = self._buffer[0]
            k = min(len(piece), n - taken)
            pieces.append(piece[:k])
            if k == len(piece):
                self._buffer.pop(0)
            else:
                self._buffer[0] = piece[k:]
            taken += k
        self._buffered -= n
        shape = (n, *pieces[0].shape[1:])
        name = f"shard_{len(self.shards):05d}.npy"
        with open(self.out_dir / name, "wb") as fh:
            hashing = _HashingFile(fh)
            np.lib.format.write_array_header_1_0(
                hashing, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                          "fortran_order": False, "shape": shape})
            for piece in pieces:
                hashing.write(memoryview(np.ascontiguousarray(piece)).cast("B"))
        self.shards.append({"file": name, "count": int(n), "shape": list(shape),
                            "dtype": "float32", "sha256": hashing.sha.hexdigest()})

    def close(self) -> None:
        """Write what is still buffered as a last, shorter shard."""
        if self._buffered:
            self._flush(self._buffered)


def write_metadata(out_dir: Path, *, shards: list[dict], table: dict[str, list],
                   variables: Sequence[str], patch_shape: Sequence[int], sources: list[dict],
                   preprocessing: dict, counts: dict) -> Path:
    """Write ``metadata.json`` for a patch set (see the module docstring for the fields)."""
    meta = {
        "format": FORMAT, "version": FORMAT_VERSION, "dtype": "float32", "layout": "NCHW",
        "variables": list(variables), "patch_shape": list(patch_shape),
        "count": int(sum(s["count"] for s in shards)), "shards": shards,
        "sources": sources, "preprocessing": preprocessing, "counts": counts,
        "patches": table,
    }
    path = out_dir / METADATA
    tmp = path.with_name(f".{METADATA}.tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, path)
    return path


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
            with np.errstate(divide="ignore", invalid="ignore"):
                np.log10(channel, out=channel)
            channel *= np.float32(10.0)
            channel[~np.isfinite(channel)] = np.nan  # as to_db: 0 (constant fill) -> NaN
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
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        writer = ShardWriter(tmp, cfg.shard_size)
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
        write_metadata(tmp, shards=writer.shards, table=writer.table, variables=cfg.variables,
                       patch_shape=(len(cfg.variables), cfg.size, cfg.size), sources=sources,
                       preprocessing={"export": cfg.to_dict(), "units": _units(cfg)},
                       counts=counts)
        replace_path(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
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


@dataclass(frozen=True)
class PatchSet:
    """A patch set on disk: its folder and parsed ``metadata.json``."""

    root: Path
    """Folder holding the shards and ``metadata.json``."""
    meta: dict
    """The parsed metadata."""

    @classmethod
    def open(cls, path: str | os.PathLike) -> PatchSet:
        """Open a patch set folder (or its ``metadata.json``)."""
        path = Path(path)
        meta_path = path if path.suffix == ".json" else path / METADATA
        if not meta_path.exists():
            raise PatchFileError(
                f"No {METADATA} at {meta_path}; export patches first with "
                "`fusecube patches export`."
            )
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise PatchFileError(
                f"{meta_path} is not readable JSON ({exc}); export again.") from exc
        if meta.get("format") != FORMAT:
            raise PatchFileError(f"{meta_path} is not a fusecube patch set "
                                 f"(format={meta.get('format')!r}).")
        return cls(meta_path.parent, meta)

    @property
    def count(self) -> int:
        """Number of patches."""
        return int(self.meta["count"])

    @property
    def variables(self) -> list[str]:
        """Channel names."""
        return list(self.meta["variables"])

    @property
    def shard_paths(self) -> list[Path]:
        """Shard files in order."""
        return [self.root / s["file"] for s in self.meta["shards"]]

    @property
    def shard_counts(self) -> np.ndarray:
        """Patches per shard (from the metadata)."""
        return np.array([s["count"] for s in self.meta["shards"]], dtype=np.int64)

    def column(self, name: str) -> np.ndarray:
        """One column of the per-patch table as an array."""
        return np.asarray(self.meta["patches"][name])

    def geobox(self, index: int) -> GeoBox:
        """The GeoBox of patch ``index`` (its window of the source cube's grid)."""
        table = self.meta["patches"]
        src = self.meta["sources"][table["source"][index]]["geobox"]
        gbox = GeoBox(tuple(src["shape"]), Affine(*src["affine"]), src["crs"])
        size = self.meta["patch_shape"][-1]
        row, col = table["row"][index], table["col"][index]
        return gbox[row:row + size, col:col + size]


def open_shard(patch_set: PatchSet, k: int) -> np.ndarray:
    """Memory-map shard ``k`` read-only, checking it against the metadata."""
    entry = patch_set.meta["shards"][k]
    path = patch_set.root / entry["file"]
    try:
        arr = np.load(path, mmap_mode="r")
    except FileNotFoundError as exc:
        raise PatchFileError(f"Shard {path} is missing; run `fusecube patches verify "
                             f"{patch_set.root}` and export again.") from exc
    except (OSError, ValueError) as exc:
        raise PatchFileError(
            f"Shard {path} is not a readable .npy file ({exc}); export again.") from exc
    if list(arr.shape) != list(entry["shape"]) or str(arr.dtype) != entry["dtype"]:
        raise PatchFileError(
            f"Shard {path} holds {arr.dtype} {tuple(arr.shape)} but the metadata says "
            f"{entry['dtype']} {tuple(entry['shape'])}; run `fusecube patches verify` and "
            "export again."
        )
    return arr


class PatchChunks:
    """Re-iterable chunks ``(n, C, H, W)`` of selected patches, read shard by shard.

    For streaming statistics (:func:`fusecube.ml.sar.fit_preprocessing`) over a split
    without loading it: one chunk and one memory map are held at a time.

    Args:
        patches: The patch set.
        indices: Patch indices to read.
        chunk_size: Patches per chunk at most.
        sort: Read in index order (sequential I/O); False keeps the order of ``indices``.
    """

    def __init__(self, patches: PatchSet | str | os.PathLike, indices: Sequence[int], *,
                 chunk_size: int = 256, sort: bool = True) -> None:
        self.patch_set = as_patch_set(patches)
        idx = np.asarray(indices, dtype=np.int64)
        self.indices = np.sort(idx) if sort else idx
        self.chunk_size = chunk_size
        self.starts = np.concatenate([[0], np.cumsum(self.patch_set.shard_counts)])

    def __len__(self) -> int:
        return -(-self.indices.size // self.chunk_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        shards = np.searchsorted(self.starts, self.indices, side="right") - 1
        offsets = self.indices - self.starts[shards]
        for begin in range(0, self.indices.size, self.chunk_size):
            sh = shards[begin:begin + self.chunk_size]
            off = offsets[begin:begin + self.chunk_size]
            out = None
            for k in np.unique(sh):
                sel = sh == k
                part = np.asarray(open_shard(self.patch_set, int(k))[off[sel]])
                if out is None:
                    out = np.empty((sh.size, *part.shape[1:]), np.float32)
                out[sel] = part
            yield out


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a patch set."""

    kind: str
    """``missing``, ``unreadable``, ``shape``, ``dtype``, ``count``, ``nan``, ``hash``, ``table``."""
    file: str
    """The shard (or ``metadata.json``) concerned."""
    message: str
    """What is wrong and what to do."""


@dataclass
class VerifyReport:
    """Result of :func:`verify_patch_files`."""

    root: Path
    """The patch set folder."""
    shards_checked: int = 0
    """Number of shards listed in the metadata."""
    problems: list[Problem] = field(default_factory=list)
    """Everything found, in shard order."""

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    def kinds(self) -> set[str]:
        """The kinds of problems found."""
        return {p.kind for p in self.problems}

    def summary(self) -> str:
        """A human-readable report, one line per problem."""
        if self.ok:
            return f"{self.root}: {self.shards_checked} shards OK"
        lines = [f"{self.root}: {len(self.problems)} problem(s) in {self.shards_checked} shards"]
        lines += [f"  [{p.kind}] {p.file}: {p.message}" for p in self.problems]
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        """Raise :class:`PatchFileError` with the summary when something is wrong."""
        if not self.ok:
            raise PatchFileError(self.summary() + "\nExport the patches again.")


def verify_patch_files(metadata: PatchSet | str | os.PathLike, *, check_hash: bool = True,
                       check_nan: bool = True, chunk_size: int = 64) -> VerifyReport:
    """Check a patch set against its metadata: files, shapes, dtypes, counts, NaN, hashes.

    Args:
        metadata: Patch set folder, its ``metadata.json``, or an open :class:`PatchSet`.
        check_hash: Recompute each shard's sha256 (reads every byte).
        check_nan: Scan each shard for NaN (streams through a memory map).
        chunk_size: Patches per NaN-scan step.

    Returns:
        The report; :meth:`VerifyReport.raise_if_failed` turns problems into an error.
    """
    patch_set = as_patch_set(metadata)
    meta = patch_set.meta
    report = VerifyReport(patch_set.root, len(meta["shards"]))
    add = report.problems.append
    patch_shape = list(meta["patch_shape"])
    total = sum(int(s["count"]) for s in meta["shards"])
    if total != int(meta["count"]):
        add(Problem("count", "metadata.json",
                    f"shard counts add up to {total} but count is {meta['count']}"))
    rows = {k: len(v) for k, v in meta["patches"].items()}
    if any(n != int(meta["count"]) for n in rows.values()):
        add(Problem("table", "metadata.json",
                    f"patch table lengths {rows} != count {meta['count']}"))
    for entry in meta["shards"]:
        name, path = entry["file"], patch_set.root / entry["file"]
        if not path.exists():
            add(Problem("missing", name, "file not found"))
            continue
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            add(Problem("unreadable", name, f"not a readable .npy file ({exc})"))
            continue
        if str(arr.dtype) != entry["dtype"] or str(arr.dtype) != meta["dtype"]:
            add(Problem("dtype", name, f"dtype {arr.dtype}, metadata says {entry['dtype']}"))
        if list(arr.shape[1:]) != patch_shape or list(arr.shape) != list(entry["shape"]):
            add(Problem("shape", name, f"shape {tuple(arr.shape)}, metadata says "
                                       f"{tuple(entry['shape'])} (patches {tuple(patch_shape)})"))
        if arr.shape and arr.shape[0] != int(entry["count"]):
            add(Problem("count", name, f"{arr.shape[0]} patches, metadata says {entry['count']}"))
        if check_nan and arr.dtype.kind == "f":
            n_nan = sum(int(np.isnan(arr[i:i + chunk_size]).sum())
                        for i in range(0, arr.shape[0], chunk_size))
            if n_nan:
                add(Problem("nan", name, f"{n_nan} NaN values"))
        del arr
        if check_hash:
            digest = file_sha256(path)
            if digest != entry["sha256"]:
                add(Problem("hash", name, f"sha256 {digest[:12]}..., metadata says "
                                          f"{entry['sha256'][:12]}... (file changed or corrupt)"))
    for p in report.problems:
        log.warning("patch set %s: [%s] %s: %s", patch_set.root, p.kind, p.file, p.message)
    return report


def as_patch_set(patches: PatchSet | str | os.PathLike) -> PatchSet:
    """``patches`` if it is a :class:`PatchSet`, else the patch set opened at that path."""
    return patches if isinstance(patches, PatchSet) else PatchSet.open(patches)
