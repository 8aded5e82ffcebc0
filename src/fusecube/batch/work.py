"""The work of one AOI: fetch its cube, then make the tiles and products asked for.

Each step raises a :class:`~fusecube.errors.FusecubeError` whose message is the AOI's
failure reason (no Sentinel-2 in range, all cloudy, outside coverage, server errors after
retries, no valid tile, time budget). An AOI that produced zero tiles is a failure.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from odc.geo.geobox import GeoBox

from fusecube.batch.aois import AOI
from fusecube.batch.config import BatchConfig
from fusecube.errors import AOITimeBudgetExceeded, PatchError, SourceError

log = logging.getLogger(__name__)

#: Called with the AOI's new state (``processing``) when fetching is over.
StateHook = Callable[[str], None]


def aoi_seed(aoi_id: str) -> int:
    """A stable seed for an AOI id (the same id gives the same synthetic scene, in any run)."""
    return int.from_bytes(hashlib.sha256(aoi_id.encode()).digest()[:4], "big") & 0x7FFFFFFF


def aoi_folder(out: Path, aoi_id: str) -> Path:
    """The AOI's output folder: ``<out>/aois/<safe id>`` (a hash suffix when the id had to change)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", aoi_id)
    if safe != aoi_id or safe in (".", ".."):
        safe = f"{safe}-{hashlib.sha256(aoi_id.encode()).hexdigest()[:6]}"
    return Path(out) / "aois" / safe


class Deadline:
    """The per-AOI time budget, checked between items, tiles and stages.

    Args:
        aoi_id: The AOI (for the message).
        budget_s: Seconds allowed, or None for no limit.
    """

    def __init__(self, aoi_id: str, budget_s: float | None) -> None:
        self.aoi_id = aoi_id
        self.budget_s = budget_s
        self.start = time.perf_counter()

    def check(self, where: str) -> None:
        """Raise :class:`AOITimeBudgetExceeded` when the budget is spent."""
        if self.budget_s is None:
            return
        spent = time.perf_counter() - self.start
        if spent > self.budget_s:
            raise AOITimeBudgetExceeded(
                f"time budget of {self.budget_s:g} s exceeded after {spent:.1f} s ({where}); "
                "raise --time-budget, shrink the AOI, or retry with --retry-failed when the "
                "source is faster.")


@dataclass
class AOIOutcome:
    """What one AOI produced."""

    tiles: int = 0
    """Tiles (patches) written; 0 when tiles were not asked for."""
    bytes_read: int = 0
    """Bytes downloaded for the AOI (0 for the offline synthetic source)."""
    detail: dict = field(default_factory=dict)
    """Outputs, warnings, item failures and sizes, for the ledger and the report."""


