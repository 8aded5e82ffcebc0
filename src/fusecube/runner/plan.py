"""What a run, fetch or batch will cost, known before any work: ``fusecube plan``.

A plan reads only metadata: the source's grid and periods (:meth:`Reader.plan`), for STAC the
items a search returns and the windows of their assets over the AOI (nothing is downloaded).
From them and the per-pixel costs of this machine (:mod:`fusecube.runner.calibration`) it
estimates pixels, periods, blocks, bytes to read and to write, peak memory per worker
(the model of :mod:`fusecube.runner.memory`) and the wall time of each stage for ``workers``
workers (only the blocks run in parallel; the other stages run once, in the main process).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from fusecube.config import CubeSource, GeoTiffSource, RunConfig, StacSource, SyntheticSource
from fusecube.errors import ConfigError
from fusecube.runner.calibration import Costs, Line, load_costs, stage_size
from fusecube.runner.memory import (
    BASE_OVERHEAD,
    BYTES_PER_PIXEL_PERIOD,
    FUSION_OVERHEAD,
    block_edge_for,
    default_memory_limit,
    parse_memory,
)

#: COG tile edge assumed when rounding an asset window out to whole tiles.
COG_TILE = 512
#: Stored size of a compressed asset relative to its raw pixels, when ``file:size`` is absent.
COMPRESSION = 0.6
#: Download rate assumed for a fetch's wall time (bytes/s) until a fetch is measured.
NETWORK_RATE = 20e6


@dataclass
class Plan:
    """The estimate of one run (or fetch): sizes, bytes, memory and seconds per stage."""

    what: str
    source: str
    method: str
    width: int
    height: int
    periods: int
    workers: int
    block_edge: int
    blocks: int
    read_bytes: int
    write_bytes: int
    peak_memory_per_worker: int
    memory_limit_per_worker: int
    stages: dict[str, float] = field(default_factory=dict)
    network_bytes: int = 0
    items: int = 0
    calibrated: bool = False
    calibration: str = ""
    aois: int = 0
    pixel_count: int | None = None
    """All pixels (a batch: summed over its AOIs); None: ``width * height``."""

    @property
    def pixels(self) -> int:
        """Pixels of the grid (of every AOI, for a batch)."""
        return self.pixel_count if self.pixel_count is not None else self.width * self.height

    @property
    def seconds(self) -> float:
        """Wall seconds of the whole run."""
        return sum(self.stages.values())

    def to_json(self) -> dict:
        """JSON-ready form (with pixels and the total seconds)."""
        data = asdict(self)
        data.update(pixels=self.pixels, seconds=round(self.seconds, 1),
                    stages={k: round(v, 2) for k, v in self.stages.items()})
        return data


def _cost(line: Line, pixel_periods: float) -> float:
    return line[0] + line[1] * pixel_periods


def _grid(config: RunConfig) -> tuple[int, int, int, str]:
    """``(width, height, periods, description)`` of the run's source, from metadata only."""
    source = config.source
    if isinstance(source, SyntheticSource):
        return (source.width, source.height, source.n_periods,
                f"synthetic {source.width}x{source.height}")
    from fusecube.sources.readers import reader_for

    cube_plan = reader_for(source).plan()
    shape = cube_plan.geobox.shape
    return shape.x, shape.y, len(cube_plan.times), cube_plan.description


def plan_method(config: RunConfig) -> str:
    """The gap-fill method whose costs a plan uses: fusion when asked, else ridge.

    Ridge is the dearest of the others, so ``auto``, linear and Whittaker runs are planned on
    the safe side.
    """
    return "fusion" if config.gapfill == "fusion" else "ridge"


