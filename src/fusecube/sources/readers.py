"""One reader protocol for every source, and :func:`load`, the public way to open a cube.

A :class:`Reader` answers two questions. :meth:`Reader.plan` says what a cube *would* be
(grid, periods, variables) from metadata alone, so a caller can size work or pick a window
before any pixel is read. :meth:`Reader.read` does the I/O on a :class:`~odc.geo.geobox.GeoBox`
(the source's own grid by default) and returns a lazy cube where the source allows it.

Readers exist for zarr/NetCDF stores (:class:`StoreReader`), GeoTIFF stacks
(:class:`GeoTiffReader`), the synthetic scene (:class:`SyntheticReader`) and STAC
(:class:`StacReader`); :class:`fusecube.testing.readers.FakeReader` serves tests from memory.
:func:`reader_for` picks one for a path, a dataset or a :mod:`fusecube.config` source model.

>>> import fusecube
>>> cube = fusecube.load("demak/cube.zarr", chunks={})            # doctest: +SKIP
>>> window = fusecube.load("demak/cube.zarr", geobox=cube.odc.geobox[:256, :256])  # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from fusecube.config import CubeSource, GeoTiffSource, StacSource, SyntheticSource
from fusecube.cube import TIME, read_cube
from fusecube.errors import ConfigError, InputFileError


@dataclass(frozen=True)
class CubePlan:
    """What a source would deliver, known without reading pixels."""

    geobox: GeoBox
    """The source's own grid."""
    times: np.ndarray
    """Period dates (``datetime64[ns]``): centres for stores, starts for imported stacks."""
    description: str
    """The source in words (for messages and provenance)."""


@runtime_checkable
class Reader(Protocol):
    """What every source implements."""

    def plan(self) -> CubePlan:
        """The grid and periods of the source, from metadata only."""
        ...

    def read(self, geobox: GeoBox | None = None, *,
             chunks: dict[str, int] | None = None) -> xr.Dataset:
        """The cube on ``geobox`` (default: the source's grid); lazy when ``chunks`` is given."""
        ...


def on_geobox(ds: xr.Dataset, geobox: GeoBox | None) -> xr.Dataset:
    """``ds`` on ``geobox``: a window when the grids line up, else a nearest-neighbour warp.

    A window of the source grid (same CRS, pixel size and alignment) is a plain slice, so no
    value changes; any other grid is reprojected with nearest neighbour, which moves values
    but never blends an observation with a gap.
    """
    if geobox is None:
        return ds
    source = ds.odc.geobox
    if source == geobox:
        return ds
    if source.crs == geobox.crs and np.allclose(source.resolution.xy, geobox.resolution.xy):
        from odc.geo.overlap import compute_reproject_roi

        roi = compute_reproject_roi(source, geobox)
        whole = tuple(slice(0, n) for n in geobox.shape.yx)
        if roi.paste_ok and roi.read_shrink == 1 and tuple(roi.roi_dst) == whole:
            return ds.isel(y=roi.roi_src[0], x=roi.roi_src[1])
    return ds.odc.reproject(geobox, resampling="nearest")


