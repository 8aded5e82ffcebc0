"""The fusecube data model: names, schema checks and atomic zarr read/write.

A cube is an ``xarray.Dataset`` with dims ``(time, y, x)``, float32 variables, NaN for
missing values, ``time`` as datetime64 (period centre) and its grid carried as an odc-geo
``GeoBox`` (``ds.odc.geobox``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import xarray as xr
from odc.geo.geobox import GeoBox

from fusecube.errors import CubeSchemaError, FusecubeError, InputFileError
from fusecube.storage.atomic import atomic_path
from fusecube.storage.chunks import (
    COMPLETE_ATTR,
    WRITE_ALL_CHUNKS,
    check_chunks,
    complete_attrs,
    raise_if_bad_chunk,
)

TIME, Y, X = "time", "y", "x"
DIMS: tuple[str, str, str] = (TIME, Y, X)
SEASON, YEAR = "season", "year"

VV, VH, NDVI, NDVI_QUALITY = "vv", "vh", "ndvi", "ndvi_quality"
NDVI_FUSED, NDVI_SMOOTH = "ndvi_fused", "ndvi_smooth"
PADDY_MASK = "paddy_mask"

DEFAULT_CHUNKS: dict[str, int] = {TIME: -1, Y: 256, X: 256}

#: CF attributes of the known variables.
CF_ATTRS: dict[str, dict[str, str]] = {
    VV: {"long_name": "Sentinel-1 VV backscatter (sigma0, linear)", "units": "1"},
    VH: {"long_name": "Sentinel-1 VH backscatter (sigma0, linear)", "units": "1"},
    NDVI: {"long_name": "Observed Sentinel-2 NDVI (NaN where not observed)", "units": "1",
           "valid_min": "-1", "valid_max": "1"},
    NDVI_QUALITY: {"long_name": "Quality of the NDVI observation (0 bad .. 1 clear)", "units": "1"},
    NDVI_FUSED: {"long_name": "Gap-filled NDVI", "units": "1"},
    NDVI_SMOOTH: {"long_name": "Gap-filled, Whittaker-smoothed NDVI", "units": "1"},
    PADDY_MASK: {"long_name": "Rice paddy mask (1 paddy, 0 other)", "units": "1"},
}

#: Values that mean "missing" in some exports and must never reach a cube.
SENTINEL_VALUES = (-9999.0, -32768.0, 65535.0, -3.4028234663852886e38)


def with_geobox(ds: xr.Dataset, geobox: GeoBox) -> xr.Dataset:
    """Assign the y/x coordinates and CRS of ``geobox`` to ``ds``."""
    coords = odc.geo.xr.xr_coords(geobox)
    return ds.assign_coords(coords)


def time_series_vars(ds: xr.Dataset) -> list[str]:
    """Names of the variables with the cube dims ``(time, y, x)``."""
    return [name for name, var in ds.data_vars.items() if var.dims == DIMS]


def _cube_name(ds: xr.Dataset, source: str | os.PathLike | None) -> str:
    """``Cube <path>`` (the store it was read from, when known), for messages."""
    source = source if source is not None else ds.encoding.get("source")
    return f"Cube {source}" if isinstance(source, (str, os.PathLike)) and str(source) else "Cube"


def check_schema(ds: xr.Dataset, *, required: Iterable[str] = (VV, VH, NDVI),
                 source: str | os.PathLike | None = None) -> xr.Dataset:
    """The cube schema, checked without reading a pixel: what ``run`` and ``check`` refuse.

    The variables, their dims ``(time, y, x)`` in that order and dtype float32 (NDVI stored as
    int16 or float64, S1 as uint16, are refused: convert them with ``fusecube convert``), a
    datetime64 time axis, strictly increasing, inside the Sentinel era
    (:func:`fusecube.grid.periods.check_sentinel_era`), and a grid with a CRS.

    Args:
        ds: The cube.
        required: Variables that must be present.
        source: The cube's store, named in messages (default: ``ds.encoding['source']``).

    Returns:
        The same dataset, for chaining.

    Raises:
        CubeSchemaError: The first rule ``ds`` breaks, naming the cube and the fix.
    """
    from fusecube.grid.periods import check_sentinel_era

    cube = _cube_name(ds, source)
    missing = [name for name in required if name not in ds.data_vars]
    if missing:
        raise CubeSchemaError(
            f"{cube} is missing variable(s) {missing}; it has {sorted(ds.data_vars)}. "
            "Load the cube with fusecube.load or rename the bands to vv, vh, ndvi."
        )
    for name in required:
        var = ds[name]
        if var.dims != DIMS:
            raise CubeSchemaError(
                f"{cube}: variable {name!r} has dims {var.dims}; fusecube expects {DIMS}. "
                f"Use ds[{name!r}].transpose{DIMS} or rename the dims, and write the cube again."
            )
        if var.dtype != np.float32:
            raise CubeSchemaError(
                f"{cube}: variable {name!r} has dtype {var.dtype}; fusecube expects float32 "
                "(physical values, NaN for missing). Convert with .astype('float32') after "
                "applying any scale and nodata, or import with fusecube convert."
            )
    if TIME not in ds.coords or not np.issubdtype(ds[TIME].dtype, np.datetime64):
        raise CubeSchemaError(
            f"{cube} has no datetime64 'time' coordinate; assign the period centres as datetime64."
        )
    times = ds[TIME].values
    if times.size > 1 and not np.all(np.diff(times) > np.timedelta64(0, "ns")):
        bad = int(np.argmin(np.diff(times) > np.timedelta64(0, "ns")))
        raise CubeSchemaError(
            f"{cube}: time axis is not strictly increasing at index {bad + 1} "
            f"({times[bad]} then {times[bad + 1]}); sort with ds.sortby('time') and drop duplicates."
        )
    check_sentinel_era(times, what=f"{cube}: the time axis", error=CubeSchemaError,
                       fix="check the dates the cube was made from (an epoch or a 2-digit "
                           "year), assign the right period centres and write the cube again.")
    try:
        geobox = ds.odc.geobox
    except Exception as exc:  # odc raises various errors for odd coords
        raise CubeSchemaError(f"{cube}: grid cannot be read as a GeoBox: {exc}") from exc
    if geobox is None or geobox.crs is None:
        raise CubeSchemaError(
            f"{cube} has no CRS. Attach one with ds.odc.assign_crs('EPSG:32749') "
            "(or the CRS your data is in)."
        )
    return ds


def validate_cube(ds: xr.Dataset, *, required: Iterable[str] = (VV, VH, NDVI)) -> xr.Dataset:
    """Check that ``ds`` follows the cube data model; raise ``CubeSchemaError`` otherwise.

    The schema (:func:`check_schema`), then one pass over the values: no ±inf, no nodata
    sentinel. A cube opened from a store fusecube wrote also has its chunk files checked
    (:func:`fusecube.storage.chunks.check_chunks`): a lost chunk would read as NaN.

    Args:
        ds: The cube.
        required: Variables that must be present.

    Returns:
        The same dataset, for chaining.

    Raises:
        CubeSchemaError: ``ds`` breaks the schema, or holds ±inf or a nodata sentinel.
        InputFileError: A chunk file of the cube's store is missing or truncated.
    """
    check_schema(ds, required=required)
    source = ds.encoding.get("source")
    store = source if isinstance(source, (str, os.PathLike)) else None
    if store is not None and Path(store, "zarr.json").is_file():
        check_chunks(store)
    try:
        _check_values(ds, list(required))
    except FusecubeError:
        raise
    except Exception as exc:  # a chunk that cannot be decoded: name it, else re-raise
        raise_if_bad_chunk(store, exc)
        raise
    return ds


def value_error(cube: str, name: str, *, infinite: bool) -> CubeSchemaError:
    """The error for ±inf (``infinite``) or a nodata sentinel in variable ``name`` of ``cube``.

    What a run refuses at input (:func:`validate_cube`), and ``fusecube check`` with it.
    """
    if infinite:
        return CubeSchemaError(
            f"{cube}: variable {name!r} contains +/-inf; fusecube uses NaN for missing values. "
            f"Replace with ds[{name!r}].where(np.isfinite(ds[{name!r}])) and write the cube again.")
    return CubeSchemaError(
        f"{cube}: variable {name!r} contains a nodata sentinel (one of {SENTINEL_VALUES[:3]}); "
        "mask it to NaN when reading (e.g. rioxarray masked=True) and write the cube again.")


def _check_values(ds: xr.Dataset, names: list[str]) -> None:
    """Reject ±inf and nodata sentinels (one pass over the data, lazy arrays included)."""
    import dask

    sentinels = np.asarray(SENTINEL_VALUES, dtype=np.float32)
    flags = []
    for name in names:
        var = ds[name]
        flags += [np.isinf(var).any(), var.isin(sentinels).any()]
    values = [bool(v) for v in dask.compute(*[f.data for f in flags])]
    for i, name in enumerate(names):
        if values[2 * i] or values[2 * i + 1]:
            raise value_error(_cube_name(ds, None), name, infinite=values[2 * i])


def zarr_layout(
    ds: xr.Dataset, chunks: Mapping[str, int] | None = None
) -> tuple[xr.Dataset, dict[str, dict]]:
    """The zarr chunks of every variable, and ``ds`` rechunked so each dask chunk fills whole zarr chunks.

    xarray refuses dask chunks that share a zarr chunk (some releases only warn, or need
    ``align_chunks``); a dataset whose dask chunks are exactly its zarr chunks is written by every
    release. Every zarr writer of fusecube goes through this function.

    Args:
        ds: The dataset to write.
        chunks: Zarr chunk edge per dim (``-1`` or absent = the whole dim). ``None`` keeps the largest
            dask chunk of each dask-backed variable and leaves in-memory variables to zarr's default.

    Returns:
        The dataset to write (dask variables rechunked where needed) and its ``to_zarr`` encoding.
    """
    import dask.array as da

    encoding: dict[str, dict] = {}
    aligned = {}
    for name, var in ds.data_vars.items():
        if not var.dims:
            continue
        lazy = isinstance(var.data, da.Array)
        if chunks is None:
            if not lazy:
                continue
            edges = var.data.chunksize
        else:
            edges = tuple(size if chunks.get(dim, -1) in (-1, None) else min(chunks[dim], size)
                          for dim, size in zip(var.dims, var.shape, strict=True))
        edges = tuple(max(1, edge) for edge in edges)
        encoding[name] = {"chunks": edges}
        if lazy and var.data.chunks != da.core.normalize_chunks(edges, var.shape):
            aligned[name] = var.chunk(dict(zip(var.dims, edges, strict=True)))
    return ds.assign(aligned), encoding


def write_cube(
    ds: xr.Dataset, path: str | os.PathLike, *, chunks: Mapping[str, int] = DEFAULT_CHUNKS
) -> Path:
    """Write ``ds`` to a zarr v3 store atomically (temporary name, then rename).

    Args:
        ds: The dataset to write.
        path: Target store path; replaced only once the new store is complete.
        chunks: Chunk size per dim (``-1`` = whole dim); default whole time, 256 x 256 pixels.

    Returns:
        The path written.

    Raises:
        CubeSchemaError: A time-zone aware coordinate (zarr stores naive UTC times).
        OutputWriteError: ``path`` is a file or a folder that is not a zarr store.
    """
    path = Path(path)
    for dim, index in ds.indexes.items():
        if getattr(index, "tz", None) is not None:
            raise CubeSchemaError(
                f"Coordinate {dim!r} is time-zone aware ({index.tz}); a cube stores UTC times "
                f"without a zone. Convert it with ds.assign_coords({dim}=ds.indexes[{dim!r}].tz_convert(None)).")
    ds = ds.drop_encoding() if hasattr(ds, "drop_encoding") else ds
    ds, encoding = zarr_layout(ds, chunks)
    ds = ds.assign_attrs(complete_attrs())  # every chunk is written: a missing one is damage
    with atomic_path(path, folder=True) as staged:
        ds.to_zarr(staged, mode="w", zarr_format=3, encoding=encoding, consolidated=False,
                   **WRITE_ALL_CHUNKS)
    return path


def read_cube(path: str | os.PathLike, *, chunks: Mapping[str, int] | None = None) -> xr.Dataset:
    """Open a cube written by :func:`write_cube` (lazily, as dask arrays, when ``chunks`` is given).

    Args:
        path: Path to the zarr store.
        chunks: Dask chunks, e.g. ``{}`` for the on-disk chunks; ``None`` opens lazily without dask.

    Returns:
        The dataset.

    Raises:
        InputFileError: The store is missing or cannot be opened, or (for a store fusecube
            wrote) a chunk file is missing or truncated: the message names variable and chunk.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"Cube {path} does not exist; create it with `fusecube synth` or `fusecube fetch`.")
    check_chunks(path)  # lists the chunk files only: a lost one would read as NaN
    try:
        ds = xr.open_zarr(path, chunks=chunks, consolidated=False, zarr_format=3)
    except Exception as exc:
        raise InputFileError(
            f"Cube {path} cannot be opened as a zarr v3 store ({type(exc).__name__}: {exc}); "
            "it may be incomplete or corrupt: write it again."
        ) from exc
    ds.attrs.pop(COMPLETE_ATTR, None)  # a promise about this store, not about copies of ds
    return ds