def plan_run(config: RunConfig, *, workers: int = 1, costs: Costs | None = None,
             search: bool = True) -> Plan:
    """Estimate a run of ``config`` on ``workers`` workers, before any work.

    Args:
        config: The run configuration.
        workers: Worker processes sharing the blocks (each with ``memory_limit / workers``).
        costs: Per-pixel costs (default: this machine's calibration, else built-in defaults).
        search: For a STAC source, search the catalogue for the items (no pixel is read).

    Returns:
        The plan.
    """
    if workers < 1:
        raise ConfigError(f"--workers {workers} must be at least 1.")
    costs = costs or load_costs()
    width, height, periods, description = _grid(config)
    method = plan_method(config)
    fusion = method == "fusion"
    limit = parse_memory(config.memory_limit) if config.memory_limit else default_memory_limit()
    per_worker = limit // workers
    edge = block_edge_for(per_worker, periods, config.block_size, fusion=fusion)
    blocks = math.ceil(width / edge) * math.ceil(height / edge)
    base = BASE_OVERHEAD + (FUSION_OVERHEAD if fusion else 0)
    peak = base + min(edge, width) * min(edge, height) * periods * BYTES_PER_PIXEL_PERIOD
    n = width * height * periods
    stages: dict[str, float] = {}
    read = _cost(costs.read_bytes, n)
    write = _cost(costs.write_bytes, n)
    network, items = 0, 0
    source = config.source
    if isinstance(source, SyntheticSource):
        stages["source"] = _cost(costs.stage_line(method, "source"), n)
        write += _cost(costs.source_write_bytes, n)
    elif not isinstance(source, CubeSource):
        write += _cost(costs.source_write_bytes, n)
        if isinstance(source, StacSource) and search:
            items, network = stac_read_bytes(source)
            stages["source"] = network / NETWORK_RATE
        elif isinstance(source, GeoTiffSource):
            read += _folder_bytes(source)
            stages["source"] = _cost(costs.stage_line(method, "source"), n)
    for stage in ("prepare", "fusion_train", "validate"):  # validation, training: a sample
        if stage != "fusion_train" or fusion:
            stages[stage] = _cost(costs.stage_line(method, stage),
                                  stage_size(stage, height, width, periods))
    intercept, slope = costs.stage_line(method, "blocks")
    stages["blocks"] = (intercept * blocks + slope * n) / min(workers, blocks)
    if config.report:
        stages["products"] = _cost(costs.stage_line(method, "products"), n)
        read += costs.products_bytes[0]
        write += costs.products_bytes[1]
    stages["other"] = _cost(costs.stage_line(method, "other"), n)
    return Plan(what="run", source=description, method=method, width=width, height=height,
                periods=periods, workers=workers, block_edge=edge, blocks=blocks,
                read_bytes=int(read), write_bytes=int(write), peak_memory_per_worker=int(peak),
                memory_limit_per_worker=int(per_worker), stages=stages, network_bytes=int(network),
                items=items, calibrated=costs.method_calibrated(method),
                calibration=costs.machine + (f", {costs.created}" if costs.created else ""))


def plan_fetch(source: StacSource, *, workers: int = 1, costs: Costs | None = None) -> Plan:
    """Estimate a ``fusecube fetch``: the items and bytes its search finds, the cube it writes."""
    costs = costs or load_costs()
    config = RunConfig(source=source, report=False)
    run_plan = plan_run(config, workers=1, costs=costs, search=False)
    items, network = stac_read_bytes(source)
    n = run_plan.width * run_plan.height * run_plan.periods
    return Plan(what="fetch", source=run_plan.source, method="", width=run_plan.width,
                height=run_plan.height, periods=run_plan.periods, workers=workers, block_edge=0,
                blocks=0, read_bytes=int(network), write_bytes=int(_cost(costs.source_write_bytes, n)),
                peak_memory_per_worker=0, memory_limit_per_worker=0,
                stages={"search+read": network / NETWORK_RATE / max(1, workers)},
                network_bytes=int(network), items=items, calibrated=False,
                calibration="network rate assumed: 20 MB/s")


def _folder_bytes(source: GeoTiffSource) -> int:
    return sum(p.stat().st_size for p in source.folder.glob(source.pattern) if p.is_file())


def _asset_crs(item, asset) -> str | None:
    fields = {**item.properties, **asset.extra_fields}
    if fields.get("proj:epsg"):
        return f"EPSG:{int(fields['proj:epsg'])}"
    return fields.get("proj:code") or fields.get("proj:wkt2")


def _window_bytes(item, asset, region, sensor: str) -> int:
    """Bytes of one asset's AOI window, rounded out to whole COG tiles."""
    from odc.geo.geobox import GeoBox

    fields = asset.extra_fields
    shape, transform, crs = fields.get("proj:shape"), fields.get("proj:transform"), None
    itemsize = 2 if sensor == "s2" else 4
    bands = fields.get("raster:bands") or []
    if bands and bands[0].get("data_type") in ("float64", "int64", "uint64"):
        itemsize = 8
    elif bands and bands[0].get("data_type") in ("uint8", "int8"):
        itemsize = 1
    crs = _asset_crs(item, asset)
    if not shape or not transform or crs is None:  # no grid: the AOI at 10 m, uncompressed
        bbox = region.to_crs("EPSG:3857").boundingbox
        return int(bbox.width * bbox.height / 100 * itemsize)
    from affine import Affine

    grid = GeoBox(tuple(shape), Affine(*transform[:6]), crs)
    bbox = region.to_crs(grid.crs).boundingbox
    res = abs(transform[0])
    full = grid.boundingbox
    w = max(0.0, min(bbox.right, full.right) - max(bbox.left, full.left)) / res
    h = max(0.0, min(bbox.top, full.top) - max(bbox.bottom, full.bottom)) / res
    if w == 0 or h == 0:
        return 0
    # a window of w px at a random offset touches w / T + 1 tiles on average (at most all)
    tiles_x = min(w / COG_TILE + 1, math.ceil(shape[1] / COG_TILE))
    tiles_y = min(h / COG_TILE + 1, math.ceil(shape[0] / COG_TILE))
    raw = min(tiles_x * tiles_y * COG_TILE * COG_TILE, shape[0] * shape[1]) * itemsize
    size = fields.get("file:size")
    ratio = size / (shape[0] * shape[1] * itemsize) if size else COMPRESSION
    return int(raw * min(1.0, ratio))


