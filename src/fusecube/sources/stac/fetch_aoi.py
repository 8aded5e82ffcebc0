"""A :class:`~fusecube.config.StacSource` turned into a fetch: catalogue, options, grid, cube.

``fusecube run`` (a STAC source), ``fusecube fetch`` (flags) and ``fusecube batch`` (each AOI)
all describe what to read with one :class:`~fusecube.config.StacSource`; this module is the one
place that turns it into a :class:`~fusecube.sources.stac.catalogues.Catalogue`, the
:class:`~fusecube.sources.stac.catalogues.StacOptions` of a fetch and a UTM grid over the AOI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from odc.geo.geobox import GeoBox

from fusecube.config import StacSource
from fusecube.errors import ConfigError
from fusecube.sources.stac.catalogues import Catalogue, StacOptions
from fusecube.sources.stac.fetch import FetchResult


def catalogue_for(source: StacSource) -> Catalogue:
    """The source's catalogue (a known name or a STAC API URL) with its overrides applied.

    Raises:
        ConfigError: ``catalogue`` is neither a known name nor an http(s) URL.
    """
    from fusecube.sources.stac.catalogues import (
        CATALOGUES,
        S1_ROLES,
        S2_ROLES,
        CollectionSpec,
        parse_assets,
        s1_spec,
        s2_spec,
    )

    name = source.catalogue
    base = CATALOGUES.get(name)
    if base is None:
        if not name.startswith(("http://", "https://")):
            raise ConfigError(f"Unknown catalogue {name!r}; use one of {sorted(CATALOGUES)} or a "
                              "STAC API URL (https://...).")
        base = Catalogue(name, s2_spec(), s1_spec())
    if source.stac_url:
        base = replace(base, url=source.stac_url)
    s2 = base.s2 or s2_spec()
    if source.s2_collection:
        s2 = CollectionSpec(source.s2_collection, "s2", s2.assets)
    s1 = base.s1 or s1_spec()
    if source.s1_collection:
        s1 = CollectionSpec(source.s1_collection, "s1", s1.assets, s1.units)
    if source.s1_units:
        s1 = CollectionSpec(s1.id, "s1", s1.assets, source.s1_units)
    s2 = parse_assets(source.s2_assets, s2, S2_ROLES)
    s1 = parse_assets(source.s1_assets, s1, S1_ROLES)
    if base.s1 is None and not (source.s1_collection or source.s1_assets):
        s1 = None  # this catalogue has no Sentinel-1 fusecube can read
    return Catalogue(base.url, None if source.no_s2 else s2, None if source.no_s1 else s1)


def stac_options(source: StacSource) -> StacOptions:
    """The search and read options of a fetch described by ``source``."""
    from fusecube.sources.retry import RetryPolicy

    retry = RetryPolicy(attempts=source.retries, backoff_s=source.retry_backoff_s,
                        max_backoff_s=source.max_backoff_s, max_elapsed_s=source.max_retry_s)
    return StacOptions(catalogue=catalogue_for(source), period_days=source.period_days,
                       max_cloud=source.max_cloud, retry=retry, timeout_s=source.timeout_s,
                       gdal_retries=source.gdal_retries, fail_on_error=source.fail_on_error,
                       workers=source.workers, max_pages=source.max_pages,
                       max_items=source.max_items, max_search_s=source.max_search_s)


def fetch_aoi(source: StacSource, out: Path, *, progress=None, on_item: Callable | None = None,
              restart: bool = False) -> tuple[FetchResult, GeoBox]:
    """Fetch ``source.aoi`` into the zarr cube ``out`` on a UTM grid; resumable.

    Args:
        source: What to fetch (AOI, dates, catalogue, grid, retries).
        out: Output zarr cube.
        progress: Progress reporter.
        on_item: Called with the report of each item read.
        restart: Discard partial results of a fetch with other settings.

    Returns:
        The fetch result and the grid of the cube.

    Raises:
        ConfigError: The source has no AOI.
    """
    from fusecube.grid.geobox import aoi_geometry, resolve_geobox
    from fusecube.sources.stac.catalogues import sign_hook
    from fusecube.sources.stac.fetch import fetch
    from fusecube.storage.atomic import prepare_output

    prepare_output(out, kind="store")  # the output rule, before any request
    if not source.aoi:
        raise ConfigError("The STAC source has no aoi: give a bbox 'minx,miny,maxx,maxy' or a "
                          "vector file (source.aoi in the config, or fusecube fetch AOI).")
    region = aoi_geometry(source.aoi, crs=source.aoi_crs)
    geobox = resolve_geobox(region, resolution=source.resolution)
    result = fetch(region, start=source.start, end=source.end, out=out, geobox=geobox,
                   options=stac_options(source), sign_url=sign_hook(source.sign),
                   progress=progress, on_item=on_item, restart=restart)
    return result, geobox


def fetch_lines(result: FetchResult, geobox: GeoBox) -> list[str]:
    """The cube written, items read, megabytes, retries, and each failure."""
    return [f"cube: {result.path} ({geobox.shape.x} x {geobox.shape.y} px); items "
            f"{result.n_items} ({result.n_read} read now, "
            f"{result.bytes_read / 1e6:.1f} MB), retries {result.retries}, "
            f"failed {len(result.failures)}",
            *(f"  failed: {failure.item_id} {failure.asset} after {failure.attempts} "
              f"tries: {failure.error}" for failure in result.failures)]