class StoreReader:
    """A cube already on disk: a zarr store written by fusecube, or a NetCDF file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputFileError(f"Cube {self.path} does not exist; create it with "
                                 "`fusecube synth`, `fusecube fetch` or `fusecube import-geotiff`.")

    def _open(self, chunks: dict[str, int] | None) -> xr.Dataset:
        """A fusecube zarr cube as stored; NetCDF and other zarr through the standardisation.

        NetCDF files and zarr stores not written by fusecube go through
        :func:`fusecube.sources.convert.open_source` (band names, scale, units, NDVI from
        red/NIR, S1 and S2 composited onto common periods); without ``chunks`` they are read
        into memory.
        """
        from fusecube.sources.bands import is_cube_model
        from fusecube.sources.convert import NETCDF_SUFFIXES, open_source

        if self.path.suffix.lower() not in NETCDF_SUFFIXES and (
                (self.path / "zarr.json").exists() or not self.path.is_dir()
                or not any((self.path / m).exists() for m in (".zgroup", ".zmetadata"))):
            ds = read_cube(self.path, chunks=chunks)
            if is_cube_model(ds):
                return ds
        ds = open_source(self.path)
        return ds.chunk(chunks) if chunks is not None else ds.load()

    def plan(self) -> CubePlan:
        """What the source would deliver (see :meth:`Reader.plan`)."""
        ds = self._open({})  # lazy: only the coordinates are read
        return CubePlan(ds.odc.geobox, ds[TIME].values, f"cube {self.path}")

    def read(self, geobox: GeoBox | None = None, *,
             chunks: dict[str, int] | None = None) -> xr.Dataset:
        """The cube on ``geobox`` (see :meth:`Reader.read`)."""
        return on_geobox(self._open(chunks), geobox)


class GeoTiffReader:
    """A folder of per-period or per-date GeoTIFFs (read into memory, then chunked if asked)."""

    def __init__(self, source: GeoTiffSource) -> None:
        self.source = source

    def _options(self) -> dict[str, Any]:
        s = self.source
        return {"start": s.start, "period_days": s.period_days, "dates_file": s.dates_file,
                "aoi": s.aoi, "resolution": s.resolution, "pattern": s.pattern,
                "ndvi_scale": s.ndvi_scale}

    def plan(self) -> CubePlan:
        """What the source would deliver (see :meth:`Reader.plan`)."""
        from fusecube.grid.geobox import resolve_geobox
        from fusecube.sources.geotiff import default_geobox, list_stack, place_in_time

        s = self.source
        files, starts = place_in_time(list_stack(s.folder, pattern=s.pattern), s.start,
                                      s.period_days, s.dates_file)
        geobox = (resolve_geobox(s.aoi, resolution=s.resolution) if s.aoi is not None
                  else default_geobox([f.path for f in files], s.resolution))
        return CubePlan(geobox, starts, f"GeoTIFF stack {s.folder} ({len(files)} files)")

    def read(self, geobox: GeoBox | None = None, *,
             chunks: dict[str, int] | None = None) -> xr.Dataset:
        """The cube on ``geobox`` (see :meth:`Reader.read`)."""
        from fusecube.sources.geotiff import read_geotiff_stack

        ds = read_geotiff_stack(self.source.folder, geobox=geobox, **self._options())
        return ds.chunk(chunks) if chunks is not None else ds

    def write(self, out: Path, progress=None) -> Path:
        """Import the stack as the zarr cube ``out`` (what ``fusecube run`` reads)."""
        from fusecube.sources.geotiff import import_geotiff

        return import_geotiff(self.source.folder, out, progress=progress, **self._options())


class SyntheticReader:
    """The embedded Demak-like scene, generated into ``folder`` (a temporary one by default)."""

    def __init__(self, source: SyntheticSource, folder: str | Path | None = None) -> None:
        from fusecube.sources.synthetic.scene import SceneConfig

        self.scene = SceneConfig(width=source.width, height=source.height, seed=source.seed,
                                 n_periods=source.n_periods, radar_skill=source.radar_skill)
        self.folder = Path(folder) if folder is not None else None

    def plan(self) -> CubePlan:
        """What the source would deliver (see :meth:`Reader.plan`)."""
        from fusecube.grid.periods import period_centres

        s = self.scene
        return CubePlan(s.geobox, period_centres(s.start, s.n_periods, s.period_days),
                        f"synthetic scene {s.width}x{s.height} seed {s.seed}")

    def write(self, folder: Path, progress=None) -> dict[str, Path]:
        """Generate the scene into ``folder``: ``cube``, ``truth`` (and ``blocks``) paths."""
        from fusecube.sources.synthetic.writer import synthesize

        return synthesize(self.scene, folder, progress=progress)

    def read(self, geobox: GeoBox | None = None, *,
             chunks: dict[str, int] | None = None) -> xr.Dataset:
        """The cube on ``geobox`` (see :meth:`Reader.read`)."""
        folder = self.folder or Path(tempfile.mkdtemp(prefix="fusecube-synthetic-"))
        cube = folder / "cube.zarr"
        if not cube.exists():
            self.write(folder)
        return on_geobox(read_cube(cube, chunks=chunks), geobox)


class StacReader:
    """Sentinel-1 and -2 from a STAC API over ``source.aoi``, fetched into ``out`` (resumable)."""

    def __init__(self, source: StacSource, out: str | Path | None = None) -> None:
        self.source = source
        self.out = Path(out) if out is not None else None

    def plan(self) -> CubePlan:
        """What the source would deliver (see :meth:`Reader.plan`)."""
        from fusecube.grid.geobox import aoi_geometry, resolve_geobox
        from fusecube.grid.periods import period_starts

        s = self.source
        if not s.aoi:
            raise ConfigError("The STAC source has no aoi: give a bbox or a vector file.")
        geobox = resolve_geobox(aoi_geometry(s.aoi, crs=s.aoi_crs), resolution=s.resolution)
        days = (np.datetime64(s.end, "D") - np.datetime64(s.start, "D")).astype(int) + 1
        starts = period_starts(s.start, max(1, -(-int(days) // s.period_days)), s.period_days)
        return CubePlan(geobox, starts, f"STAC {s.catalogue} over {s.aoi}")

    def write(self, out: Path, progress=None) -> Path:
        """Fetch the AOI into the zarr cube ``out`` (window reads only; resumes a partial fetch)."""
        from fusecube.sources.stac.fetch_aoi import fetch_aoi

        return fetch_aoi(self.source, out, progress=progress)[0].path

    def read(self, geobox: GeoBox | None = None, *,
             chunks: dict[str, int] | None = None) -> xr.Dataset:
        """The cube on ``geobox`` (see :meth:`Reader.read`)."""
        out = self.out or Path(tempfile.mkdtemp(prefix="fusecube-stac-")) / "cube.zarr"
        return on_geobox(read_cube(self.write(out), chunks=chunks), geobox)


class DatasetReader:
    """An ``xarray.Dataset`` already in memory (or lazy) that carries its grid."""

    def __init__(self, ds: xr.Dataset) -> None:
        self.ds = ds

    def plan(self) -> CubePlan:
        """What the source would deliver (see :meth:`Reader.plan`)."""
        return CubePlan(self.ds.odc.geobox, self.ds[TIME].values, "in-memory dataset")

    def read(self, geobox: GeoBox | None = None, *,
             chunks: dict[str, int] | None = None) -> xr.Dataset:
        """The cube on ``geobox`` (see :meth:`Reader.read`)."""
        ds = self.ds.chunk(chunks) if chunks is not None else self.ds
        return on_geobox(ds, geobox)


SourceLike = (str | Path | xr.Dataset | CubeSource | SyntheticSource | GeoTiffSource
              | StacSource | Reader)


def reader_for(source: SourceLike) -> Reader:
    """The reader of a path (zarr/NetCDF store or GeoTIFF folder), dataset or source model.

    Raises:
        InputFileError: A path that does not exist.
        ConfigError: Something that is not a source.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir() and not (path / "zarr.json").exists() and any(path.glob("*.tif*")):
            return GeoTiffReader(GeoTiffSource(folder=path))
        return StoreReader(path)
    if isinstance(source, xr.Dataset):
        return DatasetReader(source)
    if isinstance(source, CubeSource):
        return StoreReader(source.path)
    if isinstance(source, SyntheticSource):
        return SyntheticReader(source)
    if isinstance(source, GeoTiffSource):
        return GeoTiffReader(source)
    if isinstance(source, StacSource):
        return StacReader(source)
    if isinstance(source, Reader):
        return source
    raise ConfigError(f"Cannot read {type(source).__name__!r} as a cube; give a zarr/NetCDF path, a "
                      "GeoTIFF folder, an xarray.Dataset or a fusecube.config source "
                      "(CubeSource, SyntheticSource, GeoTiffSource, StacSource).")


