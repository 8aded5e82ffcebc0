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
from fusecube.grid.periods import check_sentinel_era
from fusecube.sources.bands import SCL, S1Encoding, is_cube_model, mask_ndvi_with_scl, standardise_bands
from fusecube.sources.common_periods import (
    DEFAULT_PERIOD_DAYS,
    common_starts,
    composite_onto_periods,
    needs_compositing,
)
from fusecube.storage.atomic import atomic_path, prepare_output
from fusecube.storage.manifest import (
    MANIFEST_VERSION,
    checksums_digest,
    manifest_path,
    store_checksums,
    verify_checksums,
)

log = logging.getLogger(__name__)

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".h5", ".hdf5")
TIFF_SUFFIXES = (".tif", ".tiff")

#: How the cube will be read: whole time series per block, or whole maps per date.
AccessPattern = Literal["timeseries", "maps"]

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


def _standardise(ds: xr.Dataset, *, crs: str | None, source: Path,
                 s1_encoding: S1Encoding | None = None) -> xr.Dataset:
    """Names, dims order, float32, NaN for missing, linear backscatter, NDVI, a CRS."""
    geographic = any(str(n).lower() in ("lat", "latitude", "lon", "longitude") for n in ds.dims)
    bands = standardise_bands(ds, source=str(source), s1_encoding=s1_encoding)
    out = xr.Dataset({name: var.transpose(*(DIMS if TIME in var.dims else (Y, X)))
                      for name, var in bands.data_vars.items()}, attrs=ds.attrs)
    for name in list(out.data_vars):
        out[name].attrs = {**{k: v for k, v in out[name].attrs.items() if k not in ("units", "grid_mapping")},
                           **CF_ATTRS.get(str(name), {})}
    out = out.drop_vars([n for n, c in out.coords.items() if c.ndim == 0 and (  # the input's grid mapping:
        {"crs_wkt", "spatial_ref", "grid_mapping_name"} & set(c.attrs))])      # assign_crs writes its own
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
    if np.issubdtype(out[TIME].dtype, np.datetime64):
        check_sentinel_era(out[TIME].values, what=f"{source} (its time coordinate)", error=CubeSchemaError,
                           fix="give the time axis CF units (e.g. 'days since 2020-01-01') or assign "
                               "the acquisition dates.")
    return out.sortby(TIME)


def _is_zarr(path: Path) -> bool:
    return path.is_dir() and (path.suffix.lower() == ".zarr" or any(
        (path / marker).exists() for marker in ("zarr.json", ".zgroup", ".zmetadata")))


def _open_one(src: Path, *, crs: str | None, s1_encoding: S1Encoding | None) -> xr.Dataset:
    """One NetCDF file or zarr store in the cube data model (a fusecube cube as it is)."""
    if not src.exists():
        raise InputFileError(f"Input {src} does not exist; give a NetCDF file, a folder of "
                             "GeoTIFFs or a zarr cube.")
    if _is_zarr(src):
        if (src / "zarr.json").exists():
            cube = read_cube(src, chunks={})
            if is_cube_model(cube):
                return cube
        try:
            ds = xr.open_zarr(src, chunks={}, mask_and_scale=False, decode_coords="all")
        except Exception as exc:  # zarr raises many types for a store it cannot read
            raise InputFileError(f"Zarr store {src} cannot be read ({type(exc).__name__}: {exc}).") from exc
        return _standardise(ds, crs=crs, source=src, s1_encoding=s1_encoding)
    if src.suffix.lower() in NETCDF_SUFFIXES:
        try:  # mask_and_scale=False: nodata and scale attributes are decoded per band (bands.py)
            ds = xr.open_dataset(src, engine="h5netcdf", chunks="auto", decode_coords="all",
                                 mask_and_scale=False)
        except Exception as exc:  # h5netcdf/h5py raise many types for a bad file
            raise InputFileError(f"NetCDF {src} cannot be read ({type(exc).__name__}: {exc}); "
                                 "is it NetCDF-4/HDF5? Convert NetCDF-3 with nccopy -k nc4.") from exc
        return _standardise(ds, crs=crs, source=src, s1_encoding=s1_encoding)
    raise InputFileError(f"Input {src} is not a NetCDF file ({', '.join(NETCDF_SUFFIXES)}), a GeoTIFF "
                         "(.tif) or a folder of them, or a zarr store.")


