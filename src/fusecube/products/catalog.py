"""A finished run's folder as a catalogue: its product files, configuration, gates and cubes.

The API serves these (``/runs/{id}/products``); :mod:`fusecube.products.overlays` and
:mod:`fusecube.products.pixel` read the result cube through :func:`open_result`. A run's
products are the files its own manifest lists (:mod:`fusecube.storage.run_manifest`, written
last, when the run finished); the folder is never globbed, so a half-written or foreign file
is never served as a product.
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from pathlib import Path

import xarray as xr

from fusecube.config import CubeSource, RunConfig
from fusecube.cube import read_cube
from fusecube.errors import ApiError

#: Product files of a run folder, by pattern (matched against the manifest's names, one folder
#: level per ``/``), with their kind and media type.
PRODUCT_GLOBS: tuple[tuple[str, str, str], ...] = (
    ("report.html", "report", "text/html"),
    ("run.json", "summary", "application/json"),
    ("phenology.nc", "netcdf", "application/x-netcdf"),
    ("cogs/*.tif", "cog", "image/tiff"),
    ("figures/*.png", "figure", "image/png"),
    ("*.csv", "table", "text/csv"),
)


def list_products(out: Path, run_id: str | None = None) -> list[dict]:
    """The product files of a run, from its manifest (name, kind, media type, size, sha256).

    Args:
        out: The run folder.
        run_id: The run asked about: a folder published by another run (a later run into
            the same folder) lists nothing for it.

    Returns:
        The products, or ``[]`` for a folder without a manifest (a run not finished).
    """
    from fusecube.storage.run_manifest import read_run_manifest

    manifest = read_run_manifest(out)
    if manifest is None or (run_id is not None and manifest.get("run_id") != run_id):
        return []
    found = []
    for pattern, kind, media in PRODUCT_GLOBS:
        for name, entry in sorted(manifest["files"].items()):
            if name.count("/") == pattern.count("/") and fnmatchcase(name, pattern):
                found.append({"name": name, "kind": kind, "media_type": media,
                              "size_bytes": entry.get("bytes"), "sha256": entry.get("sha256")})
    return found


def product_file(out: Path, name: str, run_id: str | None = None) -> tuple[Path, str]:
    """The file of product ``name`` and its media type; only listed products are served.

    Raises:
        ApiError: 404 for any name that is not one of :func:`list_products` (which rules out
            ``..``, absolute paths and links out of the run folder); 409 for a listed file
            that is gone or changed size since the run finished.
    """
    for item in list_products(out, run_id):
        if item["name"] == name:
            path = (out / name).resolve()
            if not path.is_relative_to(out.resolve()):
                break
            if not path.is_file() or path.stat().st_size != item["size_bytes"]:
                raise ApiError(f"Product {name!r} changed or disappeared after the run finished "
                               "(its size differs from the run's manifest); run it again.", 409)
            return path, item["media_type"]
    raise ApiError(f"Run has no product {name!r}; GET /runs/{{id}}/products lists them.", 404)


def published(out: Path, run_id: str) -> bool:
    """Whether the run folder ``out`` holds the finished results of run ``run_id``."""
    from fusecube.storage.run_manifest import read_run_manifest

    manifest = read_run_manifest(out)
    return manifest is not None and manifest.get("run_id") == run_id


def results_folder(record) -> Path:
    """The folder of a run's published results (never another run's, never a half-written one).

    Raises:
        ApiError: 409 while the run has not finished, or when a later run into the same folder
            replaced its results.
    """
    out = Path(record.out)
    if not published(out, record.id):
        raise ApiError(f"Run {record.id} has no results yet in {out.name}: they appear when it "
                       "has finished (or a later run into the same folder replaced them); wait "
                       "for it to finish, or resume it if it stopped.", 409)
    return out


def run_config(record) -> RunConfig:
    """The configuration recorded with a run."""
    return RunConfig.model_validate_json(record.config)


def _summary(out: Path) -> dict:
    """A run's ``run.json`` ({} before it is written)."""
    try:
        return json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def run_gapfill(out: Path) -> dict:
    """The validated gap-fill choice recorded in ``run.json`` (candidates, scores, choice, why)."""
    return _summary(out).get("gapfill") or {}


def run_gates(out: Path) -> list[dict]:
    """Every quality gate of a run (input, mask, stage and result gates), planted ones marked.

    The same list the report and the viewer count (:func:`fusecube.quality.summary.run_gate_summary`).
    """
    from fusecube.quality.summary import run_gate_summary

    return run_gate_summary(out)["gates"]


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
