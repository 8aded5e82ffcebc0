"""The on-disk format of a patch set: ``shard_NNNNN.npy`` files and ``metadata.json``.

``metadata.json`` lists the shard files (count, shape, dtype, sha256), the variables, the
preprocessing applied, the skip counts, each source's GeoBox and one row per patch (source,
time, window row/col, bounding box, shard and offset) from which
:meth:`fusecube.ml.patches.patch_set.PatchSet.geobox` rebuilds the patch's GeoBox.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusecube.storage.atomic import write_text_atomic

FORMAT = "fusecube-patches"


FORMAT_VERSION = 1


METADATA = "metadata.json"


#: Columns of the per-patch table in ``metadata.json``.
PATCH_COLUMNS = ("source", "time", "time_index", "row", "col", "shard", "offset", "bbox")


class _HashingFile:
    """A write-only file wrapper that hashes what passes through (for ``np.save``)."""

    def __init__(self, fh) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.fh.write(data)


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
    return write_text_atomic(out_dir / METADATA, json.dumps(meta, indent=1))
