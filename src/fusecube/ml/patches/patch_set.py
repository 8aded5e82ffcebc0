"""Reading a patch set: its metadata, memory-mapped shards, and chunks of selected patches."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from odc.geo.geobox import GeoBox

from fusecube.errors import PatchFileError
from fusecube.ml.patches.shards import FORMAT, METADATA


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


def as_patch_set(patches: PatchSet | str | os.PathLike) -> PatchSet:
    """``patches`` if it is a :class:`PatchSet`, else the patch set opened at that path."""
    return patches if isinstance(patches, PatchSet) else PatchSet.open(patches)
