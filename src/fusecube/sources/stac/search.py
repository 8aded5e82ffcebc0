"""Searching a STAC API: the items of a collection over the AOI and dates, usable for fusecube.

Searches are retried (backoff, jitter) on 429/5xx, a ``Retry-After`` is honoured up to the
longest backoff; pagination is bounded (pages, items, seconds) and stops at once when the
``next`` links go round in circles. An empty result is turned into a precise reason (no items for
the dates, AOI outside the footprints, all items above the cloud limit, band missing from the
items); items whose grid has no CRS are refused, naming them
(:mod:`fusecube.sources.stac.projection`).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from fusecube.errors import SourceError, require
from fusecube.sources.retry import RetriesExhausted, with_retries
from fusecube.sources.stac.catalogues import CollectionSpec, StacOptions
from fusecube.sources.stac.projection import check_projection

log = logging.getLogger(__name__)


def open_catalogue(url: str, options: StacOptions):
    """Open a STAC API with retries (backoff, jitter) on 429/5xx and a request timeout."""
    pystac_client = require("pystac_client", "stac")
    from pystac_client.stac_api_io import StacApiIO

    retry = _capped_retry(options.retry.max_backoff_s)(
        total=options.retry.attempts - 1, backoff_factor=options.retry.backoff_s,
        backoff_max=options.retry.max_backoff_s, backoff_jitter=options.retry.backoff_s,
        status_forcelist=(429, 500, 502, 503, 504), allowed_methods=None,
        raise_on_status=True, respect_retry_after_header=True)
    io = StacApiIO(max_retries=retry, timeout=options.timeout_s)
    try:
        client, _ = with_retries(lambda: pystac_client.Client.open(url, stac_io=io),
                                 f"open {url}", options.retry)
    except RetriesExhausted as exc:
        raise SourceError(f"STAC API {url} cannot be opened: {_one_line(exc)}. Check the URL "
                          "and your network, or try again later.") from exc
    return client


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _capped_retry(cap_s: float) -> type:
    """A urllib3 ``Retry`` class that waits at most ``cap_s`` for a ``Retry-After``.

    urllib3 allows hours; a server asking to come back later must not hold a fetch that long.
    """
    from urllib3.util.retry import Retry

    def get_retry_after(self, response):
        seconds = Retry.get_retry_after(self, response)
        return None if seconds is None else min(seconds, cap_s)

    return type("CappedRetry", (Retry,), {"get_retry_after": get_retry_after})


def _search(client, options: StacOptions, **params) -> list:
    what = params.get("collections")

    def run():
        return _bounded_items(client, client.search(**params), what, options)

    try:
        items, _ = with_retries(run, f"search {what}", options.retry)
    except RetriesExhausted as exc:
        raise SourceError(f"STAC search of {what} at {client.self_href} failed: "
                          f"{_one_line(exc)}. Try again later or raise --retries.") from exc
    return items


def _bounded_items(client, search, what, options: StacOptions) -> list:
    """The items of ``search``, page by page, within the limits of ``options``.

    Raises:
        SourceError: a page holds only items already returned (the ``next`` links loop), or
            the search passes ``max_pages``, ``max_items`` or ``max_search_s``.
    """
    import pystac

    url = client.self_href
    where = f"The STAC search of {what} at {url}"
    started = time.monotonic()
    items: list = []
    seen_ids: set[str] = set()
    for number, page in enumerate(search.pages_as_dicts(), start=1):
        features = page.get("features") or []
        fresh = [f for f in features if f.get("id") not in seen_ids]
        if features and not fresh:
            raise SourceError(
                f"{where} goes round in circles: page {number} holds only items already "
                f"returned (e.g. {features[0].get('id')!r}); the catalogue's 'next' links loop. "
                "Report it to the catalogue provider, or use another catalogue or mirror "
                "(--catalogue).")
        seen_ids.update(f.get("id") for f in fresh)
        items += [pystac.Item.from_dict(f, root=client, preserve_dict=False) for f in fresh]
        if not any(ln.get("rel") == "next" for ln in page.get("links") or []):
            break
        elapsed = time.monotonic() - started
        if number >= options.max_pages or len(items) >= options.max_items or \
                elapsed >= options.max_search_s:
            raise SourceError(
                f"{where} stopped after {number} pages, {len(items)} items and {elapsed:.0f} s "
                f"with more pages to come (limits: --max-pages {options.max_pages}, "
                f"--max-items {options.max_items}, --max-search-s {options.max_search_s:g}). "
                "Narrow the AOI or the dates, or raise the limit if the catalogue really holds "
                "that many items (max_pages, max_items, max_search_s in a config).")
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
    complete = check_projection(complete, spec)
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
