"""Gap-filling with a trained fusion model: batched over all pixels of a block.

Observed NDVI values are kept; only the gaps (NaN, and periods screened out as broken) take the
model's prediction. On CUDA the network runs under bf16 autocast with TF32 and pinned memory;
on CPU in float32.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import xarray as xr

from fusecube.cube import CF_ATTRS, DIMS, NDVI, NDVI_FUSED, NDVI_QUALITY, TIME, VH, VV
from fusecube.errors import CubeSchemaError
from fusecube.fusion.neural.features import (
    assemble,
    calendar_features,
    optical_features,
    radar_features,
    screen_zero_periods,
)
from fusecube.fusion.neural.model import FusionModel, _torch, as_numpy
from fusecube.grid.periods import to_days

log = logging.getLogger(__name__)

BATCH_PIXELS = 1024
"""Pixels per forward pass on CPU: activations stay in cache (measured ~2.5x less CPU time than
16 384 pixels per pass); 64x that on CUDA, where large batches pay."""


def predict_array(model: FusionModel, radar: np.ndarray, ndvi: np.ndarray,
                  quality: np.ndarray | None, times_days: np.ndarray, *,
                  batch_pixels: int | None = None) -> np.ndarray:
    """Model NDVI at every step of ``(N, T)`` series (observed values are *not* kept here).

    Args:
        model: The fitted model.
        radar: ``(N, R, T)`` raw radar channels (``model.radar_features``).
        ndvi: ``(N, T)`` observed NDVI, NaN missing.
        quality: ``(N, T)`` observation quality, or None for all clear.
        times_days: ``(T,)`` float days.
        batch_pixels: Pixels per forward pass.

    Returns:
        ``(N, T)`` float32 predictions clipped to the NDVI range [-1, 1].
    """
    torch = _torch()
    net = model.net
    device = next(net.parameters()).device
    cuda = device.type == "cuda"
    batch_pixels = batch_pixels or (64 * BATCH_PIXELS if cuda else BATCH_PIXELS)
    quality = np.ones_like(ndvi) if quality is None else quality
    calendar = calendar_features(times_days)
    out = np.empty(ndvi.shape, np.float32)
    net.eval()
    with torch.inference_mode():
        for start in range(0, ndvi.shape[0], batch_pixels):
            sl = slice(start, start + batch_pixels)
            x = assemble(model.normalizer.transform(radar[sl]), calendar,
                         optical_features(ndvi[sl], quality[sl], times_days))
            xt = torch.from_numpy(x)
            if cuda:
                xt = xt.pin_memory().to(device, non_blocking=True)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
                out[sl] = as_numpy(net(xt))
    return np.clip(out, -1.0, 1.0)


def fuse(block: xr.Dataset, *, model: FusionModel, batch_pixels: int | None = None) -> xr.Dataset:
    """Add ``ndvi_fused``: observed NDVI kept, gaps filled by the fusion model.

    Args:
        block: In-memory cube block ``(time, y, x)`` with ``vv``, ``vh``, ``ndvi`` and
            optionally ``ndvi_quality``.
        model: A trained :class:`~fusecube.fusion.neural.model.FusionModel`.
        batch_pixels: Pixels per forward pass (default: :data:`BATCH_PIXELS`).

    Returns:
        The block with ``ndvi_fused`` added.
    """
    missing = [n for n in (VV, VH, NDVI) if n not in block]
    if missing:
        raise CubeSchemaError(f"Fusion needs variables {missing} in the cube; it has "
                              f"{sorted(block.data_vars)}. Add the Sentinel-1 VV/VH bands.")
    series = {n: np.asarray(block[n].transpose(*DIMS).values, np.float32) for n in (VV, VH, NDVI)}
    t, ny, nx = series[NDVI].shape
    radar = radar_features(series, model.radar_features, window=model.window)
    ndvi = screen_zero_periods(series[NDVI].reshape(t, -1).T)
    quality = (block[NDVI_QUALITY].transpose(*DIMS).values.reshape(t, -1).T
               if NDVI_QUALITY in block else None)
    pred = predict_array(model, radar, ndvi, quality, to_days(block[TIME].values),
                         batch_pixels=batch_pixels)
    fused = np.where(np.isfinite(ndvi), ndvi, pred).astype(np.float32)
    out = block.copy()
    out[NDVI_FUSED] = (DIMS, fused.T.reshape(t, ny, nx),
                       {**CF_ATTRS[NDVI_FUSED], "gapfill_method": "fusion"})
    return out


def fuse_cube(cube: xr.Dataset, *, model: FusionModel, out: str | Path, block: int = 256) -> Path:
    """Gap-fill a whole (lazy) cube block by block and write it with ``ndvi_fused`` to ``out``.

    All-zero NDVI periods (broken composites) are screened out first, as the pipeline does.
    Blocks are computed one at a time, so memory stays bounded by the block size; the store is
    written atomically.

    Args:
        cube: The cube (dask-backed is fine).
        model: The trained model.
        out: Output zarr path.
        block: Block edge in pixels.

    Returns:
        The path written.
    """
    import dask

    from fusecube.cube import X, Y, write_cube
    from fusecube.quality.gates import apply_screen, screen_periods

    screen = screen_periods(cube)
    inputs = [n for n in (VV, VH, NDVI, NDVI_QUALITY) if n in cube]
    lazy = cube[inputs].chunk({TIME: -1, Y: block, X: block})
    template = lazy[[NDVI]].rename({NDVI: NDVI_FUSED})
    template[NDVI_FUSED].attrs = {**CF_ATTRS[NDVI_FUSED], "gapfill_method": "fusion"}

    def fill(part: xr.Dataset) -> xr.Dataset:
        return fuse(apply_screen(part, screen), model=model)[[NDVI_FUSED]]

    fused = xr.map_blocks(fill, lazy, template=template)
    result = cube.assign({NDVI_FUSED: fused[NDVI_FUSED]})
    with dask.config.set(scheduler="synchronous"):  # one block at a time: bounded memory
        return write_cube(result, out, chunks={TIME: -1, Y: block, X: block})
