"""NetCDF / GeoTIFF stacks → a validated zarr cube, with integrity checks and a checksum manifest.

:func:`convert` opens the input (a NetCDF file, a folder of GeoTIFFs, or a zarr cube to
re-chunk), brings it to the cube data model (dims ``(time, y, x)``, float32, NaN for missing,
linear backscatter, a CRS), writes it under a temporary name, re-opens what was written and
checks it against the source (shape, dtypes, CRS, value statistics), renames it into place
and records a SHA-256 per stored file in the manifest beside it (``cube.zarr.manifest.json``:
zarr warns about foreign files inside a store; :mod:`fusecube.storage.manifest`).
:func:`verify_cube` re-checks a store against its manifest later (a flipped byte in one chunk
is caught) and re-opens it to compare the statistics.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import xarray as xr

from fusecube.cube import (
    CF_ATTRS,
    DIMS,
    NDVI,
    SENTINEL_VALUES,
    TIME,
    VH,
    VV,
    X,
    Y,
    read_cube,
    time_series_vars,
    validate_cube,
    write_cube,
)
from fusecube.errors import ConfigError, CubeSchemaError, InputFileError, IntegrityError, OutputWriteError
from fusecube.storage.atomic import atomic_path
from fusecube.storage.manifest import (
    MANIFEST_VERSION,
    checksums_digest,
    manifest_path,
    store_checksums,
    verify_checksums,
)
from fusecube.units import from_db

log = logging.getLogger(__name__)

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".h5", ".hdf5")
TIFF_SUFFIXES = (".tif", ".tiff")

#: How the cube will be read: whole time series per block, or whole maps per date.
AccessPattern = Literal["timeseries", "maps"]

_ALIASES = {"t": TIME, "date": TIME, "dates": TIME, "lat": Y, "latitude": Y, "lon": X,
            "longitude": X, "northing": Y, "easting": X}


# ------------------------------------------------------------------------------- chunking


def parse_chunks(text: str) -> dict[str, int]:
    """``"time=-1,y=256,x=256"`` → ``{"time": -1, "y": 256, "x": 256}`` (-1: whole dim)."""
    chunks: dict[str, int] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        try:
            size = int(value)
        except ValueError:
            size = 0
        if not sep or name not in DIMS or (size < 1 and size != -1):
            raise ConfigError(f"Chunk spec {part!r} in {text!r} must look like DIM=SIZE with DIM one "
                              f"of {list(DIMS)} and SIZE a positive integer or -1 (whole dim), "
                              "e.g. time=-1,y=256,x=256.")
        chunks[name] = size
    return chunks


def choose_chunks(sizes: Mapping[str, int], *, access: AccessPattern = "timeseries",
                  target_mb: float = 16.0, itemsize: int = 4) -> dict[str, int]:
    """Chunk sizes for a cube of ``sizes`` from how it will be read.

    ``timeseries`` (the pipeline and the ML loaders: a block of pixels, all dates) keeps the
    whole time axis in a chunk and picks a square spatial side, a multiple of 64 px, so a
    chunk holds about ``target_mb``; ``maps`` (viewers: one date, a large area) puts one date
    per chunk and grows the spatial side to the same budget.

    Args:
        sizes: Dim sizes, ``{"time": T, "y": H, "x": W}``.
        access: ``timeseries`` or ``maps``.
        target_mb: Uncompressed chunk size to aim for (zarr reads are efficient at 1-64 MB).
        itemsize: Bytes per value (float32: 4).

    Returns:
        ``{"time": ..., "y": ..., "x": ...}`` (-1 for a whole dim).
    """
    if access not in ("timeseries", "maps"):
        raise ConfigError(f"access pattern {access!r} is not 'timeseries' or 'maps'.")
    n_t, n_y, n_x = (int(sizes[d]) for d in DIMS)
    depth = n_t if access == "timeseries" else 1
    side = math.sqrt(target_mb * 2**20 / (itemsize * max(depth, 1)))
    side = int(max(64, min(4096, 64 * round(side / 64))))
    return {TIME: -1 if access == "timeseries" else 1,
            Y: -1 if side >= n_y else side, X: -1 if side >= n_x else side}


# ------------------------------------------------------------------------------- reading


def _standardise(ds: xr.Dataset, *, crs: str | None, source: Path) -> xr.Dataset:
    """Names, dims order, float32, NaN for missing, linear backscatter, a CRS."""
    rename = {}
    for name in list(ds.dims) + list(ds.data_vars):
        low = str(name).lower()
        target = _ALIASES.get(low, low) if name in ds.dims else low
        if target != name and target not in ds.variables:
            rename[name] = target
    geographic = any(str(n).lower() in ("lat", "latitude", "lon", "longitude") for n in ds.dims)
    ds = ds.rename(rename)
    if not set(DIMS) <= set(ds.dims):
        raise CubeSchemaError(f"{source} has dims {sorted(map(str, ds.dims))}; a cube needs "
                              f"{list(DIMS)} (lat/lon, t and date are renamed). Rename the dims.")
    keep = {}
    for name, var in ds.data_vars.items():
        if set(var.dims) == set(DIMS):
            keep[name] = var.transpose(*DIMS)
        elif set(var.dims) == {Y, X}:
            keep[name] = var.transpose(Y, X)
        else:
            log.info("convert: dropping %s with dims %s", name, var.dims)
    out = xr.Dataset(keep, attrs=ds.attrs)
    for name in list(out.data_vars):
        var = out[name].astype(np.float32)
        var = var.where(np.isfinite(var) & ~var.isin(np.asarray(SENTINEL_VALUES, np.float32)))
        if name in (VV, VH) and _is_db(var):
            log.info("convert: %s looks like dB; converting to linear sigma0", name)
            var = from_db(var).astype(np.float32)
        var.attrs = {**{k: v for k, v in ds[name].attrs.items() if k not in ("units",)},
                     **CF_ATTRS.get(name, {})}
        out[name] = var
    if crs is not None:
        out = out.odc.assign_crs(crs)
    else:
        found = None
        try:
            found = ds.odc.geobox.crs if ds.odc.geobox is not None else None
        except Exception:  # odc-geo raises several types for odd coordinates
            found = None
        if found is None and geographic:
            found = "EPSG:4326"
        if found is None:
            raise CubeSchemaError(f"{source} carries no CRS (no grid_mapping/spatial_ref); pass "
                                  "--crs, e.g. --crs EPSG:32749.")
        out = out.odc.assign_crs(found)
    return out.sortby(TIME)


def _is_db(var: xr.DataArray) -> bool:
    """Backscatter in dB: declared so, or mostly negative (linear sigma0 is > 0)."""
    if str(var.attrs.get("units", "")).lower() in ("db", "decibel", "decibels"):
        return True
    sample = np.asarray(var.isel({TIME: slice(0, min(4, var.sizes[TIME]))}).values)
    sample = sample[np.isfinite(sample)]
    return sample.size > 0 and float(np.median(sample)) < 0


def open_source(src: str | os.PathLike, *, crs: str | None = None, **geotiff_options) -> xr.Dataset:
    """Open a NetCDF file, a GeoTIFF stack folder (or file) or a zarr cube as a (lazy) cube.

    Args:
        src: Input path.
        crs: CRS of the input when it does not carry one (NetCDF without grid mapping).
        **geotiff_options: Passed to :func:`fusecube.sources.geotiff.read_geotiff_stack`
            (``start``, ``period_days``, ``dates_file``, ``bands``, ``pattern`` ...).

    Returns:
        The dataset in the cube data model (not yet validated).
    """
    src = Path(src)
    if not src.exists():
        raise InputFileError(f"Input {src} does not exist; give a NetCDF file, a folder of "
                             "GeoTIFFs or a zarr cube.")
    if src.is_dir() and (src / "zarr.json").exists():
        return read_cube(src, chunks={})
    if src.is_dir() or src.suffix.lower() in TIFF_SUFFIXES:
        from fusecube.sources.geotiff import read_geotiff_stack

        if src.is_file():
            geotiff_options.setdefault("pattern", src.name)
            src = src.parent
        return read_geotiff_stack(src, **geotiff_options)
    if src.suffix.lower() in NETCDF_SUFFIXES:
        try:
            ds = xr.open_dataset(src, engine="h5netcdf", chunks={}, decode_coords="all")
        except Exception as exc:  # h5netcdf/h5py raise many types for a bad file
            raise InputFileError(f"NetCDF {src} cannot be read ({type(exc).__name__}: {exc}); "
                                 "is it NetCDF-4/HDF5? Convert NetCDF-3 with nccopy -k nc4.") from exc
        return _standardise(ds, crs=crs, source=src)
    raise InputFileError(f"Input {src} is not a NetCDF file ({', '.join(NETCDF_SUFFIXES)}), a GeoTIFF "
                         "(.tif) or a folder of them, or a zarr store.")


# ------------------------------------------------------------------------------- checking


def value_statistics(ds: xr.Dataset) -> dict[str, dict[str, float]]:
    """Per variable: count of finite values, min, max, mean (one dask pass over all of them)."""
    import dask

    names = [n for n in ds.data_vars if ds[n].dtype.kind == "f"]
    lazy = []
    for name in names:
        var = ds[name]
        lazy += [var.count().data, var.min().data, var.max().data, var.astype(np.float64).sum().data]
    values = [float(v) for v in dask.compute(*lazy)]
    stats = {}
    for i, name in enumerate(names):
        count, vmin, vmax, total = values[4 * i: 4 * i + 4]
        stats[name] = {"count": int(count), "min": vmin, "max": vmax,
                       "mean": total / count if count else float("nan")}
    return stats


def _describe(ds: xr.Dataset) -> dict:
    geobox = ds.odc.geobox
    return {"sizes": {d: int(ds.sizes[d]) for d in DIMS},
            "dtypes": {n: str(ds[n].dtype) for n in ds.data_vars},
            "crs": f"EPSG:{geobox.crs.epsg}" if geobox.crs.epsg else geobox.crs.to_wkt(),
            "transform": list(geobox.affine)[:6],
            "time": [str(ds[TIME].values[0]), str(ds[TIME].values[-1])]}


def _compare(expected: dict, found: dict, stats_expected: dict, stats_found: dict,
             where: Path) -> list[str]:
    """Differences between the source and the written store, as readable lines."""
    problems = []
    for key in ("sizes", "dtypes", "crs", "time"):
        if expected[key] != found[key]:
            problems.append(f"{key}: source {expected[key]} vs written {found[key]}")
    if not np.allclose(expected["transform"], found["transform"], rtol=0, atol=1e-9):
        problems.append(f"transform: source {expected['transform']} vs written {found['transform']}")
    for name, s in stats_expected.items():
        w = stats_found.get(name)
        if w is None:
            problems.append(f"{name}: missing from {where}")
            continue
        if s["count"] != w["count"] or (s["count"] and (s["min"] != w["min"] or s["max"] != w["max"]
                                                        or not math.isclose(s["mean"], w["mean"],
                                                                            rel_tol=1e-9, abs_tol=1e-12))):
            problems.append(f"{name}: statistics source {s} vs written {w}")
    return problems


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert` wrote."""

    path: Path
    """The cube store."""
    manifest: dict
    """The manifest written into the store (sizes, dtypes, CRS, chunks, statistics, checksums)."""


