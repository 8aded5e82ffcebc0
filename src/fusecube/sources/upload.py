"""Reading a small posted cube strictly: a NetCDF file, a zipped zarr store, or JSON arrays.

A posted cube must have ``vv``, ``vh`` and ``ndvi`` on ``(time, y, x)``, float32 (files), a
datetime time axis, a CRS, and stay within the size limits the caller gives. Every problem is
an :class:`~fusecube.errors.ApiError` carrying the HTTP status the API answers with.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import xarray as xr
from pydantic import BaseModel, ConfigDict, Field

from fusecube.cube import DIMS, NDVI, NDVI_QUALITY, VH, VV, validate_cube
from fusecube.errors import ApiError, CubeSchemaError, FusecubeError

REQUIRED = (VV, VH, NDVI)
#: Most files a zipped zarr store may hold, and the most bytes they may unpack to (x upload).
MAX_ZIP_MEMBERS = 4096
ZIP_EXPANSION = 4


class CubeJSON(BaseModel):
    """A small cube as JSON arrays (``null`` for a missing value).

    Pixel-centre coordinates ``x`` and ``y`` must be evenly spaced, in the CRS ``crs``.
    """

    model_config = ConfigDict(extra="forbid")

    time: list[str] = Field(min_length=2, description="ISO dates of the time steps, increasing.")
    x: list[float] = Field(min_length=1, description="Pixel-centre x coordinates (CRS units).")
    y: list[float] = Field(min_length=1, description="Pixel-centre y coordinates (CRS units).")
    crs: str = Field(min_length=1, max_length=4096, description="CRS, e.g. 'EPSG:32749'.")
    vv: list[list[list[float | None]]] = Field(description="S1 VV sigma0 (linear), [time][y][x].")
    vh: list[list[list[float | None]]] = Field(description="S1 VH sigma0 (linear), [time][y][x].")
    ndvi: list[list[list[float | None]]] = Field(description="Observed NDVI, [time][y][x].")
    ndvi_quality: list[list[list[float | None]]] | None = Field(
        None, description="Observation quality 0..1, [time][y][x] (optional).")
    model: str | None = Field(None, max_length=200, description="Fusion model name (default: first).")


def _check_size(shape: dict[str, int], max_pixels: int, max_times: int) -> None:
    t, ny, nx = shape.get("time", 0), shape.get("y", 0), shape.get("x", 0)
    if t > max_times or ny * nx > max_pixels:
        raise ApiError(f"Cube of {t} time steps x {ny} x {nx} px is larger than this server "
                       f"accepts ({max_times} time steps, {max_pixels} pixels); send it in "
                       "smaller tiles.", 413)
    if t < 2 or ny < 1 or nx < 1:
        raise ApiError(f"Cube of {t} time steps x {ny} x {nx} px is too small to gap-fill; send "
                       "at least 2 time steps and 1 pixel.", 422)


def _spacing(values: np.ndarray, name: str) -> None:
    if values.size > 1:
        steps = np.diff(values)
        if not (np.all(np.isfinite(values)) and np.allclose(steps, steps[0], rtol=1e-6)
                and steps[0] != 0):
            raise ApiError(f"Coordinate {name!r} must be evenly spaced pixel centres (a regular "
                           "grid); resample the cube to a regular grid first.", 422)


def cube_from_json(body: CubeJSON, max_pixels: int, max_times: int) -> xr.Dataset:
    """Build and validate a cube from :class:`CubeJSON` arrays (cast to float32).

    Raises:
        ApiError: 413 over the size limits, 422 for ragged arrays, bad times, grid or CRS.
    """
    t, ny, nx = len(body.time), len(body.y), len(body.x)
    _check_size({"time": t, "y": ny, "x": nx}, max_pixels, max_times)
    arrays = {}
    for name in (*REQUIRED, NDVI_QUALITY):
        data = getattr(body, name)
        if data is None:
            continue
        if len(data) != t or any(len(row) != ny for row in data) or any(
                len(line) != nx for row in data for line in row):
            raise ApiError(f"Array {name!r} must be [time][y][x] = [{t}][{ny}][{nx}] like 'time', "
                           "'y' and 'x'; it is ragged or of another shape.", 422)
        arrays[name] = (DIMS, np.array(data, dtype=np.float64).astype(np.float32))
    try:
        times = np.array(body.time, dtype="datetime64[ns]")
    except ValueError as exc:
        raise ApiError(f"'time' must hold ISO dates such as 2024-01-07 ({exc}).", 422) from exc
    x, y = np.asarray(body.x, float), np.asarray(body.y, float)
    _spacing(x, "x")
    _spacing(y, "y")
    ds = xr.Dataset(arrays, coords={"time": times, "y": y, "x": x})
    try:
        from odc.geo import CRS

        crs = CRS(body.crs)
    except Exception as exc:  # noqa: BLE001 - pyproj raises several types
        raise ApiError(f"CRS {body.crs[:80]!r} is not understood; give an EPSG code such as "
                       "'EPSG:32749' or a WKT string.", 422) from exc
    ds = ds.odc.assign_crs(crs)
    return _validated(ds, max_pixels, max_times)


def _validated(ds: xr.Dataset, max_pixels: int, max_times: int) -> xr.Dataset:
    for name in REQUIRED:
        if name in ds and ds[name].dims != DIMS:
            raise ApiError(f"Variable {name!r} has dims {ds[name].dims}; the API expects {DIMS}. "
                           f"Transpose it with ds[{name!r}].transpose{DIMS}.", 422)
    _check_size(dict(ds.sizes), max_pixels, max_times)
    try:
        validate_cube(ds, required=REQUIRED)
    except CubeSchemaError as exc:
        raise ApiError(str(exc), 422) from exc
    if NDVI_QUALITY in ds and ds[NDVI_QUALITY].dims != DIMS:
        ds = ds.drop_vars(NDVI_QUALITY)
    keep = [n for n in (*REQUIRED, NDVI_QUALITY) if n in ds]
    return ds[keep].load()


def _safe_extract(archive: zipfile.ZipFile, dest: Path, max_bytes: int) -> Path:
    members = archive.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        raise ApiError(f"The zip holds {len(members)} files, more than {MAX_ZIP_MEMBERS}; send a "
                       "smaller cube or a NetCDF file.", 413)
    if sum(m.file_size for m in members) > max_bytes:
        raise ApiError(f"The zip unpacks to more than {max_bytes // 2**20} MB; send a smaller "
                       "cube.", 413)
    for member in members:
        parts = PurePosixPath(member.filename).parts
        if member.filename.startswith(("/", "\\")) or ".." in parts or ":" in member.filename:
            raise ApiError(f"The zip has an unsafe member name {member.filename!r}; zip the zarr "
                           "store with relative paths.", 422)
    archive.extractall(dest)
    roots = sorted((p.parent for p in dest.rglob("zarr.json")), key=lambda p: len(p.parts))
    roots += sorted((p.parent for p in dest.rglob(".zgroup")), key=lambda p: len(p.parts))
    if not roots:
        raise ApiError("The zip holds no zarr store (no zarr.json or .zgroup); zip the "
                       "cube.zarr folder itself.", 422)
    return roots[0]


def cube_from_upload(data: bytes, filename: str, max_pixels: int, max_times: int,
                     workdir: Path) -> xr.Dataset:
    """Read and validate an uploaded NetCDF file or zipped zarr store.

    Raises:
        ApiError: 415 for another format, 422 for an unreadable or invalid cube, 413 too large.
    """
    head = data[:8]
    try:
        if head.startswith(b"PK\x03\x04"):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                root = _safe_extract(archive, workdir / "cube", ZIP_EXPANSION * max(len(data), 1)
                                     + 2**20)
            v3 = (root / "zarr.json").exists()
            ds = xr.open_zarr(root, consolidated=False if v3 else None, chunks=None)
        elif head.startswith((b"\x89HDF", b"CDF\x01", b"CDF\x02")):
            path = workdir / "cube.nc"
            path.write_bytes(data)
            engine = "h5netcdf" if head.startswith(b"\x89HDF") else "scipy"
            ds = xr.open_dataset(path, engine=engine)
        else:
            raise ApiError(f"Upload {filename[:100]!r} is neither NetCDF nor a zipped zarr store; "
                           "send a .nc file (NetCDF4/HDF5 or classic) or a .zip of a zarr cube.",
                           415)
        _check_size(dict(ds.sizes), max_pixels, max_times)
        return _validated(ds, max_pixels, max_times)
    except (ApiError, FusecubeError):
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt files raise anything
        raise ApiError(f"Upload {filename[:100]!r} cannot be read as a cube "
                       f"({type(exc).__name__}); check that it is a complete NetCDF file or "
                       "zarr zip written by xarray.", 422) from exc

