"""Chunk integrity of zarr v3 stores: every chunk a fusecube store should hold is there, whole.

zarr reads a chunk file that is not there as the fill value (NaN), so a store that lost a file
(an interrupted copy, a sync that skipped it) would silently read as "not observed". fusecube's
writers therefore write every chunk, empty ones included (``write_empty_chunks=True``), and say
so in the store's attributes (:data:`COMPLETE_ATTR`). For such a store the chunk grid in each
array's ``zarr.json`` is the list of files that must exist: :func:`check_chunks` lists them
(names and sizes only, no data is read) and names the first missing or truncated ones. A chunk
cut short somewhere in its middle is only found when it is decoded:
:func:`raise_if_bad_chunk` turns such a decode failure into an error naming the variable and
the chunk. Stores written by other tools (no marker) may leave empty chunks out and are not
checked; ``fusecube verify-cube`` checks converted stores file by file against their manifest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np

from fusecube.errors import InputFileError

#: Store attribute saying that the writer wrote every chunk of every array.
COMPLETE_ATTR = "fusecube_chunks"
COMPLETE_VALUE = "all-written"
#: Keyword argument of ``Dataset.to_zarr`` that makes the promise true.
WRITE_ALL_CHUNKS = {"write_empty_chunks": True}

#: Shortest possible encoded chunk per compressor (a frame header); shorter files are truncated.
_MIN_BYTES = {"zstd": 9, "blosc": 16, "gzip": 18}
_SHOWN = 3


@dataclass(frozen=True)
class BadChunk:
    """A chunk file that is missing, truncated or cannot be decoded."""

    variable: str
    index: tuple[int, ...]
    path: Path
    problem: str

    def describe(self) -> str:
        """``variable 'ndvi' chunk (0, 1, 2) (file .../c/0/1/2) is missing``."""
        return f"variable {self.variable!r} chunk {self.index} (file {self.path}) {self.problem}"


def complete_attrs() -> dict[str, str]:
    """The attributes a writer adds when it writes every chunk (with :data:`WRITE_ALL_CHUNKS`)."""
    return {COMPLETE_ATTR: COMPLETE_VALUE}


def _read_json(path: Path) -> dict | None:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # unreadable metadata is the opener's error to report
    return meta if isinstance(meta, dict) else None


def is_complete_store(store: str | os.PathLike) -> bool:
    """Whether ``store`` is a zarr v3 store whose writer promised every chunk."""
    meta = _read_json(Path(store) / "zarr.json")
    return bool(meta) and (meta.get("attributes") or {}).get(COMPLETE_ATTR) == COMPLETE_VALUE


def _arrays(store: Path) -> Iterator[tuple[str, dict]]:
    for meta_path in sorted(store.glob("*/zarr.json")):
        meta = _read_json(meta_path)
        if meta and meta.get("node_type") == "array" and "chunk_grid" in meta:
            yield meta_path.parent.name, meta


def _grid(meta: dict) -> tuple[int, ...]:
    chunk_shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
    return tuple(-(-size // chunk) for size, chunk in zip(meta["shape"], chunk_shape, strict=True))


def _key(meta: dict, index: Sequence[int]) -> str:
    """The chunk's file name relative to its array folder (zarr v3 key encodings)."""
    encoding = meta.get("chunk_key_encoding") or {"name": "default"}
    separator = (encoding.get("configuration") or {}).get(
        "separator", "/" if encoding["name"] == "default" else ".")
    parts = [str(i) for i in index]
    if encoding["name"] == "default":
        return separator.join(["c", *parts])
    return separator.join(parts) if parts else "0"


def _min_bytes(meta: dict) -> int:
    codecs = [c.get("name", "") for c in meta.get("codecs") or [] if isinstance(c, dict)]
    sizes = [_MIN_BYTES[name] for name in codecs if name in _MIN_BYTES]
    if sizes:
        return max(sizes)
    if codecs == ["bytes"]:  # uncompressed: a chunk is exactly its bytes
        try:
            itemsize = np.dtype(meta["data_type"]).itemsize
        except TypeError:
            return 1
        return itemsize * prod(meta["chunk_grid"]["configuration"]["chunk_shape"])
    return 1


