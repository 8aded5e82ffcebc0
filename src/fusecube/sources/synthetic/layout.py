"""2-D layout of a synthetic scene: land classes, irrigation blocks, their calendars, and clouds.

Sea and fish ponds lie along a northern coast; rice paddy is laid out as irrigation blocks
(Voronoi cells) growing 2 or 3 seasons a year, with transplanting dates drifting in waves
across blocks. Clouds are smooth random fields, thresholded to a cloud share per period
(>=70 % in the wet season, ~30 % in the dry one).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

from fusecube.grid.periods import period_centres
from fusecube.sources.synthetic.scene import OTHER_CROP, PADDY, POND, SETTLEMENT, TREES, WATER, SceneConfig


@dataclass
class Layout:
    """2-D layout of the scene: classes, irrigation blocks and their calendars."""

    land_class: np.ndarray  # (H, W) uint8
    block_id: np.ndarray  # (H, W) int32, -1 outside paddy
    block_seasons: np.ndarray  # (B,) 2 or 3
    block_offset: np.ndarray  # (B,) days of calendar drift
    cloud_field: np.ndarray  # (T, H, W) float16 smooth random field
    cloud_threshold: np.ndarray  # (T,) cloud where field > threshold
    haze_margin: float
    zero_period: int
    clear_period_missing: int


def _coarse_shape(shape: tuple[int, int], sigma: float) -> tuple[int, int]:
    factor = max(1, int(sigma // 4))
    return max(2, shape[0] // factor + 2), max(2, shape[1] // factor + 2)


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth Gaussian random field, zero mean, unit std (coarse grid then zoom for speed)."""
    return _smooth(rng.standard_normal(_coarse_shape(shape, sigma)), shape, sigma)


