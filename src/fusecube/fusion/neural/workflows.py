"""Whole-scene neural fusion: the model of a pipeline run, and gap-filling a cube to a store.

These are what ``fusecube run`` (``gapfill: fusion``) and ``fusecube fuse predict`` call;
:class:`~fusecube.fusion.neural.model.NeuralFusion` does the learning and predicting.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import xarray as xr

from fusecube.cube import CF_ATTRS, NDVI, NDVI_FUSED, NDVI_QUALITY, TIME, VH, VV, X, Y
from fusecube.fusion.neural.model import NeuralFusion
from fusecube.fusion.neural.network import select_device
from fusecube.fusion.neural.train import TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    from fusecube.config import RunConfig

log = logging.getLogger(__name__)

#: Threads of :func:`fuse_cube`: one in the network, one reading the next block / writing.
OVERLAP_THREADS = 2


def model_for_run(cube: xr.Dataset, config: RunConfig, *,
                  train_config: TrainConfig | None = None) -> NeuralFusion:
    """The fusion model of a pipeline run: ``config.fusion_model`` if given, else trained here.

    Training samples a bounded number of pixels from the (lazy) cube, so memory does not grow
    with the scene; the trained model is saved as ``config.out / "fusion_model.pt"``.

    Args:
        cube: The whole input cube (dask-backed is fine).
        config: The run configuration.
        train_config: Training options when no model is given (default
            :class:`~fusecube.fusion.neural.train.TrainConfig`).

    Returns:
        The model, on CPU or CUDA.

    Raises:
        FusionModelError: The given model does not fit this cube (features, time steps,
            periods), before any block is processed.
    """
    if config.fusion_model is not None:
        model = NeuralFusion.load(config.fusion_model, device=select_device())
        model.check_input(cube)
        log.info("fusion model loaded from %s", config.fusion_model)
        return model
    model = NeuralFusion(train_config or TrainConfig()).fit(cube)
    path = model.save(Path(config.out) / "fusion_model.pt")
    log.info("fusion model trained on this scene and saved to %s", path)
    return model


def fuse_cube(cube: xr.Dataset, *, model: NeuralFusion, out: str | Path, block: int = 256) -> Path:
    """Gap-fill a whole (lazy) cube block by block and write it with ``ndvi_fused`` to ``out``.

    All-zero NDVI periods (broken composites) are screened out first, as the pipeline does.
    One block is filled at a time while a second thread reads the next block and writes the
    last one (reads and writes overlap the network), so memory stays bounded by about two
    blocks; the store is written atomically.

    Args:
        cube: The cube (dask-backed is fine).
        model: The trained model.
        out: Output zarr path.
        block: Block edge in pixels.

    Returns:
        The path written.

    Raises:
        FusionModelError: The model does not fit the cube (checked before any block).
    """
    import dask

    from fusecube.cube import write_cube
    from fusecube.quality.gates import apply_screen, screen_periods
    from fusecube.storage.atomic import prepare_output

    prepare_output(out, kind="store")  # the output rule, before any work
    model.check_input(cube)
    screen = screen_periods(cube)
    inputs = [n for n in (VV, VH, NDVI, NDVI_QUALITY) if n in cube]
    lazy = cube[inputs].chunk({TIME: -1, Y: block, X: block})
    template = lazy[[NDVI]].rename({NDVI: NDVI_FUSED})
    template[NDVI_FUSED].attrs = {**CF_ATTRS[NDVI_FUSED], "gapfill_method": "fusion"}

    network = threading.Lock()  # one block in the network; the other thread reads and writes

    def fill(part: xr.Dataset) -> xr.Dataset:
        part = apply_screen(part.load(), screen)
        with network:
            return model.predict(part)[[NDVI_FUSED]]

    fused = xr.map_blocks(fill, lazy, template=template)
    result = cube.assign({NDVI_FUSED: fused[NDVI_FUSED]})
    with dask.config.set(scheduler="threads", num_workers=OVERLAP_THREADS):
        return write_cube(result, out, chunks={TIME: -1, Y: block, X: block})
