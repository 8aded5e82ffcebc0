"""Serving gap-fill predictions: the server's fusion models, and filling a posted cube.

NDVI gaps are filled with a fusion model from a models folder; without one, with the
documented linear baseline (:func:`fusecube.fusion.baselines.gapfill`), and the answer says so.
Pixels without any NDVI observation stay NaN whatever the method, and the answer counts them
(:mod:`fusecube.fusion.observed`).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from fusecube.cube import DIMS, NDVI, NDVI_FUSED
from fusecube.errors import ApiError, FusecubeError
from fusecube.fusion.observed import observed_pixels, unobserved_note

log = logging.getLogger(__name__)


@dataclass
class ModelInfo:
    """One fusion model file of the server and whether it loads."""

    name: str
    path: Path
    size_bytes: int
    loadable: bool
    error: str | None = None


class ModelStore:
    """The fusion models (``*.pt``) in a folder, loaded once per file version.

    Args:
        folder: The models folder (may not exist: then there are no models).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[float, object | None, str | None]] = {}

    def paths(self) -> list[Path]:
        """Model files, sorted by name."""
        return sorted(self.folder.glob("*.pt")) if self.folder.is_dir() else []

    def _load(self, path: Path) -> tuple[object | None, str | None]:
        mtime = path.stat().st_mtime
        with self._lock:
            cached = self._cache.get(path)
            if cached and cached[0] == mtime:
                return cached[1], cached[2]
            try:
                from fusecube.fusion.neural.model import NeuralFusion

                model, error = NeuralFusion.load(path, device="cpu"), None
            except FusecubeError as exc:
                model, error = None, str(exc)
            except Exception as exc:  # noqa: BLE001 - any failure means "not loadable"
                model, error = None, f"{type(exc).__name__}: {exc}"
            self._cache[path] = (mtime, model, error)
            return model, error

    def info(self) -> list[ModelInfo]:
        """Every model file, with whether it loads (loading each once per version)."""
        infos = []
        for path in self.paths():
            model, error = self._load(path)
            infos.append(ModelInfo(path.stem, path, path.stat().st_size, model is not None, error))
        return infos

    def get(self, name: str | None):
        """The model ``name`` (file stem), or the first model when None; None when there is none.

        Raises:
            ApiError: 404 for an unknown name, 503 for a model that does not load.
        """
        paths = {p.stem: p for p in self.paths()}
        if name is None:
            if not paths:
                return None, None
            name = sorted(paths)[0]
        if name not in paths:
            known = ", ".join(sorted(paths)) or "none installed"
            raise ApiError(f"No fusion model {name!r} on this server (models: {known}); leave "
                           "'model' out to use the default.", 404)
        model, error = self._load(paths[name])
        if model is None:
            raise ApiError(f"Fusion model {name!r} cannot be loaded: {error}", 503)
        return name, model


@dataclass
class Prediction:
    """A gap-filled cube and how it was filled."""

    cube: xr.Dataset
    method: str
    model: str | None
    note: str
    unobserved_pixels: int = 0
    """Pixels without any NDVI observation: their ``ndvi_fused`` is NaN."""


def fill(ds: xr.Dataset, models: ModelStore, model_name: str | None) -> Prediction:
    """Fill the NDVI gaps of ``ds`` with a fusion model, or the linear baseline without one.

    Pixels never observed keep NaN (a radar network would answer them with a made-up series)
    and the note says how many.

    Raises:
        FusionModelError: The model does not fit the cube (time steps, periods); a 422.
    """
    name, model = models.get(model_name)
    if model is None:
        from fusecube.fusion.baselines import gapfill

        note = ("No fusion model is installed on this server, so the gaps were filled with the "
                "linear-in-time baseline (fusecube.fusion.baselines.gapfill); put a model trained "
                "with `fusecube fuse train` into the server's models folder to use fusion.")
        log.info("predict: no model, linear baseline")
        filled = gapfill(ds, method="linear")
        method = "baseline-linear"
    else:
        filled = model.predict(ds)
        method, note = "fusion", f"Gaps filled by the fusion model {name!r}; observed NDVI kept."
    out = filled[[NDVI_FUSED]]
    seen = observed_pixels(np.asarray(ds[NDVI].transpose(*DIMS).values, np.float32))
    out[NDVI_FUSED] = out[NDVI_FUSED].where(xr.DataArray(seen, dims=DIMS[1:]))
    unobserved = int(seen.size - seen.sum())
    if unobserved:
        note = f"{note} {unobserved_note(unobserved, seen.size)}"
        log.info("predict: %d of %d pixels never observed, left NaN", unobserved, seen.size)
    out[NDVI_FUSED].attrs["gapfill_method"] = method
    out.attrs.update(title="fusecube gap-filled NDVI", gapfill_method=method,
                     fusion_model=name or "", Conventions="CF-1.8")
    return Prediction(out, method, name, note, unobserved)


def to_netcdf_bytes(ds: xr.Dataset) -> bytes:
    """The cube as NetCDF4 bytes (with its CRS as a CF grid mapping)."""
    with tempfile.TemporaryDirectory(prefix="fusecube-predict-") as tmp:
        path = Path(tmp) / "fused.nc"
        ds.to_netcdf(path, engine="h5netcdf",
                     encoding={NDVI_FUSED: {"zlib": True, "complevel": 4}})
        return path.read_bytes()


def to_json(prediction: Prediction) -> dict:
    """The answer to a JSON prediction request: arrays with ``null`` for NaN."""
    values = prediction.cube[NDVI_FUSED].transpose(*DIMS).values.astype(float)
    rounded = np.round(values, 5)
    nested = np.where(np.isfinite(rounded), rounded, None).tolist()
    return {"method": prediction.method, "model": prediction.model, "note": prediction.note,
            "unobserved_pixels": prediction.unobserved_pixels,
            "dims": list(DIMS), "shape": list(values.shape),
            "time": [str(np.datetime_as_string(t, unit="D"))
                     for t in prediction.cube["time"].values],
            NDVI_FUSED: nested}


def fill_upload(data: bytes, filename: str, models: ModelStore, model_name: str | None, *,
                max_pixels: int, max_times: int) -> tuple[bytes, Prediction]:
    """Gap-fill an uploaded NetCDF file or zipped zarr store (see :mod:`fusecube.sources.upload`).

    Returns:
        The filled cube as NetCDF bytes, and how it was filled.
    """
    from fusecube.sources.upload import cube_from_upload

    with tempfile.TemporaryDirectory(prefix="fusecube-upload-") as tmp:
        cube = cube_from_upload(data, filename, max_pixels, max_times, Path(tmp))
        prediction = fill(cube, models, model_name)
        return to_netcdf_bytes(prediction.cube), prediction


def fill_json(body, models: ModelStore, *, max_pixels: int, max_times: int) -> dict:
    """Gap-fill a cube sent as :class:`~fusecube.sources.upload.CubeJSON`; the answer as JSON."""
    from fusecube.sources.upload import cube_from_json

    cube = cube_from_json(body, max_pixels, max_times)
    return to_json(fill(cube, models, body.model))
