"""Block runner: cut the grid into spatial blocks (all time steps), run the stages, write regions.

Each block is read, processed and written on its own, so memory is bounded by the block size,
not the scene. Output goes to a temporary zarr store renamed into place when complete.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from fusecube.config import CubeSource, RunConfig, SyntheticSource
from fusecube.cube import PADDY_MASK, X, Y, read_cube, replace_path, validate_cube
from fusecube.gates import screen_periods
from fusecube.masks import resolve_mask
from fusecube.pipeline import StageTimer, process_block

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclass
class RunResult:
    """What a run produced and measured."""

    out: Path
    result: Path
    cube: Path
    truth: Path | None
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    screen: dict = field(default_factory=dict)
    n_blocks: int = 0
    products: dict[str, str] = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """JSON-able summary."""
        return {"out": str(self.out), "result": str(self.result), "cube": str(self.cube),
                "truth": str(self.truth) if self.truth else None, "seconds": self.seconds,
                "peak_rss_mb": self.peak_rss_mb, "screen": self.screen, "n_blocks": self.n_blocks,
                "products": self.products, "accuracy": self.accuracy}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def block_slices(geobox: GeoBox, size: int) -> Iterator[tuple[tuple[int, int], tuple[slice, slice]]]:
    """Tile index and (y, x) slices of each block of ``size`` pixels."""
    ny, nx = geobox.shape
    for iy, y0 in enumerate(range(0, ny, size)):
        for ix, x0 in enumerate(range(0, nx, size)):
            yield (iy, ix), (slice(y0, min(y0 + size, ny)), slice(x0, min(x0 + size, nx)))


def prepare_source(config: RunConfig, progress: Progress | None = None) -> tuple[Path, Path | None]:
    """Make sure the input cube exists; returns ``(cube path, truth path or None)``."""
    source = config.source
    if isinstance(source, CubeSource):
        truth = source.path.with_name("truth.zarr")
        return source.path, truth if truth.exists() else None
    assert isinstance(source, SyntheticSource)
    from fusecube.sources.synthetic import SceneConfig, synthesize

    scene = SceneConfig(width=source.width, height=source.height, seed=source.seed,
                        n_periods=source.n_periods)
    cb = (lambda done, total: progress("synth", done, total)) if progress else None
    paths = synthesize(scene, config.out / "input", progress=cb)
    return paths["cube"], paths["truth"]


def _template(shape_like: xr.Dataset, geobox: GeoBox, size: int) -> xr.Dataset:
    """Lazy full-grid dataset with the variables, dtypes and attrs of a processed block."""
    import dask.array as da

    ny, nx = geobox.shape
    data = {}
    for name, var in shape_like.data_vars.items():
        dims = var.dims
        shape = tuple(ny if d == Y else nx if d == X else var.sizes[d] for d in dims)
        chunks = tuple(min(size, s) if d in (Y, X) else s for d, s in zip(dims, shape, strict=True))
        fill = np.zeros((), dtype=var.dtype)
        data[name] = (dims, da.full(shape, fill, dtype=var.dtype, chunks=chunks), var.attrs)
    coords = {k: v for k, v in shape_like.coords.items() if Y not in v.dims and X not in v.dims}
    from fusecube.cube import with_geobox

    return with_geobox(xr.Dataset(data, coords=coords), geobox)


def _encoding(template: xr.Dataset) -> dict:
    enc = {}
    for name, var in template.data_vars.items():
        enc[name] = {"chunks": var.data.chunksize}
        if np.issubdtype(var.dtype, np.datetime64):
            enc[name].update(units="days since 1970-01-01", dtype="float64", _FillValue=np.nan)
    return enc


def run(config: RunConfig, progress: Progress | None = None) -> RunResult:
    """Run the whole pipeline block by block and write products.

    Args:
        config: The run configuration.
        progress: Optional callback ``(stage, done, total)``.

    Returns:
        A :class:`RunResult` with paths, stage timings and peak memory.
    """
    started = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    timer = StageTimer()
    cube_path, truth_path = timer.time("source", prepare_source, config, progress)
    cube = read_cube(cube_path, chunks={})
    validate_cube(cube)
    mask = timer.time("mask", resolve_mask, config.mask, cube)
    screen = timer.time("screen", screen_periods, cube)
    model = None
    if config.gapfill == "fusion":  # load the given model or train one on this scene
        from fusecube.fusion.model import model_for_run

        model = timer.time("fusion_train", model_for_run, cube, config)
    geobox = cube.odc.geobox
    result_path = out / "result.zarr"
    tmp = out / ".result.zarr.tmp"
    blocks = list(block_slices(geobox, config.block_size))
    started_store = False
    for done, (_, (ys, xs)) in enumerate(blocks, 1):
        t0 = time.perf_counter()
        block = cube.isel({Y: ys, X: xs}).load()
        if mask is not None:
            block[PADDY_MASK] = mask.isel({Y: ys, X: xs})
        elif PADDY_MASK in block:
            block = block.drop_vars(PADDY_MASK)
        timer.seconds["read"] += time.perf_counter() - t0
        series, seasons = process_block(block, config, screen, timer, model)
        merged = xr.merge([series, seasons], compat="override", join="override")
        merged = merged.drop_vars([c for c in ("spatial_ref",) if c in merged.coords])
        t0 = time.perf_counter()
        if not started_store:
            template = _template(merged, geobox, config.block_size)
            template.to_zarr(tmp, mode="w", compute=False, zarr_format=3, consolidated=False,
                             encoding=_encoding(template))
            started_store = True
        region = {d: slice(None) for d in merged.dims if d not in (Y, X)}
        region.update({Y: ys, X: xs})
        merged.drop_vars([Y, X, *[c for c in merged.coords if c not in merged.dims]],
                         errors="ignore").to_zarr(tmp, region=region, zarr_format=3,
                                                  consolidated=False)
        timer.seconds["write"] += time.perf_counter() - t0
        if progress:
            progress("blocks", done, len(blocks))
    replace_path(tmp, result_path)
    result = RunResult(out=out, result=result_path, cube=cube_path, truth=truth_path,
                       screen=screen.__dict__, n_blocks=len(blocks))
    if config.report:
        from fusecube.products import write_products

        t0 = time.perf_counter()
        result.products, result.accuracy = write_products(result, config)
        timer.seconds["products"] += time.perf_counter() - t0
    result.seconds = {k: round(v, 3) for k, v in timer.seconds.items()}
    result.seconds["total"] = round(time.perf_counter() - started, 3)
    result.peak_rss_mb = round(peak_rss_mb(), 1)
    (out / "run.json").write_text(json.dumps(result.to_json(), indent=2, default=str))
    if config.report:
        from fusecube.report import write_report

        result.products["report"] = str(write_report(result, config))
        (out / "run.json").write_text(json.dumps(result.to_json(), indent=2, default=str))
    return result
