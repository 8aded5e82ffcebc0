"""Writing the cube model's predictions: ``ndvi_fused`` cubes, overlapping windows blended."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fusecube.cube import CF_ATTRS, DIMS, NDVI, NDVI_FUSED, read_cube, write_cube
from fusecube.errors import CubeModelError, require
from fusecube.fusion.neural.features import screen_zero_periods

require("lightning", "ml")  # names the missing extra before the import below fails
from lightning.pytorch.callbacks import BasePredictionWriter  # noqa: E402

log = logging.getLogger(__name__)


def _tent(n: int) -> np.ndarray:
    """Blending weights along a window axis: highest in the middle, > 0 at the edges."""
    i = np.arange(n, dtype=np.float32)
    return np.minimum(i + 1, n - i)


class FusedCubeWriter(BasePredictionWriter):
    """Write ``ndvi_fused`` cubes from ``predict``: observed NDVI kept, gaps from the model.

    Overlapping windows are blended with tent weights. Each input cube ``ROOT/a/cube.zarr``
    becomes ``output_dir/a/cube.zarr`` (its variables plus ``ndvi_fused``), written atomically.

    Args:
        output_dir: Folder of the fused cubes (None: write nothing).
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.written: list[Path] = []
        self._acc: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def on_predict_start(self, trainer, pl_module) -> None:
        """Reset the accumulators; predicting on several devices is refused (one writer)."""
        if self.output_dir is not None and trainer.world_size > 1:
            raise CubeModelError("`fusecube cube-model predict` writes one cube per input from one process; "
                                 "run it with --trainer.devices 1.")
        self._acc, self.written = {}, []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx) -> None:
        """Add the batch's windows to the running weighted sums."""
        if self.output_dir is None:
            return
        shapes = trainer.datamodule.predict_shapes
        ndvi = prediction["ndvi"].numpy()
        _, n_t, size, _ = ndvi.shape
        weight = _tent(n_t)[:, None, None] * _tent(size)[None, :, None] * _tent(size)[None, None, :]
        for k in range(ndvi.shape[0]):  # a loop over windows of the batch, not pixels
            src, t, r, c = (int(prediction[key][k]) for key in ("source", "time", "row", "col"))
            if src not in self._acc:
                self._acc[src] = (np.zeros(shapes[src], np.float32), np.zeros(shapes[src], np.float32))
            total, wsum = self._acc[src]
            sel = (slice(t, t + n_t), slice(r, r + size), slice(c, c + size))
            total[sel] += weight * ndvi[k]
            wsum[sel] += weight

    def on_predict_end(self, trainer, pl_module) -> None:
        """Write one fused cube per input cube."""
        if self.output_dir is None:
            return
        dm = trainer.datamodule
        digest = ((dm.restored or {}).get("data_manifest") or {}).get("digest", "")
        for src, (total, wsum) in sorted(self._acc.items()):
            cube = dm.cubes[src]
            ds = read_cube(cube, chunks={})
            obs = ds[NDVI].transpose(*DIMS).values
            n_t = obs.shape[0]
            obs = screen_zero_periods(obs.reshape(n_t, -1).T).T.reshape(obs.shape)
            with np.errstate(invalid="ignore", divide="ignore"):
                model = total / wsum
            fused = np.where(np.isfinite(obs), obs, model).astype(np.float32)
            out = ds.assign({NDVI_FUSED: (DIMS, fused, {**CF_ATTRS[NDVI_FUSED], "gapfill_method": "unet3d",
                                                        "training_data_digest": digest})})
            rel = cube.relative_to(dm.zarr_root) if cube != dm.zarr_root else Path(cube.name)
            path = write_cube(out, self.output_dir / rel)
            log.info("fused cube %s", path)
            self.written.append(path)