def _smooth(white: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """The field of :func:`_noise` from its white noise (drawn on the coarse grid)."""
    factor = max(1, int(sigma // 4))
    coarse = white.shape
    field = ndimage.gaussian_filter(white, sigma / factor, mode="wrap")
    field = ndimage.zoom(field, (coarse[0] * factor / coarse[0], coarse[1] * factor / coarse[1]),
                         order=1)[: shape[0], : shape[1]]
    if field.shape != shape:
        field = np.pad(field, [(0, shape[0] - field.shape[0]), (0, shape[1] - field.shape[1])], "edge")
    return (field - field.mean()) / (field.std() + 1e-12)


def cloud_fractions(cfg: SceneConfig, rng: np.random.Generator) -> np.ndarray:
    """Target cloud fraction per period: wet season (Nov-Mar) >= 0.7, dry season ~0.3."""
    months = pd.DatetimeIndex(period_centres(cfg.start, cfg.n_periods, cfg.period_days)).month
    wet = np.isin(months, [11, 12, 1, 2, 3])
    shoulder = np.isin(months, [4, 10])
    frac = np.where(wet, rng.uniform(0.72, 0.95, cfg.n_periods),
                    np.where(shoulder, rng.uniform(0.4, 0.6, cfg.n_periods),
                             rng.uniform(0.15, 0.4, cfg.n_periods)))
    wet_idx = np.flatnonzero(wet)
    if wet_idx.size:
        frac[wet_idx[min(5, wet_idx.size - 1)]] = 1.0  # one fully clouded period
    return frac


def _cloud_fields(rng: np.random.Generator, shape: tuple[int, int], frac: np.ndarray,
                  workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Cloud fields ``(T, H, W)`` and their thresholds for the cloud fractions ``frac``.

    The white noise is drawn in period order from ``rng`` (a few periods at a time, so memory
    stays bounded); smoothing and thresholds run on ``workers`` threads. The bits do not
    depend on ``workers``.
    """
    n_periods = frac.size
    cloud_field = np.empty((n_periods, *shape), dtype=np.float16)
    threshold = np.empty(n_periods)

    def one(k: int, broad: np.ndarray, fine: np.ndarray) -> None:
        field = _smooth(broad, shape, 16) + 0.35 * _smooth(fine, shape, 3)
        cloud_field[k] = field
        threshold[k] = np.inf if frac[k] <= 0 else (
            -np.inf if frac[k] >= 1 else np.quantile(field, 1 - frac[k]))

    batch = max(1, 2 * workers)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, n_periods, batch):
            draws = [(k, rng.standard_normal(_coarse_shape(shape, 16)),
                      rng.standard_normal(_coarse_shape(shape, 3)))
                     for k in range(start, min(start + batch, n_periods))]
            list(pool.map(lambda d: one(*d), draws))
    return cloud_field, threshold


def make_layout(cfg: SceneConfig, *, workers: int = 1) -> Layout:
    """Draw the 2-D layout (classes, blocks, calendars, cloud fields) from the seed.

    Args:
        cfg: Scene parameters.
        workers: Threads for the nearest-seed search and the cloud fields (the bits do not
            depend on it).
    """
    rng = np.random.default_rng([cfg.seed, 1])
    h, w = cfg.height, cfg.width
    rows = np.arange(h)[:, None]
    cols = np.arange(w)[None, :]
    scale = max(min(h, w) / 4.0, 8.0)
    # coast along the north: sea, then a belt of fish ponds
    coast = (0.05 * h + 0.03 * h * np.sin(2 * np.pi * cols / w * 1.3 + rng.uniform(0, 6))).astype(float)
    coast += 2.0 * _noise(rng, (1, w), 6)[0]
    belt = 0.10 * h
    land_class = np.full((h, w), OTHER_CROP, dtype=np.uint8)
    sea = rows < coast
    ponds = (rows >= coast) & (rows < coast + belt) & (_noise(rng, (h, w), 4) > -0.6)
    # irrigation blocks: Voronoi cells of seeds ~1 km apart
    spacing = min(20.0, np.sqrt(h * w / 30.0))  # ~1 km blocks; at least ~30 in tiny scenes
    n_blocks = max(4, int(h * w / spacing**2))
    seeds = np.column_stack([rng.uniform(0, h, n_blocks), rng.uniform(0, w, n_blocks)])
    _, nearest = cKDTree(seeds).query(np.column_stack([np.repeat(np.arange(h), w) + 0.5,
                                                       np.tile(np.arange(w), h) + 0.5]),
                                      workers=max(1, workers))
    cell = nearest.reshape(h, w).astype(np.int32)
    land = ~sea & ~ponds
    suitability = _noise(rng, (h, w), scale) + 1.5 * (rows / h)  # paddy inland, south
    seed_r = np.clip(seeds[:, 0].astype(int), 0, h - 1)
    seed_c = np.clip(seeds[:, 1].astype(int), 0, w - 1)
    cell_score = suitability[seed_r, seed_c]
    cell_land = np.bincount(cell[land], minlength=n_blocks)
    order = np.argsort(-cell_score)
    cum = np.cumsum(cell_land[order])
    n_paddy = int(np.argmin(np.abs(cum - cfg.paddy_fraction * h * w))) + 1  # closest to target
    is_paddy_cell = np.zeros(n_blocks, bool)
    is_paddy_cell[order[:n_paddy]] = True
    paddy = land & is_paddy_cell[cell]
    settlement = land & ~paddy & (_noise(rng, (h, w), 5) > 1.0)
    trees = land & ~paddy & ~settlement & (_noise(rng, (h, w), 8) > 0.6)
    land_class[sea] = WATER
    land_class[ponds] = POND
    land_class[settlement] = SETTLEMENT
    land_class[trees] = TREES
    land_class[paddy] = PADDY
    # renumber paddy blocks 0..B-1
    paddy_cells = np.flatnonzero(is_paddy_cell & (cell_land > 0))
    remap = np.full(n_blocks, -1, np.int32)
    remap[paddy_cells] = np.arange(paddy_cells.size, dtype=np.int32)
    block_id = np.where(paddy, remap[cell], -1).astype(np.int32)
    # calendars: 3 seasons where irrigation is reliable (a smooth field), drift in waves
    reliability = _noise(rng, (h, w), scale)[seed_r[paddy_cells], seed_c[paddy_cells]]
    three = reliability > np.quantile(reliability, 1 - cfg.three_season_fraction)
    block_seasons = np.where(three, 3, 2).astype(np.int8)
    angle = rng.uniform(0, np.pi)
    wavelength = max(min(h, w) * 0.6, 40.0)
    along = seeds[paddy_cells, 0] * np.sin(angle) + seeds[paddy_cells, 1] * np.cos(angle)
    wave = 12.0 + 11.0 * np.sin(2 * np.pi * along / wavelength)
    block_offset = np.clip(wave + rng.uniform(-3, 3, paddy_cells.size), 0, 25)
    # clouds
    frac = cloud_fractions(cfg, rng)
    cloud_field, threshold = _cloud_fields(rng, (h, w), frac, workers)
    dry = np.flatnonzero(frac < 0.45)
    zero_period = int(dry[len(dry) // 2]) if dry.size else cfg.n_periods // 2
    return Layout(land_class, block_id, block_seasons, block_offset, cloud_field, threshold,
                  haze_margin=0.35, zero_period=zero_period, clear_period_missing=-1)