def process_aoi(aoi: AOI, geobox: GeoBox, config: BatchConfig, folder: Path, *,
                deadline: Deadline, on_state: StateHook, outcome: AOIOutcome) -> AOIOutcome:
    """Fetch, then process one AOI into ``folder``; fills and returns ``outcome``.

    Args:
        aoi: The AOI.
        geobox: Its grid.
        config: The batch settings with the AOI's overrides applied.
        folder: Its output folder.
        deadline: Its time budget.
        on_state: Told ``processing`` once the cube is there.
        outcome: Filled as the work goes (so bytes read survive a failure).

    Returns:
        ``outcome``.

    Raises:
        FusecubeError: The AOI failed; the message is the reason.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if config.source == "synthetic":
        cube = _synthesize(aoi, geobox, config, folder, deadline, outcome)
    else:
        cube = _fetch_stac(aoi, geobox, config, folder, deadline, outcome)
    deadline.check("after fetching the cube")
    on_state("processing")
    _check_cube_has_data(cube, aoi)
    outputs = outcome.detail.setdefault("outputs", {})
    if "patches" in config.produce:
        outcome.tiles = _export_tiles(cube, folder / "patches", config, deadline)
        outputs["patches"] = str(folder / "patches")
        deadline.check("after writing the tiles")
    if "products" in config.produce:
        outputs.update(_products(cube, folder / "products", config, deadline))
    if "cube" in config.produce:
        outputs["cube"] = str(cube)
    else:  # the cube was only a means to the tiles/products
        shutil.rmtree(cube, ignore_errors=True)
    return outcome


# -- fetching ------------------------------------------------------------------------------
def _synthesize(aoi: AOI, geobox: GeoBox, config: BatchConfig, folder: Path, deadline: Deadline,
                outcome: AOIOutcome) -> Path:
    from fusecube.sources.compose import periods_between
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize

    n_periods = len(periods_between(config.start, config.end, config.period_days))
    bbox = geobox.extent.boundingbox
    scene = SceneConfig(width=geobox.shape.x, height=geobox.shape.y,
                        resolution=abs(geobox.resolution.x), crs=str(geobox.crs),
                        centre=((bbox.left + bbox.right) / 2, (bbox.bottom + bbox.top) / 2),
                        start=config.start, n_periods=n_periods, period_days=config.period_days,
                        seed=aoi_seed(aoi.id))
    paths = synthesize(scene, folder / "input",
                       progress=lambda done, total: deadline.check(f"synthesis tile {done}/{total}"))
    outcome.detail["seed"] = scene.seed
    outcome.detail["source"] = "synthetic"
    return paths["cube"]


def _fetch_stac(aoi: AOI, geobox: GeoBox, config: BatchConfig, folder: Path, deadline: Deadline,
                outcome: AOIOutcome) -> Path:
    from fusecube.sources.stac.catalogues import sign_hook
    from fusecube.sources.stac.fetch import fetch
    from fusecube.sources.stac.fetch_aoi import stac_options

    source = config.stac()
    options = stac_options(source)

    def on_item(report) -> None:
        outcome.bytes_read += report.bytes_read
        deadline.check(f"item {report.done}/{report.total}")

    if outcome.detail.get("attempt", 1) > 1:
        # GDAL remembers a file that answered HTTP 5xx as missing; a retry must ask the server
        # again (the "/vsicurl/" prefix clears every remembered URL; others re-read headers only)
        from fusecube.sources.gdal_net import clear_http_cache

        clear_http_cache("")
    region = aoi.geometry if aoi.geometry is not None else geobox.extent
    try:
        result = fetch(region, start=config.start, end=config.end, out=folder / "cube.zarr",
                       geobox=geobox, options=options, on_item=on_item,
                       sign_url=sign_hook(source.sign))
    except SourceError as exc:  # every item of a collection failed: say it the batch's way
        if not getattr(exc, "failures", None):
            raise
        failures, n_items = exc.failures, exc.n_items  # type: ignore[attr-defined]
        outcome.detail["item_failures"] = [f.to_dict() for f in failures]
        if len({f.item_id for f in failures}) >= n_items:
            raise SourceError(f"server errors: all {_failure_summary(failures, n_items)}; the "
                              "data server is failing, try again later with --retry-failed."
                              ) from exc
        raise SourceError(f"{exc} (batch: rerun with --retry-failed)") from exc
    outcome.detail["source"] = "stac"
    outcome.detail["items"] = result.n_items
    outcome.detail["retries"] = result.retries
    if result.failures:
        outcome.detail["item_failures"] = [f.to_dict() for f in result.failures]
        outcome.detail.setdefault("warnings", []).append(
            _failure_summary(result.failures, result.n_items))
    return result.path


def _failure_summary(failures: list, n_items: int) -> str:
    last = failures[-1]
    return (f"{len({f.item_id for f in failures})} of {n_items} items failed after "
            f"{last.attempts} tries (last: {last.item_id}/{last.asset}: {last.error})")


# -- processing ----------------------------------------------------------------------------
def _check_cube_has_data(cube: Path, aoi: AOI) -> None:
    from fusecube.cube import NDVI, VH, VV, read_cube

    ds = read_cube(cube)
    present = [v for v in (VV, VH, NDVI) if v in ds]
    finite = {v: int(np.isfinite(ds[v]).sum().compute() if hasattr(ds[v].data, "compute")
                     else np.isfinite(ds[v].values).sum()) for v in present}
    if not any(finite.values()):
        raise SourceError(f"AOI {aoi.id!r}: the cube has no valid value in {present}; every "
                          "item was empty over the AOI (nodata); check the AOI and dates.")


def _export_tiles(cube: Path, out: Path, config: BatchConfig, deadline: Deadline) -> int:
    from fusecube.ml.patches.export import PatchExportConfig, export_patches

    export = PatchExportConfig(size=config.patch_size, variables=tuple(config.patch_vars),
                               max_invalid_fraction=config.max_invalid_fraction)
    try:
        patch_set = export_patches(cube, out, export, overwrite=True,
                                   progress=lambda done, total: deadline.check(
                                       f"tile block {done}/{total}"))
    except PatchError as exc:  # zero tiles is a failure; name the batch's own options
        raise PatchError(f"zero tiles: {exc} (batch options: --patch-size, --max-invalid, --vars; "
                         "per AOI: a patch_size column)") from exc
    if patch_set.count == 0:  # export_patches refuses this already; never report 0 tiles as done
        raise PatchError(f"no tile written from {cube}; lower --patch-size or raise --max-invalid.")
    return patch_set.count


def _products(cube: Path, out: Path, config: BatchConfig, deadline: Deadline) -> dict[str, str]:
    from fusecube.config import CubeSource, RunConfig
    from fusecube.runner import run

    mask = config.mask or ("cube" if config.source == "synthetic" else "none")
    run_config = RunConfig(source=CubeSource(path=cube), out=out, mask=mask,
                           ledger=config.ledger_location)
    # resume=True: a retried AOI continues its earlier products run block by block
    result = run(run_config, resume=True, progress=lambda stage, done, total: deadline.check(
        f"products, {stage} {done}/{total}"))
    outputs = {f"product_{k}": str(v) for k, v in result.products.items()}
    outputs["products_run"] = result.run_id
    return outputs