def convert(src: str | os.PathLike, out: str | os.PathLike, *, chunks: Mapping[str, int] | str | None = None,
            access: AccessPattern = "timeseries", target_mb: float = 16.0, crs: str | None = None,
            required: Sequence[str] = (VV, VH, NDVI), overwrite: bool = False,
            **geotiff_options) -> ConvertResult:
    """Convert ``src`` (NetCDF, GeoTIFF stack, zarr) into a validated, checksummed zarr cube.

    The store appears at ``out`` only once it has been written completely, re-opened and
    checked against the source; a failed check leaves any previous ``out`` untouched. The
    manifest is written last (a store without one fails :func:`verify_cube`).

    Args:
        src: Input NetCDF file, GeoTIFF folder/file, or zarr cube.
        out: Output zarr store.
        chunks: Chunk sizes (``{"time": -1, "y": 256, "x": 256}`` or ``"time=-1,y=256,x=256"``);
            None chooses them from ``access`` (:func:`choose_chunks`).
        access: ``timeseries`` or ``maps``, when ``chunks`` is None.
        target_mb: Chunk size to aim for when choosing chunks.
        crs: CRS for inputs that carry none.
        required: Variables the cube must have.
        overwrite: Replace an existing ``out``.
        **geotiff_options: Options of the GeoTIFF reader (``start``, ``period_days``, ...).

    Returns:
        The path and the manifest.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputWriteError(f"{out} exists; pass --overwrite to replace it or choose another --out.")
    ds = open_source(src, crs=crs, **geotiff_options)
    validate_cube(ds, required=required)
    if not time_series_vars(ds):
        raise CubeSchemaError(f"{src} has no (time, y, x) variable to convert.")
    if isinstance(chunks, str):
        chunks = parse_chunks(chunks)
    sizes = {d: int(ds.sizes[d]) for d in DIMS}
    chunks = dict(chunks) if chunks else choose_chunks(sizes, access=access, target_mb=target_mb)
    chunks = {d: chunks.get(d, -1) for d in DIMS}
    log.info("convert %s → %s with chunks %s", src, out, chunks)
    expected, stats = _describe(ds), value_statistics(ds)
    with atomic_path(manifest_path(out)) as staged_manifest, \
            atomic_path(out, folder=True) as staged:
        write_cube(ds, staged, chunks=chunks)
        written = read_cube(staged, chunks={})
        problems = _compare(expected, _describe(written), stats, value_statistics(written), out)
        if problems:
            raise IntegrityError(f"The cube written from {src} differs from its source: "
                                 + "; ".join(problems) + ". Nothing was replaced; check free disk "
                                 "space and the input, then convert again.")
        checksums = store_checksums(staged)
        manifest = {"format_version": MANIFEST_VERSION, "source": str(Path(src).resolve()),
                    **expected, "chunks": chunks, "statistics": stats, "files": checksums,
                    "digest": checksums_digest(checksums)}
        staged_manifest.write_text(json.dumps(manifest, indent=1))
        manifest_path(out).unlink(missing_ok=True)  # never an old manifest beside a new store
    log.info("convert: %s written, digest %s", out, manifest["digest"][:12])
    return ConvertResult(out, manifest)


def verify_cube(store: str | os.PathLike, *, statistics: bool = True) -> dict:
    """Check a converted store against its manifest: every file's SHA-256, then the statistics.

    Args:
        store: The zarr store written by :func:`convert`.
        statistics: Also re-open the cube and compare sizes, dtypes, CRS and value statistics.

    Returns:
        The manifest (when everything matches).

    Raises:
        IntegrityError: Naming the missing, extra or changed files, or the differing statistics.
    """
    store = Path(store)
    manifest = verify_checksums(store)
    if statistics:
        ds = read_cube(store, chunks={})
        expected = {k: manifest[k] for k in ("sizes", "dtypes", "crs", "transform", "time")}
        problems = _compare(expected, _describe(ds), manifest["statistics"], value_statistics(ds), store)
        if problems:
            raise IntegrityError(f"Cube {store} matches its checksums but not its statistics: "
                                 + "; ".join(problems) + ". Convert the source again.")
    return manifest
