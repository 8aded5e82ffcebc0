"""A finished run's folder as a catalogue: its product files, configuration, gates and cubes.

The API serves these (``/runs/{id}/products``); :mod:`fusecube.products.overlays` and
:mod:`fusecube.products.pixel` read the result cube through :func:`open_result`.
"""

from __future__ import annotations

import json
from pathlib import Path

import xarray as xr

from fusecube.config import CubeSource, RunConfig
from fusecube.cube import read_cube
from fusecube.errors import ApiError

#: Product files of a run folder, by glob, with their kind and media type.
PRODUCT_GLOBS: tuple[tuple[str, str, str], ...] = (
    ("report.html", "report", "text/html"),
    ("run.json", "summary", "application/json"),
    ("phenology.nc", "netcdf", "application/x-netcdf"),
    ("cogs/*.tif", "cog", "image/tiff"),
    ("figures/*.png", "figure", "image/png"),
    ("*.csv", "table", "text/csv"),
)


def list_products(out: Path) -> list[dict]:
    """The product files of a run folder (name relative to it, kind, media type, size)."""
    found = []
    for pattern, kind, media in PRODUCT_GLOBS:
        for path in sorted(out.glob(pattern)):
            if path.is_file() and not path.name.startswith("."):
                found.append({"name": path.relative_to(out).as_posix(), "kind": kind,
                              "media_type": media, "size_bytes": path.stat().st_size})
    return found


def product_file(out: Path, name: str) -> tuple[Path, str]:
    """The file of product ``name`` and its media type; only listed products are served.

    Raises:
        ApiError: 404 for any name that is not one of :func:`list_products` (which rules out
            ``..``, absolute paths and links out of the run folder).
    """
    for item in list_products(out):
        if item["name"] == name:
            path = (out / name).resolve()
            if path.is_relative_to(out.resolve()):
                return path, item["media_type"]
    raise ApiError(f"Run has no product {name!r}; GET /runs/{{id}}/products lists them.", 404)


def run_config(record) -> RunConfig:
    """The configuration recorded with a run."""
    return RunConfig.model_validate_json(record.config)


def run_gates(out: Path) -> list[dict]:
    """The quality gates recorded in a run's ``run.json`` (gate, stage, status, message)."""
    path = out / "run.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    gates = (summary.get("screen") or {}).get("gates") or []
    return [{k: g.get(k) for k in ("gate", "stage", "status", "message")} for g in gates]


def open_result(out: Path) -> xr.Dataset:
    """The result cube of a run folder.

    Raises:
        ApiError: 409 while the run has no ``result.zarr`` yet.
    """
    path = out / "result.zarr"
    if not path.exists():
        raise ApiError("This run has no results yet (result.zarr appears once all blocks are "
                       "written); wait for it to finish, or resume it if it stopped.", 409)
    return read_cube(path)


def open_input(out: Path, config: RunConfig) -> xr.Dataset | None:
    """The input cube a run read (its own copy for a synthetic scene), None when it is gone."""
    path = config.source.path if isinstance(config.source, CubeSource) else out / "input" / "cube.zarr"
    return read_cube(path) if Path(path).exists() else None


def calendar_labels(ds: xr.Dataset, start_month: int) -> tuple[list[str], list[str]]:
    """Labels of a result's season slots and of its years."""
    from fusecube.grid.periods import year_label
    from fusecube.stages.phenology import season_labels

    seasons = season_labels(ds, start_month) if "season_year" in ds.coords else []
    years = [year_label(int(y), start_month) for y in ds["year"].values] if "year" in ds.dims else []
    return seasons, years


def crs_name(crs) -> str:
    """``EPSG:32749`` where the CRS has an EPSG code, else its WKT."""
    return f"EPSG:{crs.epsg}" if crs.epsg else crs.to_wkt()
