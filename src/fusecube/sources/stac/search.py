"""Searching a STAC API: the items of a collection over the AOI and dates, usable for fusecube.

Searches are retried (backoff, jitter) on 429/5xx; an empty result is turned into a precise
reason (no items for the dates, AOI outside the footprints, all items above the cloud limit,
band missing from the items).
"""

from __future__ import annotations

import logging

import numpy as np

from fusecube.errors import SourceError, require
from fusecube.sources.retry import RetriesExhausted, with_retries
from fusecube.sources.stac.catalogues import CollectionSpec, StacOptions

log = logging.getLogger(__name__)


def open_catalogue(url: str, options: StacOptions):
    """Open a STAC API with retries (backoff, jitter) on 429/5xx and a request timeout."""
    pystac_client = require("pystac_client", "stac")
    from pystac_client.stac_api_io import StacApiIO
    from urllib3.util.retry import Retry

    retry = Retry(total=options.retry.attempts - 1, backoff_factor=options.retry.backoff_s,
                  backoff_max=options.retry.max_backoff_s, backoff_jitter=options.retry.backoff_s,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods=None,
                  raise_on_status=True, respect_retry_after_header=True)
    io = StacApiIO(max_retries=retry, timeout=options.timeout_s)
    try:
        client, _ = with_retries(lambda: pystac_client.Client.open(url, stac_io=io),
                                 f"open {url}", options.retry)
    except RetriesExhausted as exc:
        raise SourceError(f"STAC API {url} cannot be opened: {exc}. Check the URL and your "
                          "network, or try again later.") from exc
    return client


def _search(client, options: StacOptions, **params) -> list:
    def run():
        return list(client.search(**params).items())

    try:
        items, _ = with_retries(run, f"search {params.get('collections')}", options.retry)
    except RetriesExhausted as exc:
        raise SourceError(f"STAC search of {params.get('collections')} at {client.self_href} "
                          f"failed: {exc}. Try again later or raise --retries.") from exc
    return items


def search_items(client, spec: CollectionSpec, geometry, start: str, end: str,
                 options: StacOptions) -> list:
    """Items of ``spec`` over ``geometry`` between ``start`` and ``end``, usable for fusecube.

    Raises:
        SourceError: with the precise reason when no item is usable.
    """
    region = geometry.to_crs("EPSG:4326").json
    dates = f"{start}/{end}"
    items = _search(client, options, collections=[spec.id], intersects=region, datetime=dates)
    name = "Sentinel-2" if spec.sensor == "s2" else "Sentinel-1"
    if not items:
        raise SourceError(f"No {name} found: {_why_empty(client, spec, region, dates, options)}")
    wanted = [asset for _, asset in spec.assets]
    complete = [it for it in items if all(a in it.assets for a in wanted)]
    if not complete:
        have = sorted(set().union(*(it.assets for it in items)))
        missing = sorted({a for it in items for a in wanted if a not in it.assets})
        raise SourceError(
            f"No {name} found: band(s) {missing} missing from all {len(items)} items of "
            f"{spec.id!r} (they have {have}); map the roles to existing assets "
            "(e.g. --s2-assets red=B04,nir=B08,scl=SCL)."
        )
    if len(complete) < len(items):
        log.warning("%d %s items lack one of %s and are skipped", len(items) - len(complete),
                    spec.id, wanted)
    if spec.sensor == "s2":
        clouds = np.array([float(it.properties.get("eo:cloud_cover", 0.0)) for it in complete])
        kept = [it for it, c in zip(complete, clouds, strict=True) if c <= options.max_cloud]
        if not kept:
            raise SourceError(
                f"No Sentinel-2 found: all {len(complete)} items of {spec.id!r} for {dates} are "
                f"above the cloud limit {options.max_cloud:g}% (least cloudy: "
                f"{clouds.min():.0f}%); raise --max-cloud or widen the dates."
            )
        complete = kept
    return sorted(complete, key=lambda it: (it.datetime, it.id))


def _why_empty(client, spec: CollectionSpec, region: dict, dates: str,
               options: StacOptions) -> str:
    anywhere = _search(client, options, collections=[spec.id], datetime=dates, max_items=1)
    if anywhere:
        return (f"the AOI is outside the footprints of all {spec.id!r} items for {dates}; "
                "check the AOI coordinates (lon/lat order, CRS).")
    ever = _search(client, options, collections=[spec.id], intersects=region, max_items=1)
    if ever:
        return (f"no {spec.id!r} items in the catalogue for {dates} over the AOI (there are "
                f"items at other dates, e.g. {ever[0].datetime:%Y-%m-%d}); widen the dates.")
    return (f"the catalogue {client.self_href} has no {spec.id!r} items for the AOI at any "
            "date; check the collection id and the catalogue.")