def _indices(grid: tuple[int, ...], window: Mapping[str, slice] | None, dims: Sequence[str],
             chunk_shape: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Chunk indices of the grid, or of those intersecting ``window`` (per dimension name)."""
    ranges = []
    for dim, count, chunk in zip(dims, grid, chunk_shape, strict=True):
        part = (window or {}).get(dim)
        if part is None:
            ranges.append(range(count))
        else:
            start, stop, _ = part.indices(count * chunk)
            ranges.append(range(start // chunk, max(start, stop - 1) // chunk + 1))
    for key in np.ndindex(*[len(r) for r in ranges]):
        yield tuple(r[i] for r, i in zip(ranges, key, strict=True))


def find_bad_chunks(store: str | os.PathLike, *, window: Mapping[str, slice] | None = None,
                    limit: int = _SHOWN) -> tuple[list[BadChunk], int]:
    """Chunk files that are missing or too short to be a chunk (no data is decoded).

    Args:
        store: A zarr v3 store.
        window: Only chunks intersecting these index ranges (by dimension name).
        limit: How many bad chunks to describe.

    Returns:
        Up to ``limit`` bad chunks, and the number of bad chunks in all.
    """
    store = Path(store)
    found: list[BadChunk] = []
    total = 0
    for name, meta in _arrays(store):
        dims = meta.get("dimension_names") or [None] * len(meta["shape"])
        chunk_shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
        shortest = _min_bytes(meta)
        for index in _indices(_grid(meta), window, dims, chunk_shape):
            path = store / name / _key(meta, index)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                problem = "is missing"
            else:
                if size >= shortest:
                    continue
                problem = f"is truncated ({size} bytes)"
            total += 1
            if len(found) < limit:
                found.append(BadChunk(name, tuple(int(i) for i in index), path, problem))
    return found, total


def _message(store: Path, bad: list[BadChunk], total: int, fix: str) -> str:
    more = f"; {total} chunk files in all are missing or truncated" if total > len(bad) else ""
    return (f"Store {store}: " + "; ".join(b.describe() for b in bad) + more
            + f"; the store is incomplete or damaged: {fix}")


DEFAULT_FIX = ("copy or write it again (`fusecube verify-cube` checks a converted cube "
               "file by file).")


def check_chunks(store: str | os.PathLike, *, window: Mapping[str, slice] | None = None,
                 fix: str = DEFAULT_FIX) -> None:
    """Raise if a store written by fusecube lacks a chunk file or holds a truncated one.

    Cheap: lists the chunk files of every array (names and sizes). Stores without the
    :data:`COMPLETE_ATTR` marker (written by other tools) are not checked.

    Args:
        store: A zarr v3 store.
        window: Only chunks intersecting these index ranges (e.g. the finished blocks).
        fix: What the user should do, ending the message.

    Raises:
        InputFileError: Naming the variable, the chunk index and the file of the first bad
            chunks, and how many there are.
    """
    store = Path(store)
    if not is_complete_store(store):
        return
    bad, total = find_bad_chunks(store, window=window)
    if bad:
        raise InputFileError(_message(store, bad, total, fix))


def _undecodable(store: Path, window: Mapping[str, slice] | None) -> BadChunk | None:
    """The first chunk (within ``window``) that zarr cannot decode."""
    import zarr

    for name, meta in _arrays(store):
        dims = meta.get("dimension_names") or [None] * len(meta["shape"])
        chunk_shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
        try:
            array = zarr.open_array(store / name, mode="r")
        except Exception:  # noqa: BLE001 - metadata zarr cannot open: the opener's error
            continue
        for index in _indices(_grid(meta), window, dims, chunk_shape):
            try:
                array.get_block_selection(index)
            except Exception as exc:  # noqa: BLE001 - codecs raise many types
                return BadChunk(name, tuple(int(i) for i in index),
                                store / name / _key(meta, index),
                                f"cannot be decoded ({type(exc).__name__}: {' '.join(str(exc).split())})")
    return None


def raise_if_bad_chunk(store: str | os.PathLike | None, error: BaseException, *,
                       window: Mapping[str, slice] | None = None,
                       fix: str = DEFAULT_FIX) -> None:
    """After a failed read of ``store``: raise an error naming the chunk that caused it.

    Decodes the chunks (within ``window``) one by one, so only call it when a read failed.
    Returns quietly when ``store`` is not a zarr store or every chunk decodes (the failure had
    another cause: re-raise it).

    Raises:
        InputFileError: Naming the variable, chunk index and file, from ``error``.
    """
    if store is None or not (Path(store) / "zarr.json").is_file():
        return
    store = Path(store)
    bad, total = find_bad_chunks(store, window=window) if is_complete_store(store) else ([], 0)
    if not bad:
        found = _undecodable(store, window)
        bad, total = ([found], 1) if found else ([], 0)
    if bad:
        raise InputFileError(_message(store, bad, total, fix)) from error
