"""A Demak-like synthetic scene with ground truth, deterministic from a seed.

Land: sea and fish ponds along a northern coast, settlements, trees, other crops and rice
paddy laid out as irrigation blocks (Voronoi cells, also written as polygons). Rice blocks
grow 2 or 3 seasons a year with transplanting dates shared within a block and drifting in
waves across blocks. Each season: flooding (low NDVI, specular radar), green-up, peak,
senescence, harvest, stubble.

Radar follows a water-cloud model with gamma speckle (ENL ~4.5); VV carries more soil
moisture than VH, so VH tracks the canopy better. Optical NDVI is the truth plus noise,
hidden by spatially clustered clouds (>=70 % in the wet season, ~30 % in the dry one), with
haze at cloud edges, one fully clouded period and one period of bad zeros.

The truth (noise-free NDVI, classes, paddy mask, true seasons) is generated beside the cube.
Everything is produced tile by tile, so memory stays flat as the scene grows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from odc.geo.geobox import GeoBox, GeoboxTiles
from scipy import ndimage
from scipy.spatial import cKDTree

from fusecube.cube import (
    CF_ATTRS,
    DIMS,
    NDVI,
    NDVI_QUALITY,
    PADDY_MASK,
    TIME,
    VH,
    VV,
    X,
    Y,
    with_geobox,
)
from fusecube.grid.periods import agricultural_years, period_centres, period_starts, to_days
from fusecube.stages.phenology import PhenologyConfig, assign_to_years, season_coords
from fusecube.kernels.seasons import detect_seasons

log = logging.getLogger(__name__)

WATER, POND, SETTLEMENT, TREES, OTHER_CROP, PADDY = range(6)
CLASS_NAMES = ("water", "fish_pond", "settlement", "trees", "other_crop", "paddy")
TILE = 256  # generation tile; fixed so the scene does not depend on output chunking
MAX_SEASONS = 6


@dataclass(frozen=True)
class SceneConfig:
    """Parameters of a synthetic scene (defaults: Demak, Central Java)."""

    width: int = 671
    """Pixels along x."""
    height: int = 893
    """Pixels along y."""
    resolution: float = 50.0
    """Pixel size in metres."""
    crs: str = "EPSG:32749"
    """Projected CRS (UTM 49S)."""
    centre: tuple[float, float] = (458000.0, 9238400.0)
    """Scene centre in the CRS (near Demak town)."""
    start: str = "2023-11-01"
    """Start of the first period."""
    n_periods: int = 62
    """Number of compositing periods."""
    period_days: int = 12
    """Length of a period in days."""
    seed: int = 0
    """Random seed; the same seed gives the same bytes."""
    paddy_fraction: float = 0.3
    """Share of the scene that is rice paddy."""
    three_season_fraction: float = 0.4
    """Share of paddy blocks that grow three seasons a year."""
    enl: float = 4.5
    """Equivalent number of looks of the radar speckle."""

    @property
    def geobox(self) -> GeoBox:
        """The scene grid."""
        half_w, half_h = self.width * self.resolution / 2, self.height * self.resolution / 2
        x0 = round((self.centre[0] - half_w) / self.resolution) * self.resolution
        y1 = round((self.centre[1] + half_h) / self.resolution) * self.resolution
        from affine import Affine

        transform = Affine(self.resolution, 0, x0, 0, -self.resolution, y1)
        return GeoBox((self.height, self.width), transform, self.crs)


# ----------------------------------------------------------------------------- layout
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


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth Gaussian random field, zero mean, unit std (coarse grid then zoom for speed)."""
    factor = max(1, int(sigma // 4))
    coarse = (max(2, shape[0] // factor + 2), max(2, shape[1] // factor + 2))
    field = ndimage.gaussian_filter(rng.standard_normal(coarse), sigma / factor, mode="wrap")
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


def make_layout(cfg: SceneConfig) -> Layout:
    """Draw the 2-D layout (classes, blocks, calendars, cloud fields) from the seed."""
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
                                                       np.tile(np.arange(w), h) + 0.5]))
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
    cloud_field = np.empty((cfg.n_periods, h, w), dtype=np.float16)
    threshold = np.empty(cfg.n_periods)
    for k in range(cfg.n_periods):
        field = _noise(rng, (h, w), 16) + 0.35 * _noise(rng, (h, w), 3)
        cloud_field[k] = field
        threshold[k] = np.inf if frac[k] <= 0 else (
            -np.inf if frac[k] >= 1 else np.quantile(field, 1 - frac[k]))
    dry = np.flatnonzero(frac < 0.45)
    zero_period = int(dry[len(dry) // 2]) if dry.size else cfg.n_periods // 2
    return Layout(land_class, block_id, block_seasons, block_offset, cloud_field, threshold,
                  haze_margin=0.35, zero_period=zero_period, clear_period_missing=-1)


# ----------------------------------------------------------------------------- curves
def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


@dataclass
class PaddyParams:
    """Per-pixel rice calendar: transplanting and harvest days (N, K) and levels."""

    transplant: np.ndarray
    harvest: np.ndarray
    amplitude: np.ndarray
    fallow: np.ndarray
    flooded: np.ndarray


def paddy_calendar(n_seasons: np.ndarray, offset: np.ndarray, start_day: float,
                   rng: np.random.Generator) -> PaddyParams:
    """Transplanting/harvest days of each pixel's seasons (2 or 3 a year over two years)."""
    n = n_seasons.size
    jitter = rng.normal(0, 1.5, n)
    tp = np.full((n, MAX_SEASONS), np.nan)
    hv = np.full((n, MAX_SEASONS), np.nan)
    three = n_seasons == 3
    first3 = start_day + 7 + offset + jitter
    first2 = start_day + 19 + offset + jitter
    for k in range(6):  # three seasons a year: 118-day cycle, ~95 days in the field
        tp[three, k] = first3[three] + 118.0 * k
        hv[three, k] = tp[three, k] + 95.0 + rng.normal(0, 2, three.sum())
    for year in range(2):  # two seasons a year: wet (MT1) and first dry (MT2)
        for j, (shift, grow) in enumerate(((0.0, 105.0), (140.0, 100.0))):
            k = 2 * year + j
            tp[~three, k] = first2[~three] + 365.0 * year + shift
            hv[~three, k] = tp[~three, k] + grow + rng.normal(0, 2, (~three).sum())
    amplitude = rng.uniform(0.5, 0.62, (n, MAX_SEASONS))
    return PaddyParams(tp, hv, amplitude, rng.uniform(0.25, 0.32, n), rng.uniform(0.02, 0.08, n))


def paddy_curves(p: PaddyParams, days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NDVI and flood fraction (N, M) of rice pixels at ``days`` (M,)."""
    t = days[None, :]
    flood = np.zeros((p.transplant.shape[0], days.size))
    crop = np.zeros_like(flood)
    for k in range(MAX_SEASONS):
        tp, hv = p.transplant[:, k : k + 1], p.harvest[:, k : k + 1]
        has = np.isfinite(tp)
        tp0, hv0 = np.where(has, tp, -1e6), np.where(has, hv, -1e6)
        flood += _sig((t - (tp0 - 18)) / 3.0) - _sig((t - (tp0 + 22)) / 4.0)
        crop += p.amplitude[:, k : k + 1] * (_sig((t - (tp0 + 38)) / 7.0) - _sig((t - (hv0 - 8)) / 4.0))
    flood = np.clip(flood, 0, 1)
    background = p.fallow[:, None] - (p.fallow - p.flooded)[:, None] * flood
    return background + crop, flood


def other_curves(cls: np.ndarray, days: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """NDVI (N, M) of the non-rice classes."""
    n = cls.size
    season = np.sin(2 * np.pi * (days[None, :] - 30) / 365.25)  # peaks ~ late Jan..Feb
    out = np.empty((n, days.size))
    level = rng.normal(0, 1, n)[:, None]
    out[:] = -0.05 + 0.03 * level  # water
    pond = cls == POND
    out[pond] = 0.03 + 0.03 * level[pond] + 0.08 * (season[0] < -0.7)  # drained in the dry peak
    set_ = cls == SETTLEMENT
    out[set_] = 0.22 + 0.04 * level[set_] + 0.03 * season
    tree = cls == TREES
    out[tree] = 0.78 + 0.03 * level[tree] + 0.04 * season
    crop = cls == OTHER_CROP
    peak = rng.uniform(0.6, 0.75, crop.sum())[:, None]
    out[crop] = 0.3 + 0.02 * level[crop] + (peak - 0.3) * np.clip(season, 0, None) ** 2
    return out


# ----------------------------------------------------------------------------- radar
def _water_cloud(ndvi, flood, mv, roughness_db, cls):
    """Sigma0 VV and VH (linear) from canopy, flooding and soil moisture."""
    cos_t = np.cos(np.deg2rad(38.0))
    veg = np.clip((ndvi - 0.15) / 0.7, 0, 1)
    soil_vv = 10 ** ((-13.0 + 15.0 * (mv - 0.25) + roughness_db) / 10)
    soil_vh = 10 ** ((-21.0 + 8.0 * (mv - 0.25) + 0.5 * roughness_db) / 10)
    soil_vv = (1 - flood) * soil_vv + flood * 10 ** (-21.0 / 10)
    soil_vh = (1 - flood) * soil_vh + flood * 10 ** (-27.0 / 10)
    tau_vv = np.exp(-2 * 0.5 * veg / cos_t)
    tau_vh = np.exp(-2 * 0.3 * veg / cos_t)
    vv = 0.12 * veg * cos_t * (1 - tau_vv) + tau_vv * soil_vv
    vh = 0.035 * veg * cos_t * (1 - tau_vh) + tau_vh * soil_vh
    water = (cls == WATER) | (cls == POND)
    vv = np.where(water, 10 ** ((-21.0 + 2.0 * roughness_db) / 10), vv)
    vh = np.where(water, 10 ** ((-27.0 + roughness_db) / 10), vh)
    urban = cls == SETTLEMENT
    vv = np.where(urban, 10 ** ((-6.0 + roughness_db) / 10), vv)
    vh = np.where(urban, 10 ** ((-13.0 + roughness_db) / 10), vh)
    return vv, vh


# ----------------------------------------------------------------------------- tiles
def _tiles(geobox: GeoBox) -> Iterator[tuple[tuple[int, int], tuple[slice, slice]]]:
    tiles = GeoboxTiles(geobox, (TILE, TILE))
    ny, nx = tiles.shape
    for iy in range(ny):
        for ix in range(nx):
            yield (iy, ix), (slice(iy * TILE, min((iy + 1) * TILE, geobox.shape[0])),
                             slice(ix * TILE, min((ix + 1) * TILE, geobox.shape[1])))


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

    def grid(a: np.ndarray, dtype=np.float32) -> np.ndarray:
        return a.T.reshape(-1, h, w).astype(dtype)

    cube = {VV: grid(vv), VH: grid(vh), NDVI: grid(ndvi_obs), NDVI_QUALITY: grid(quality)}
    truth = {"ndvi_true": grid(ndvi_true), "cloud": grid(cloud).astype(np.uint8),
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


# ----------------------------------------------------------------------------- assembly
def _time_coords(cfg: SceneConfig) -> dict:
    return {TIME: period_centres(cfg.start, cfg.n_periods, cfg.period_days),
            "period_start": (TIME, period_starts(cfg.start, cfg.n_periods, cfg.period_days))}


def _templates(cfg: SceneConfig, layout: Layout) -> tuple[xr.Dataset, xr.Dataset]:
    """Empty (lazy) cube and truth datasets with all coords and attrs."""
    import dask.array as da

    gbox = cfg.geobox
    t, (h, w) = cfg.n_periods, gbox.shape
    chunks = (t, TILE, TILE)
    cube = xr.Dataset(
        {name: (DIMS, da.zeros((t, h, w), dtype=np.float32, chunks=chunks), CF_ATTRS[name])
         for name in (VV, VH, NDVI, NDVI_QUALITY)},
        coords=_time_coords(cfg))
    cube[PADDY_MASK] = ((Y, X), (layout.land_class == PADDY).astype(np.uint8), CF_ATTRS[PADDY_MASK])
    cube.attrs.update(title="fusecube synthetic Demak-like scene", source="fusecube.sources.synthetic",
                      period_days=cfg.period_days, Conventions="CF-1.8",
                      synthetic_config=str(asdict(cfg)))
    cube = with_geobox(cube, gbox)
    pheno = PhenologyConfig()
    years = agricultural_years(cube[TIME].values, pheno.year_start_month)
    coords = season_coords(years, pheno.seasons_per_year)
    n_s = len(years) * pheno.seasons_per_year
    truth = xr.Dataset(
        {"ndvi_true": (DIMS, da.zeros((t, h, w), np.float32, chunks=chunks), {"long_name": "true NDVI"}),
         "cloud": (DIMS, da.zeros((t, h, w), np.uint8, chunks=chunks), {"long_name": "cloud mask"}),
         "land_class": ((Y, X), layout.land_class,
                        {"flag_values": list(range(6)), "flag_meanings": " ".join(CLASS_NAMES)}),
         PADDY_MASK: ((Y, X), (layout.land_class == PADDY).astype(np.uint8)),
         "block_id": ((Y, X), layout.block_id),
         "true_season_count": (("year", Y, X), da.zeros((len(years), h, w), np.float32,
                                                       chunks=(len(years), TILE, TILE)))},
        coords={**_time_coords(cfg), **coords})
    for name in ("sos", "pos", "eos", "planting", "harvest"):
        truth[f"true_{name}"] = (("season", Y, X), da.zeros((n_s, h, w), np.float64,
                                                            chunks=(n_s, TILE, TILE)),
                                 {"units": "days since 1970-01-01"})
    truth.attrs.update(zero_period=layout.zero_period, description="ground truth of the synthetic scene")
    return cube, with_geobox(truth, gbox)


def synthesize(cfg: SceneConfig, out_dir: str | Path, *, progress=None) -> dict[str, Path]:
    """Write ``cube.zarr``, ``truth.zarr`` and ``blocks.gpkg`` for a scene into ``out_dir``.

    Args:
        cfg: Scene parameters.
        out_dir: Output folder (created).
        progress: Optional callable ``(done, total)`` called after each tile.

    Returns:
        Paths of the written products.
    """
    from fusecube.cube import replace_path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layout = make_layout(cfg)
    cube_t, truth_t = _templates(cfg, layout)
    paths = {"cube": out_dir / "cube.zarr", "truth": out_dir / "truth.zarr"}
    tmp = {k: p.with_name(f".{p.name}.tmp") for k, p in paths.items()}
    for key, ds in (("cube", cube_t), ("truth", truth_t)):
        encoding = {v: {"chunks": ds[v].data.chunksize} for v in ds.data_vars if hasattr(ds[v].data, "chunksize")}
        ds.to_zarr(tmp[key], mode="w", zarr_format=3, compute=False, encoding=encoding, consolidated=False)
    tiles = list(_tiles(cfg.geobox))
    for done, (index, roi) in enumerate(tiles, 1):
        cube, truth = generate_tile(cfg, layout, index, roi)
        region = {Y: roi[0], X: roi[1]}
        _write_region(tmp["cube"], cube, region)
        _write_region(tmp["truth"], truth, region)
        if progress is not None:
            progress(done, len(tiles))
    for key in paths:
        replace_path(tmp[key], paths[key])
    blocks = write_blocks(cfg, layout, out_dir / "blocks.gpkg")
    if blocks is not None:
        paths["blocks"] = blocks
    return paths


def _leading_dim(name: str) -> str:
    if name == "true_season_count":
        return "year"
    return "season" if name.startswith("true_") else TIME


def _write_region(store: Path, arrays: dict[str, np.ndarray], region: dict) -> None:
    ds = xr.Dataset({name: ((_leading_dim(name), Y, X), value) for name, value in arrays.items()})
    ds.to_zarr(store, region={**region, **{d: slice(None) for d in ds.dims if d not in region}},
               zarr_format=3, consolidated=False)


def write_blocks(cfg: SceneConfig, layout: Layout, path: Path) -> Path | None:
    """Write the irrigation blocks as polygons (GeoPackage), for the vector-mask path."""
    try:
        import geopandas as gpd
        from rasterio import features
        from shapely.geometry import shape
    except ImportError:  # pragma: no cover - geo extra missing
        log.warning("geopandas not installed: blocks.gpkg not written (pip install 'fusecube[geo]')")
        return None
    geoms, ids = [], []
    for geom, value in features.shapes(layout.block_id, mask=layout.block_id >= 0,
                                       transform=cfg.geobox.affine):
        geoms.append(shape(geom))
        ids.append(int(value))
    gdf = gpd.GeoDataFrame({"block_id": ids}, geometry=geoms, crs=cfg.crs).dissolve("block_id").reset_index()
    gdf["n_seasons"] = layout.block_seasons[gdf["block_id"].to_numpy()].astype(int)
    gdf["offset_days"] = layout.block_offset[gdf["block_id"].to_numpy()].round(1)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.unlink(missing_ok=True)
    gdf.to_file(tmp, driver="GPKG", layer="blocks")
    from fusecube.cube import replace_path

    replace_path(tmp, path)
    return path