def stac_read_bytes(source: StacSource, region=None) -> tuple[int, int]:
    """``(items, bytes)`` a fetch of ``source`` would read: searched, not downloaded.

    ``region`` (an odc-geo Geometry) replaces ``source.aoi`` (a batch's AOIs).

    Each asset's window over the AOI is grown to the 512 px COG tiles it touches on average
    (GDAL's default tile; catalogues do not publish it) and scaled by the asset's compression
    (``file:size`` when the item has it, else 0.6). Headers and retries are not counted.
    """
    from fusecube.grid.geobox import aoi_geometry
    from fusecube.sources.stac.fetch_aoi import stac_options
    from fusecube.sources.stac.search import open_catalogue, search_items

    if region is None and not source.aoi:
        raise ConfigError("The STAC source has no aoi: give a bbox or a vector file.")
    options = stac_options(source)
    if region is None:
        region = aoi_geometry(source.aoi, crs=source.aoi_crs)
    client = open_catalogue(options.catalogue.url, options)
    start, end = f"{source.start}T00:00:00Z", f"{source.end}T23:59:59Z"
    n_items, total = 0, 0
    for spec in (options.catalogue.s2, options.catalogue.s1):
        if spec is None:
            continue
        for item in search_items(client, spec, region, start, end, options):
            n_items += 1
            total += sum(_window_bytes(item, item.assets[name], region, spec.sensor)
                         for _, name in spec.assets)
    return n_items, total


def plan_batch(aois_file, config, *, costs: Costs | None = None, search: bool = True) -> Plan:
    """Estimate a ``fusecube batch run``: every AOI's grid, its cube and products.

    Args:
        aois_file: The AOI file (CSV or GeoJSON).
        config: The :class:`~fusecube.batch.config.BatchConfig`.
        costs: Per-pixel costs (default: this machine's calibration).
        search: For STAC, search each AOI's items for the bytes to read.

    Returns:
        One plan for the whole batch (``concurrency`` AOIs at a time).
    """
    from fusecube.batch.aois import read_aois
    from fusecube.batch.run import plan as plan_aois
    from fusecube.sources.compose import periods_between

    costs = costs or load_costs()
    periods = len(periods_between(config.start, config.end, config.period_days))
    planned = [p for p in plan_aois(read_aois(aois_file), config)
               if p.geobox is not None and p.duplicate_of is None]
    pixels = sum(p.geobox.shape.x * p.geobox.shape.y for p in planned)
    n = pixels * periods
    stages: dict[str, float] = {}
    network, items = 0, 0
    write = sum(_cost(costs.source_write_bytes, p.geobox.shape.x * p.geobox.shape.y * periods)
                for p in planned)
    read = 0.0
    if config.source == "stac" and search:
        for p in planned:
            region = p.aoi.geometry if p.aoi.geometry is not None else p.geobox.extent
            found, nbytes = stac_read_bytes(p.config.stac(), region)
            items, network = items + found, network + nbytes
        stages["source"] = network / NETWORK_RATE
    else:
        stages["source"] = sum(_cost(costs.stage_line("ridge", "source"),
                                     p.geobox.shape.x * p.geobox.shape.y * periods)
                               for p in planned)
    if "products" in config.produce:
        for stage in ("prepare", "validate", "blocks", "products", "other"):
            stages[stage] = sum(_cost(costs.stage_line("ridge", stage),
                                      p.geobox.shape.x * p.geobox.shape.y * periods)
                                for p in planned)
        read += _cost(costs.read_bytes, n) if planned else 0
        write += _cost(costs.write_bytes, n) if planned else 0
    workers = max(1, min(config.concurrency, len(planned) or 1))
    stages = {k: v / workers for k, v in stages.items()}
    return Plan(what="batch", source=f"{config.source}, {len(planned)} AOIs", method="ridge",
                width=0, height=0, periods=periods, workers=workers, block_edge=0, blocks=0,
                read_bytes=int(read + network), write_bytes=int(write),
                peak_memory_per_worker=0, memory_limit_per_worker=0, stages=stages,
                network_bytes=int(network), items=items,
                calibrated=costs.calibrated, calibration=costs.machine, aois=len(planned),
                pixel_count=pixels)
