"""One generation tile of a synthetic scene: cube variables and ground truth.

Tiles are fixed (:data:`~fusecube.sources.synthetic.scene.TILE`) and seeded by their index,
so the scene does not depend on output chunking and memory stays flat as the scene grows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fusecube.cube import (
    NDVI,
    NDVI_QUALITY,
    VH,
    VV,
)
from fusecube.grid.periods import agricultural_years, period_centres, to_days
from fusecube.kernels.seasons import detect_seasons
from fusecube.sources.synthetic.curves import (
    PaddyParams,
    _water_cloud,
    decouple_radar,
    other_curves,
    paddy_calendar,
    paddy_curves,
)
from fusecube.sources.synthetic.layout import Layout
from fusecube.sources.synthetic.scene import MAX_SEASONS, PADDY, SceneConfig
from fusecube.stages.phenology import PhenologyConfig, assign_to_years


def generate_tile(cfg: SceneConfig, layout: Layout, index: tuple[int, int],
                  roi: tuple[slice, slice]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Generate the cube variables and truth of one tile (arrays ``(T, h, w)`` / ``(h, w)``)."""
    rng = np.random.default_rng([cfg.seed, 2, *index])
    cls = layout.land_class[roi].reshape(-1)
    block = layout.block_id[roi].reshape(-1)
    h = roi[0].stop - roi[0].start
    w = roi[1].stop - roi[1].start
    n = cls.size
    centres = period_centres(cfg.start, cfg.n_periods, cfg.period_days)
    days = to_days(centres)
    start_day = float(to_days(np.array([np.datetime64(cfg.start)]))[0])
    ndvi_true = other_curves(cls, days, rng)
    flood = np.zeros((n, days.size))
    paddy = cls == PADDY
    params = None
    if paddy.any():
        params = paddy_calendar(layout.block_seasons[block[paddy]], layout.block_offset[block[paddy]],
                                start_day, rng)
        ndvi_true[paddy], flood[paddy] = paddy_curves(params, days)
    # radar: regional soil wetness by month plus local noise, speckle per acquisition
    months = pd.DatetimeIndex(centres).month
    wetness = np.where(np.isin(months, [11, 12, 1, 2, 3]), 0.33, 0.2)
    mv = wetness[None, :] + rng.normal(0, 0.04, (n, days.size))
    roughness = rng.normal(0, 1.0, (n, 1))
    vv, vh = _water_cloud(ndvi_true, flood, mv, roughness, cls[:, None])
    if cfg.radar_skill < 1.0:  # a stream of its own: the default scene draws nothing more
        vv, vh = decouple_radar(vv, vh, cfg.radar_skill, np.random.default_rng([cfg.seed, 3, *index]))
    vv = vv * rng.gamma(cfg.enl, 1 / cfg.enl, vv.shape)
    vh = vh * rng.gamma(cfg.enl, 1 / cfg.enl, vh.shape)
    # optics: noise, haze at cloud edges, clouds, one period of bad zeros
    field = layout.cloud_field[:, roi[0], roi[1]].reshape(cfg.n_periods, -1).T.astype(np.float32)
    thr = layout.cloud_threshold[None, :]
    cloud = field > thr
    haze = np.clip((field - (thr - layout.haze_margin)) / layout.haze_margin, 0, 1) * ~cloud
    ndvi_obs = ndvi_true + rng.normal(0, 0.02, ndvi_true.shape) - 0.25 * haze
    ndvi_obs = np.clip(ndvi_obs, -1, 1)
    ndvi_obs[cloud] = np.nan
    quality = np.where(cloud, 0.0, 1.0 - haze)
    ndvi_obs[:, layout.zero_period] = 0.0
    quality[:, layout.zero_period] = 1.0

    def grid(a: np.ndarray, dtype=np.float32) -> np.ndarray:  # (N, T) -> (T, h, w), one copy
        return np.array(a.T, dtype=dtype, order="C").reshape(-1, h, w)

    cube = {VV: grid(vv), VH: grid(vh), NDVI: grid(ndvi_obs), NDVI_QUALITY: grid(quality)}
    truth = {"ndvi_true": grid(ndvi_true), "cloud": grid(cloud, np.uint8),
             **{k: grid(v, np.float64 if k != "true_season_count" else np.float32)
                for k, v in _true_seasons(cfg, params, paddy, start_day).items()}}
    return cube, truth


def _true_seasons(cfg: SceneConfig, params: PaddyParams | None, paddy: np.ndarray,
                  start_day: float) -> dict[str, np.ndarray]:
    """True seasons of rice pixels from the noise-free curve sampled every 2 days."""
    pheno = PhenologyConfig()
    centres = period_centres(cfg.start, cfg.n_periods, cfg.period_days)
    years = agricultural_years(centres, pheno.year_start_month)
    n_slots = len(years) * pheno.seasons_per_year
    n = paddy.size
    names = ("sos", "pos", "eos", "planting", "harvest")
    out = {k: np.full((n, n_slots), np.nan) for k in names}
    count = np.full((n, len(years)), np.nan)
    if params is not None:
        end_day = start_day + cfg.n_periods * cfg.period_days
        fine = np.arange(start_day, end_day + 1e-9, 2.0)
        curve, _ = paddy_curves(params, fine)
        det = detect_seasons(curve, fine, pheno.rules)
        # planting/harvest of the generated season holding each detected peak
        for key, source in (("planting", params.transplant), ("harvest", params.harvest)):
            matched = np.full(det["pos"].shape, np.nan)
            for k in range(MAX_SEASONS):
                lo, hi = params.transplant[:, k : k + 1], params.harvest[:, k : k + 1]
                hit = (det["pos"] >= lo) & (det["pos"] <= hi)
                matched = np.where(hit, source[:, k : k + 1], matched)
            det[key] = matched
        placed, placed_count = assign_to_years(det, years[0], len(years), pheno.year_start_month,
                                               pheno.seasons_per_year)
        for k in names:
            out[k][paddy] = placed[k]
        count[paddy] = placed_count
    return {**{f"true_{k}": out[k] for k in names}, "true_season_count": count}