def _onto_grid(ds: xr.Dataset, geobox) -> xr.Dataset:
    """``ds`` warped onto ``geobox`` with nearest neighbour (as it is when already there)."""
    return ds if ds.odc.geobox == geobox else ds.odc.reproject(geobox, resampling="nearest")


def _on_common_periods(datasets: list[xr.Dataset], paths: list[Path], *, period_days: int | None,
                       start: str | None) -> xr.Dataset:
    """One cube from inputs on their own dates (and grids): composited onto common periods."""
    grid = next((ds for ds in datasets if NDVI in ds.data_vars), datasets[0]).odc.geobox
    seen: dict[str, Path] = {}
    for ds, path in zip(datasets, paths, strict=True):
        for name in ds.data_vars:
            if name in seen:
                raise CubeSchemaError(f"{name!r} is in both {seen[name]} and {path}; give each "
                                      "variable in one input only.")
            seen[str(name)] = path
    # SCL of another input (the 20 m file) onto the NDVI grid; everything else is composited on
    # its own grid first, so that only the periods, not every acquisition, are warped
    scl_on_grid = [_onto_grid(ds[[SCL]], grid) for ds in datasets if SCL in ds.data_vars]
    datasets = mask_ndvi_with_scl([ds.drop_vars(SCL, errors="ignore") for ds in datasets] + scl_on_grid)
    datasets = [ds for ds in datasets[:len(paths)] if ds.data_vars]
    same_dates = all(np.array_equal(ds[TIME].values, datasets[0][TIME].values) for ds in datasets)
    if period_days is None and start is None and same_dates and not (
            len(datasets) == 1 and needs_compositing(datasets[0])):
        datasets = [_onto_grid(ds, grid) for ds in datasets]
        return datasets[0] if len(datasets) == 1 else xr.merge(
            datasets, compat="override", combine_attrs="drop_conflicts")
    days = period_days or DEFAULT_PERIOD_DAYS
    starts = common_starts([ds[TIME].values for ds in datasets], period_days=days, start=start)
    log.info("convert: %s composited onto %d periods of %d days from %s", ", ".join(map(str, paths)),
             len(starts), days, str(starts[0])[:10])
    composited = [_onto_grid(composite_onto_periods(ds, starts, days), grid) for ds in datasets]
    if len(composited) == 1:
        return composited[0]
    merged = xr.merge([ds.drop_vars(["n_s1_dates", "n_s2_dates"]) for ds in composited],
                      compat="override", combine_attrs="drop_conflicts")
    for name in ("n_s1_dates", "n_s2_dates"):
        merged = merged.assign_coords({name: (TIME, sum(ds[name].values for ds in composited))})
    first = [n for n in (VV, VH, NDVI) if n in merged.data_vars]
    return merged[first + [n for ds in datasets for n in ds.data_vars if n in merged and n not in first]]


def open_source(src: str | os.PathLike | Sequence[str | os.PathLike], *, crs: str | None = None,
                s1_encoding: S1Encoding | None = None, period_days: int | None = None,
                start: str | None = None, **geotiff_options) -> xr.Dataset:
    """Open NetCDF files, a GeoTIFF stack folder (or file) or zarr stores as one (lazy) cube.

    NetCDF and zarr inputs pass through :func:`fusecube.sources.bands.standardise_bands`
    (band names of openEO, Planetary Computer and Earth Search, scale/offset, units from the
    values, NDVI from red and NIR, SCL masking); a zarr cube written by fusecube is read as it
    is. Several inputs (e.g. an S1 file and an S2 file) are put on the grid of the one with
    NDVI (nearest neighbour) and, unless they share their dates, composited onto common
    periods (:mod:`fusecube.sources.common_periods`); so is one input whose S1 and S2 sit on
    their own dates of a NaN-padded time axis.

    Args:
        src: Input path, or several NetCDF/zarr paths.
        crs: CRS of the input when it does not carry one (NetCDF without grid mapping).
        s1_encoding: Convention of integer S1 bands without scale attributes (``"gfmap"``).
        period_days: Period length in days: NetCDF/zarr inputs are composited onto these
            periods (default: only when S1 and S2 are on their own dates, onto 12-day periods);
            for GeoTIFF stacks the period length (default 12).
        start: First day of the first period (default: the first date of the inputs).
        **geotiff_options: Passed to :func:`fusecube.sources.geotiff.read_geotiff_stack`
            (``dates_file``, ``bands``, ``pattern`` ...).

    Returns:
        The dataset in the cube data model (not yet validated).
    """
    paths = [Path(src)] if isinstance(src, (str, os.PathLike)) else [Path(p) for p in src]
    if not paths:
        raise InputFileError("No input given; name a NetCDF file, a folder of GeoTIFFs or a zarr cube.")
    tiffs = [p for p in paths if not _is_zarr(p) and (p.is_dir() or p.suffix.lower() in TIFF_SUFFIXES)]
    if tiffs:
        if len(paths) > 1:
            raise InputFileError(f"{tiffs[0]} is a GeoTIFF stack; convert a stack on its own, not "
                                 "together with other inputs.")
        from fusecube.sources.geotiff import read_geotiff_stack

        folder = paths[0]
        if folder.is_file():
            geotiff_options.setdefault("pattern", folder.name)
            folder = folder.parent
        return read_geotiff_stack(folder, start=start, period_days=period_days or DEFAULT_PERIOD_DAYS,
                                  **geotiff_options)
    datasets = [_open_one(p, crs=crs, s1_encoding=s1_encoding) for p in paths]
    return _on_common_periods(datasets, paths, period_days=period_days, start=start)


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