def load(source: SourceLike, *, geobox: GeoBox | None = None, like: xr.Dataset | None = None,
         chunks: dict[str, int] | None = None) -> xr.Dataset:
    """Open a cube from any source, on one grid, lazily where the source allows it.

    Args:
        source: A zarr store or NetCDF file, a folder of GeoTIFFs, an ``xarray.Dataset``, a
            :mod:`fusecube.config` source (``CubeSource``, ``SyntheticSource``,
            ``GeoTiffSource``, ``StacSource``) or any :class:`Reader`.
        geobox: Read onto this grid: a window of the source's grid is sliced (values
            unchanged); another grid is warped with nearest neighbour.
        like: Read onto the grid of this dataset (instead of ``geobox``), e.g. to put S1 and
            S2 cubes loaded separately on one grid.
        chunks: Dask chunks (``{}`` for the stored ones); None reads without dask.

    Returns:
        The cube (``vv``, ``vh``, ``ndvi`` over ``(time, y, x)``, with its CRS).

    Raises:
        InputFileError: The path does not exist or cannot be read.
        ConfigError: ``source`` is not a source, or both ``geobox`` and ``like`` are given.
    """
    if geobox is not None and like is not None:
        raise ConfigError("Give geobox= or like=, not both.")
    if like is not None:
        geobox = like.odc.geobox
    return reader_for(source).read(geobox, chunks=chunks)
