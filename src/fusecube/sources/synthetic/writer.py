"""Writing a synthetic scene: ``cube.zarr``, ``truth.zarr`` and ``blocks.gpkg``, tile by tile.

The truth (noise-free NDVI, classes, paddy mask, true seasons) is written beside the cube;
both stores are staged and renamed when complete.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict
from itertools import islice
from pathlib import Path

import numpy as np
import xarray as xr

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
    zarr_layout,
)
from fusecube.grid.periods import agricultural_years, period_centres, period_starts
from fusecube.grid.tiles import tile_slices
from fusecube.sources.synthetic.layout import Layout, make_layout
from fusecube.sources.synthetic.scene import CLASS_NAMES, PADDY, TILE, SceneConfig
from fusecube.sources.synthetic.tiles import generate_tile
from fusecube.stages.phenology import PhenologyConfig, season_coords
from fusecube.storage.atomic import atomic_path
from fusecube.storage.chunks import WRITE_ALL_CHUNKS, complete_attrs

log = logging.getLogger(__name__)

#: Codec of the synthetic stores: noisy floats hardly compress, so a fast codec (lz4 after
#: byte shuffling, ~2x the speed of zarr's default zstd and smaller here) keeps the writes,
#: a third of synthesis, from holding up the scene.
FAST_CODEC = ({"name": "blosc", "configuration": {"cname": "lz4", "clevel": 5, "shuffle": "shuffle"}},)

#: Default edge of a unit of synthesis work, in pixels (one generation tile).
BLOCK = TILE


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


def synthesize(cfg: SceneConfig, out_dir: str | Path, *, progress=None, workers: int | None = None,
               block: int = BLOCK) -> dict[str, Path]:
    """Write ``cube.zarr``, ``truth.zarr`` and ``blocks.gpkg`` for a scene into ``out_dir``.

    The scene is made block by block, ``workers`` blocks at a time on threads (numpy and the
    compiled season kernel release the GIL); each block's generation tiles draw from their
    own random streams, so the bytes depend on the seed only, not on ``block`` or ``workers``.

    Args:
        cfg: Scene parameters.
        out_dir: Output folder (created).
        progress: Optional callable ``(done, total)`` called after each tile.
        workers: Threads; ``None`` for the number of CPUs.
        block: Edge of a unit of work in pixels, a multiple of the generation tile
            (:data:`~fusecube.sources.synthetic.scene.TILE`).

    Returns:
        Paths of the written products.

    Raises:
        ValueError: ``block`` is not a positive multiple of the generation tile.
    """
    if block < TILE or block % TILE:
        raise ValueError(f"block={block} must be a positive multiple of the generation tile "
                         f"({TILE} pixels); use e.g. block={TILE} or {2 * TILE}.")
    workers = max(1, workers or os.cpu_count() or 1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layout = make_layout(cfg, workers=workers)
    cube_t, truth_t = _templates(cfg, layout)
    paths = {"cube": out_dir / "cube.zarr", "truth": out_dir / "truth.zarr"}
    tiles = list(tile_slices(cfg.geobox, TILE))
    per_block = block // TILE
    blocks: dict[tuple[int, int], list] = {}
    for index, roi in tiles:
        blocks.setdefault((index[0] // per_block, index[1] // per_block), []).append((index, roi))

    def make_block(members: list) -> list:
        return [(roi, *generate_tile(cfg, layout, index, roi)) for index, roi in members]

    with ThreadPoolExecutor(max_workers=workers) as pool, \
            atomic_path(paths["cube"], folder=True) as cube_store, \
            atomic_path(paths["truth"], folder=True) as truth_store:
        queue = iter(blocks.values())
        running = {pool.submit(make_block, m) for m in islice(queue, 2 * workers)}
        polygons = pool.submit(write_blocks, cfg, layout, out_dir / "blocks.gpkg")
        for store, ds in ((cube_store, cube_t), (truth_store, truth_t)):  # while the first blocks run
            aligned, encoding = zarr_layout(ds)
            for name in encoding:
                encoding[name]["compressors"] = FAST_CODEC
            aligned.attrs.update(complete_attrs())  # every chunk is written (regions below)
            aligned.to_zarr(store, mode="w", zarr_format=3, compute=False, encoding=encoding,
                            consolidated=False, **WRITE_ALL_CHUNKS)
        done = 0
        while running:  # at most 2 blocks per worker in memory
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                for roi, cube, truth in future.result():
                    region = {Y: roi[0], X: roi[1]}
                    _write_region(cube_store, cube, region)
                    _write_region(truth_store, truth, region)
                    done += 1
                    if progress is not None:
                        progress(done, len(tiles))
                running |= {pool.submit(make_block, m) for m in islice(queue, 1)}
        blocks_path = polygons.result()
    if blocks_path is not None:
        paths["blocks"] = blocks_path
    return paths


def _leading_dim(name: str) -> str:
    if name == "true_season_count":
        return "year"
    return "season" if name.startswith("true_") else TIME


def _write_region(store: Path, arrays: dict[str, np.ndarray], region: dict) -> None:
    ds = xr.Dataset({name: ((_leading_dim(name), Y, X), value) for name, value in arrays.items()})
    ds.to_zarr(store, region={**region, **{d: slice(None) for d in ds.dims if d not in region}},
               zarr_format=3, consolidated=False, **WRITE_ALL_CHUNKS)


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
    with atomic_path(path) as staged:
        gdf.to_file(staged, driver="GPKG", layer="blocks")
    return path