def _source_name(src: str | os.PathLike | Sequence[str | os.PathLike]) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(Path(src).resolve())
    return ", ".join(str(Path(p).resolve()) for p in src)


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert` wrote."""

    path: Path
    """The cube store."""
    manifest: dict
    """The manifest written into the store (sizes, dtypes, CRS, chunks, statistics, checksums)."""


def convert(src: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike, *,
            chunks: Mapping[str, int] | str | None = None, access: AccessPattern = "timeseries",
            target_mb: float = 16.0, crs: str | None = None, required: Sequence[str] = (VV, VH, NDVI),
            overwrite: bool = False, s1_encoding: S1Encoding | None = None,
            period_days: int | None = None, start: str | None = None,
            **geotiff_options) -> ConvertResult:
    """Convert ``src`` (NetCDF, GeoTIFF stack, zarr) into a validated, checksummed zarr cube.

    The store appears at ``out`` only once it has been written completely, re-opened and
    checked against the source; a failed check leaves any previous ``out`` untouched. The
    manifest is written last (a store without one fails :func:`verify_cube`). The input's
    own dask chunks (openEO writes one date per chunk) are replaced by ``chunks`` before
    writing, so every zarr chunk is written by one task.

    Args:
        src: Input NetCDF file, GeoTIFF folder/file, or zarr cube; or several NetCDF/zarr
            inputs (e.g. S1 and S2 files) merged onto common periods (:func:`open_source`).
        out: Output zarr store.
        chunks: Chunk sizes (``{"time": -1, "y": 256, "x": 256}`` or ``"time=-1,y=256,x=256"``);
            None chooses them from ``access`` (:func:`choose_chunks`).
        access: ``timeseries`` or ``maps``, when ``chunks`` is None.
        target_mb: Chunk size to aim for when choosing chunks.
        crs: CRS for inputs that carry none.
        required: Variables the cube must have.
        overwrite: Replace an existing ``out``.
        s1_encoding: Convention of integer S1 bands without scale attributes (``"gfmap"``).
        period_days: Period length to composite onto (see :func:`open_source`).
        start: First day of the first period.
        **geotiff_options: Options of the GeoTIFF reader (``dates_file``, ``bands``, ...).

    Returns:
        The path and the manifest.
    """
    out = Path(out)
    prepare_output(out, kind="store")  # the output rule, before any work
    prepare_output(manifest_path(out), kind="file")
    if out.exists() and not overwrite:
        raise OutputWriteError(f"{out} exists; pass --overwrite to replace it or choose another --out.")
    ds = open_source(src, crs=crs, s1_encoding=s1_encoding, period_days=period_days, start=start,
                     **geotiff_options)
    validate_cube(ds, required=required)
    if not time_series_vars(ds):
        raise CubeSchemaError(f"{src} has no (time, y, x) variable to convert.")
    if isinstance(chunks, str):
        chunks = parse_chunks(chunks)
    sizes = {d: int(ds.sizes[d]) for d in DIMS}
    chunks = dict(chunks) if chunks else choose_chunks(sizes, access=access, target_mb=target_mb)
    chunks = {d: chunks.get(d, -1) for d in DIMS}
    log.info("convert %s → %s with chunks %s", src, out, chunks)
    ds = ds.chunk({d: sizes[d] if chunks[d] == -1 else min(chunks[d], sizes[d]) for d in DIMS})
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
        manifest = {"format_version": MANIFEST_VERSION, "source": _source_name(src),
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
