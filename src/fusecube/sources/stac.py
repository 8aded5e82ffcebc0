"""STAC source: search a catalogue, read only the AOI windows of the COGs, composite to periods.

Planning, reading and compositing are separate steps:

1. :func:`search_items` — pystac-client search over the AOI and dates, with retries; an empty
   result is turned into a precise reason (no items for the dates, AOI outside the
   footprints, all items above the cloud limit, band missing from the items).
2. :func:`read_item` — odc-stac load of one item onto the AOI GeoBox, asset by asset, so only
   the COG tiles overlapping the AOI are fetched. Sentinel-2 DN become reflectance with the
   item's scale/offset (or 1e-4 and the -1000 DN offset of processing baseline >= 04.00);
   SCL masks clouds and shadows; Sentinel-1 becomes linear sigma0.
3. :func:`fetch` — the whole thing, resumable: each item read is saved under
   ``<out>.parts/``; a rerun reads only the items that are missing; failures are recorded
   per item and asset and saved with the cube.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
from odc.geo.geobox import GeoBox

from fusecube.cube import CF_ATTRS, DIMS, NDVI, NDVI_QUALITY, TIME, VH, VV, with_geobox, write_cube
from fusecube.errors import ConfigError, SourceError, require
from fusecube.grid.geobox import aoi_geometry, resolve_geobox
from fusecube.sources.compose import (
    median_composite,
    period_index,
    periods_between,
    to_naive_utc,
    valid_fraction,
)
from fusecube.sources.gdal_net import NETWORK_STATS_CONFIG, clear_http_cache, downloaded_bytes
from fusecube.sources.retry import ItemFailure, RetriesExhausted, RetryPolicy, with_retries

log = logging.getLogger(__name__)

Sensor = Literal["s2", "s1"]
Progress = Callable[[str, int, int], None]
SignURL = Callable[[str], str]

S2_ROLES = ("red", "nir", "scl")
S1_ROLES = ("vv", "vh")
#: SCL classes kept as clear: vegetation, bare soil, water, snow. Dropped: no data (0),
#: saturated (1), dark/topographic shadow (2), cloud shadow (3), unclassified (7),
#: cloud medium/high probability (8, 9), thin cirrus (10).
DEFAULT_VALID_SCL = (4, 5, 6, 11)
#: GDAL errors after which its cache of the file must be dropped before a retry.
CACHE_POISON_MARKERS = ("does not exist", "Read failed")


@dataclass(frozen=True)
class CollectionSpec:
    """How to read one collection: its id, which asset plays which role, and units."""

    id: str
    """STAC collection id."""
    sensor: Sensor
    """``s2`` (optical, needs red/nir/scl) or ``s1`` (radar, needs vv/vh)."""
    assets: tuple[tuple[str, str], ...]
    """``(role, asset key)`` pairs, e.g. ``(("red", "B04"), ("nir", "B08"), ("scl", "SCL"))``."""
    units: Literal["linear", "db"] = "linear"
    """Sentinel-1 only: are the values linear sigma0/gamma0 or decibels."""

    def asset(self, role: str) -> str:
        """Asset key for a role."""
        return dict(self.assets)[role]


@dataclass(frozen=True)
class Catalogue:
    """A STAC API and the collections fusecube reads from it."""

    url: str
    """Root URL of the STAC API."""
    s2: CollectionSpec | None
    """Sentinel-2 L2A collection (None to skip optical)."""
    s1: CollectionSpec | None
    """Sentinel-1 collection (None to skip radar)."""


def s2_spec(collection: str = "sentinel-2-l2a", red: str = "B04", nir: str = "B08",
            scl: str = "SCL") -> CollectionSpec:
    """A Sentinel-2 L2A collection spec."""
    return CollectionSpec(collection, "s2", (("red", red), ("nir", nir), ("scl", scl)))


def s1_spec(collection: str = "sentinel-1-rtc", vv: str = "vv", vh: str = "vh",
            units: Literal["linear", "db"] = "linear") -> CollectionSpec:
    """A Sentinel-1 collection spec."""
    return CollectionSpec(collection, "s1", (("vv", vv), ("vh", vh)), units)


#: Known public catalogues. Planetary Computer assets need signing (``sign_url``, e.g.
#: ``planetary_computer.sign_url``); CDSE assets need credentials for their S3/HTTPS store.
CATALOGUES: dict[str, Catalogue] = {
    "planetary-computer": Catalogue("https://planetarycomputer.microsoft.com/api/stac/v1",
                                    s2_spec(), s1_spec()),
    "earth-search": Catalogue("https://earth-search.aws.element84.com/v1",
                              s2_spec(red="red", nir="nir", scl="scl"), None),
    "cdse": Catalogue("https://stac.dataspace.copernicus.eu/v1",
                      s2_spec(red="B04_10m", nir="B08_10m", scl="SCL_20m"), None),
}


@dataclass(frozen=True)
class StacOptions:
    """Options of a STAC fetch, grouped by concern."""

    catalogue: Catalogue = field(default_factory=lambda: CATALOGUES["planetary-computer"])
    """Where to search and which collections to read."""
    period_days: int = 12
    """Length of a compositing period in days."""
    max_cloud: float = 80.0
    """Skip Sentinel-2 items whose ``eo:cloud_cover`` is above this (percent)."""
    valid_scl: tuple[int, ...] = DEFAULT_VALID_SCL
    """SCL classes counted as clear."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """Retries per asset read and per search."""
    timeout_s: float = 30.0
    """HTTP timeout of one request (search page or COG range)."""
    gdal_retries: int = 3
    """Retries GDAL makes itself per HTTP range request (429/5xx) before an asset try fails."""
    fail_on_error: bool = False
    """Stop at the first item that fails after all retries (else record it and go on)."""
    workers: int = 2
    """Items read in parallel."""


@dataclass(frozen=True)
class ItemReport:
    """Progress of one item: sent to ``on_item`` as soon as it is read or given up."""

    item_id: str
    """STAC item id."""
    collection: str
    """Collection id."""
    period: int
    """0-based period the item belongs to."""
    ok: bool
    """Read (True) or recorded as failed (False)."""
    attempts: int
    """Tries made over all its assets."""
    bytes_read: int
    """Bytes GDAL downloaded for its assets (retries included)."""
    done: int
    """Items finished so far, this one included (resumed items count as finished)."""
    total: int
    """Items planned."""


@dataclass
class FetchResult:
    """What a fetch produced."""

    path: Path
    """The cube written."""
    n_items: int
    """Items planned (after cloud filtering)."""
    n_read: int
    """Items read in this call (the rest came from a previous, interrupted call)."""
    failures: list[ItemFailure]
    """Items/assets that could not be read."""
    retries: int
    """Extra tries made in this call (beyond the first per asset)."""
    bytes_read: int = 0
    """Bytes downloaded for the assets in this call (as counted by GDAL)."""


@dataclass(frozen=True)
class _Task:
    item: Any  # pystac.Item
    spec: CollectionSpec
    period: int

    @property
    def key(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.spec.id}__{self.item.id}")


# -- planning --------------------------------------------------------------------------------
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


# -- reading ---------------------------------------------------------------------------------
def _band_meta(item, asset: str) -> dict:
    bands = item.assets[asset].extra_fields.get("raster:bands") or [{}]
    return bands[0]


def s2_scale_offset(item, asset: str) -> tuple[float, float]:
    """Reflectance = DN * scale + offset for a Sentinel-2 L2A asset.

    Uses the asset's ``raster:bands`` scale/offset when the item declares them; otherwise
    1e-4 and, for processing baseline 04.00 or later (items from 25 January 2022 on), the
    -1000 DN offset (-0.1 reflectance).
    """
    meta = _band_meta(item, asset)
    if "scale" in meta or "offset" in meta:
        return float(meta.get("scale", 1.0)), float(meta.get("offset", 0.0))
    props = item.properties
    baseline = props.get("s2:processing_baseline") or props.get("processing:version")
    if baseline is None:
        # no metadata: the baseline switched on 2022-01-25
        new = item.datetime is not None and to_naive_utc(item.datetime) >= np.datetime64(
            "2022-01-25")
    else:
        new = float(baseline) >= 4.0
    return 1e-4, (-0.1 if new else 0.0)


def _load_asset(item, asset: str, geobox: GeoBox, resampling: str,
                sign_url: SignURL | None) -> tuple[np.ndarray, float | None]:
    import odc.stac

    try:
        ds = odc.stac.load([item], bands=[asset], geobox=geobox, chunks=None, dtype="float32",
                           resampling=resampling, patch_url=sign_url, fail_on_error=True,
                           progress=None)
    except Exception as exc:
        # GDAL caches a failed open (e.g. after a 500) as "file does not exist", and may keep
        # a truncated range as data ("Read failed"): forget that file before the next try.
        # Other failures (timeouts, HTTP errors) keep the cache, so the retry fetches only
        # the ranges still missing.
        if any(marker in str(exc) for marker in CACHE_POISON_MARKERS):
            href = item.assets[asset].href
            clear_http_cache(sign_url(href) if sign_url else href)
        raise
    var = ds[asset]
    nodata = var.attrs.get("nodata", _band_meta(item, asset).get("nodata"))
    return var.values[0], (None if nodata is None else float(nodata))


def _missing(values: np.ndarray, nodata: float | None) -> np.ndarray:
    missing = ~np.isfinite(values)
    if nodata is not None and np.isfinite(nodata):
        missing |= values == nodata
    return missing


def read_item(task: _Task, geobox: GeoBox, options: StacOptions, sign_url: SignURL | None,
              rng: random.Random) -> tuple[dict[str, np.ndarray], int]:
    """Read one item onto ``geobox``; returns arrays and the number of tries it took.

    Sentinel-2 gives ``ndvi`` (NaN where not clear), ``valid`` and ``observed``; Sentinel-1
    gives linear ``vv`` and ``vh`` (NaN where missing).

    Raises:
        RetriesExhausted: an asset failed after all retries (``.asset`` names it).
    """
    item, spec = task.item, task.spec
    raw: dict[str, tuple[np.ndarray, float | None]] = {}
    tries = 0
    for role, asset in spec.assets:
        resampling = "nearest" if role == "scl" else "bilinear"
        try:
            raw[role], n = with_retries(
                lambda a=asset, r=resampling: _load_asset(item, a, geobox, r, sign_url),
                f"{item.id}/{asset}", options.retry, rng=rng)
        except RetriesExhausted as exc:
            exc.asset = asset  # type: ignore[attr-defined]
            raise
        tries += n
    if spec.sensor == "s1":
        out = {}
        for role in S1_ROLES:
            values, nodata = raw[role]
            values = np.where(_missing(values, nodata), np.nan, values)
            if spec.units == "db":
                values = np.power(10.0, values / 10.0)
            out[role] = np.where(values > 0, values, np.nan).astype(np.float32)
        return out, tries
    (red, red_nd), (nir, nir_nd), (scl, scl_nd) = raw["red"], raw["nir"], raw["scl"]
    observed = ~(_missing(red, red_nd) | _missing(nir, nir_nd) | _missing(scl, scl_nd))
    observed &= (red > 0) & (nir > 0) & (scl > 0)  # DN 0 / SCL 0 are L2A no-data
    r_scale, r_off = s2_scale_offset(item, spec.asset("red"))
    n_scale, n_off = s2_scale_offset(item, spec.asset("nir"))
    red_refl, nir_refl = red * r_scale + r_off, nir * n_scale + n_off
    total = nir_refl + red_refl
    clear = observed & np.isin(np.where(observed, scl, 0).astype(np.int64), options.valid_scl)
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = (nir_refl - red_refl) / total
    valid = clear & (total > 0) & (np.abs(ndvi) <= 1)
    return {"ndvi": np.where(valid, ndvi, np.nan).astype(np.float32), "valid": valid,
            "observed": observed}, tries


# -- resumable state -------------------------------------------------------------------------
def _parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _fingerprint(geobox: GeoBox, starts: np.ndarray, options: StacOptions) -> str:
    desc = {"geobox": [str(geobox.crs), list(geobox.affine)[:6], list(geobox.shape.yx)],
            "starts": [str(s) for s in starts], "period_days": options.period_days,
            "catalogue": asdict(options.catalogue), "valid_scl": list(options.valid_scl)}
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load_npz(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:  # a torn file from a crash: read again
        log.warning("ignoring unreadable partial result %s (%s)", path, exc)
        return None


# -- the fetch -------------------------------------------------------------------------------
def fetch(
    aoi: Any = None,
    *,
    start: str,
    end: str,
    out: str | os.PathLike,
    geobox: GeoBox | None = None,
    resolution: float = 10.0,
    options: StacOptions | None = None,
    sign_url: SignURL | None = None,
    progress: Progress | None = None,
    on_item: Callable[[ItemReport], None] | None = None,
    restart: bool = False,
) -> FetchResult:
    """Fetch a cube for an AOI from a STAC API and write it to ``out`` (zarr).

    Args:
        aoi: Where (bbox, polygon, vector file; see :func:`fusecube.grid.geobox.resolve_geobox`).
        start: First day of the first period (ISO date).
        end: Last day to cover (ISO date).
        out: Output zarr path; partial results live in ``<out>.parts`` until the cube is done.
        geobox: Output grid (instead of ``aoi`` + ``resolution``).
        resolution: Pixel size in metres for the automatic UTM grid.
        options: Catalogue, periods, cloud limit, retries, ``fail_on_error``.
        sign_url: URL-signing hook applied to every asset href (e.g. Planetary Computer).
        progress: ``(stage, done, total)`` callback; stages ``items`` and ``periods``.
        on_item: Called with an :class:`ItemReport` (bytes read, tries) after each item.
        restart: Discard partial results from an earlier fetch with other settings.

    Returns:
        What was fetched and what failed.

    Raises:
        SourceError: nothing usable in the catalogue (with the reason), or an item failed and
            ``fail_on_error`` is set.
    """
    options = options or StacOptions()
    out = Path(out)
    progress = progress or (lambda stage, done, total: None)
    if geobox is None:
        geobox = resolve_geobox(aoi, resolution=resolution)
    region = geobox.extent if aoi is None else aoi_geometry(aoi)
    starts = periods_between(start, end, options.period_days)
    last_day = starts[-1] + np.timedelta64(options.period_days, "D") - np.timedelta64(1, "s")
    end_text = pd.Timestamp(last_day).strftime("%Y-%m-%dT%H:%M:%SZ")
    start_text = pd.Timestamp(starts[0]).strftime("%Y-%m-%dT00:00:00Z")
    cat = options.catalogue
    specs = [s for s in (cat.s2, cat.s1) if s is not None]
    if not specs:
        raise ConfigError("The catalogue has neither a Sentinel-2 nor a Sentinel-1 collection.")

    parts = _parts_dir(out)
    fingerprint = _fingerprint(geobox, starts, options)
    _prepare_parts(parts, fingerprint, restart)

    client = open_catalogue(cat.url, options)
    tasks: list[_Task] = []
    for spec in specs:
        items = search_items(client, spec, region, start_text, end_text, options)
        index = period_index([it.datetime for it in items], starts, options.period_days)
        tasks += [_Task(it, spec, int(p)) for it, p in zip(items, index, strict=True) if p >= 0]
    log.info("%d items to read for %d periods", len(tasks), len(starts))

    failures, retries, n_read, n_bytes = _read_all(tasks, geobox, options, sign_url, parts,
                                                   progress, on_item)
    (parts / "failures.json").write_text(json.dumps([f.to_dict() for f in failures], indent=1))
    cube = _composite(tasks, starts, geobox, options, parts, progress)
    cube.attrs.update({"source": "stac", "catalogue": cat.url,
                       "collections": json.dumps([s.id for s in specs]),
                       "period_days": options.period_days,
                       "fetch_failures": json.dumps([f.to_dict() for f in failures])})
    write_cube(cube, out)
    shutil.rmtree(parts, ignore_errors=True)
    return FetchResult(out, len(tasks), n_read, failures, retries, n_bytes)


def _prepare_parts(parts: Path, fingerprint: str, restart: bool) -> None:
    stamp = parts / "fingerprint"
    if parts.exists() and stamp.exists() and stamp.read_text() != fingerprint:
        if not restart:
            raise SourceError(
                f"{parts} holds a partial fetch with other settings (AOI, dates, periods or "
                "catalogue); rerun with the same settings to resume, or pass --restart."
            )
        shutil.rmtree(parts)
    (parts / "items").mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)


def _read_all(tasks: Sequence[_Task], geobox: GeoBox, options: StacOptions,
              sign_url: SignURL | None, parts: Path, progress: Progress,
              on_item: Callable[[ItemReport], None] | None,
              ) -> tuple[list[ItemFailure], int, int, int]:
    import odc.stac

    odc.stac.configure_rio(
        GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", GDAL_HTTP_TIMEOUT=str(int(options.timeout_s)),
        GDAL_HTTP_CONNECTTIMEOUT=str(int(options.timeout_s)),
        GDAL_HTTP_MAX_RETRY=str(options.gdal_retries),
        GDAL_HTTP_RETRY_DELAY=str(options.retry.backoff_s),
        GDAL_HTTP_MERGE_CONSECUTIVE_RANGES="YES", VSI_CACHE="TRUE",
        # one request per merged range, each retried by GDAL on 429/5xx: a fault costs one
        # range, not the whole asset read (the parallel mode gives up on the first error)
        GDAL_HTTP_MULTIRANGE="SERIAL", **NETWORK_STATS_CONFIG,
    )
    todo = [t for t in tasks if not (parts / "items" / f"{t.key}.npz").exists()]
    done = len(tasks) - len(todo)
    if done:
        log.info("resuming: %d of %d items already read", done, len(tasks))
    progress("items", done, len(tasks))
    failures: list[ItemFailure] = []
    retries = n_read = n_bytes = 0

    def urls(task: _Task) -> list[str]:
        hrefs = [task.item.assets[a].href for _, a in task.spec.assets]
        return [sign_url(h) for h in hrefs] if sign_url else hrefs

    def job(task: _Task, seed: int):
        before = downloaded_bytes(urls(task))
        try:
            return read_item(task, geobox, options, sign_url, random.Random(seed))
        finally:
            after = downloaded_bytes(before)
            task_bytes[task.key] = sum(after[u] - before[u] for u in before)

    task_bytes: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
        futures = {pool.submit(job, t, i): t for i, t in enumerate(todo)}
        try:
            for future in as_completed(futures):
                task = futures[future]
                try:
                    arrays, attempts = future.result()
                    ok = True
                except RetriesExhausted as exc:
                    ok, attempts = False, exc.attempts
                    failure = ItemFailure(task.item.id, getattr(exc, "asset", "?"),
                                          f"{type(exc.last).__name__}: {exc.last}", exc.attempts,
                                          task.spec.id)
                    failures.append(failure)
                    retries += exc.attempts - 1
                    log.warning("item %s asset %s failed after %d tries: %s", failure.item_id,
                                failure.asset, failure.attempts, failure.error)
                    if options.fail_on_error:
                        raise SourceError(
                            f"Item {failure.item_id} ({failure.collection}) asset "
                            f"{failure.asset} failed after {failure.attempts} tries: "
                            f"{failure.error}. Rerun to resume, or set fail_on_error=False "
                            "to record failures and go on."
                        ) from exc
                else:
                    _save_npz(parts / "items" / f"{task.key}.npz", arrays)
                    retries += attempts - len(task.spec.assets)
                    n_read += 1
                done += 1
                item_bytes = task_bytes.get(task.key, 0)
                n_bytes += item_bytes
                log.info("item %s %s: %d tries, %.2f MB", task.item.id,
                         "read" if ok else "failed", attempts, item_bytes / 1e6)
                if on_item is not None:
                    on_item(ItemReport(task.item.id, task.spec.id, task.period, ok, attempts,
                                       item_bytes, done, len(tasks)))
                progress("items", done, len(tasks))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return failures, retries, n_read, n_bytes


def _composite(tasks: Sequence[_Task], starts: np.ndarray, geobox: GeoBox,
               options: StacOptions, parts: Path, progress: Progress) -> xr.Dataset:
    shape = (len(starts), *geobox.shape.yx)
    cube = {name: np.full(shape, np.nan, np.float32) for name in (VV, VH, NDVI)}
    cube[NDVI_QUALITY] = np.zeros(shape, np.float32)
    counts = {"s2": np.zeros(len(starts), np.int16), "s1": np.zeros(len(starts), np.int16)}
    first_obs = np.full(len(starts), np.datetime64("NaT"), "datetime64[ns]")
    last_obs = first_obs.copy()
    by_period: dict[int, list[tuple[_Task, dict]]] = {}
    for task in tasks:
        path = parts / "items" / f"{task.key}.npz"
        arrays = _load_npz(path) if path.exists() else None  # absent: the item failed
        if arrays is None:
            continue
        by_period.setdefault(task.period, []).append((task, arrays))
    for p in range(len(starts)):
        loaded = by_period.pop(p, [])
        s2 = [a for t, a in loaded if t.spec.sensor == "s2"]
        s1 = [a for t, a in loaded if t.spec.sensor == "s1"]
        counts["s2"][p], counts["s1"][p] = len(s2), len(s1)
        if s2:
            cube[NDVI][p] = median_composite(np.stack([a["ndvi"] for a in s2]))
            cube[NDVI_QUALITY][p] = valid_fraction(np.stack([a["valid"] for a in s2]),
                                                   np.stack([a["observed"] for a in s2]))
        if s1:
            cube[VV][p] = median_composite(np.stack([a["vv"] for a in s1]))
            cube[VH][p] = median_composite(np.stack([a["vh"] for a in s1]))
        if loaded:
            times = np.array([to_naive_utc(t.item.datetime) for t, _ in loaded])
            first_obs[p], last_obs[p] = times.min(), times.max()
        progress("periods", p + 1, len(starts))
    return build_cube(cube, starts, geobox, options.period_days,
                      extra_coords={"n_s2_items": counts["s2"], "n_s1_items": counts["s1"],
                                    "first_obs": first_obs, "last_obs": last_obs})


def build_cube(variables: Mapping[str, np.ndarray], starts: np.ndarray, geobox: GeoBox,
               period_days: int, *, extra_coords: Mapping[str, np.ndarray] | None = None,
               ) -> xr.Dataset:
    """Assemble ``(time, y, x)`` arrays into a cube with period centres and CF attributes."""
    half = np.timedelta64(period_days * 12, "h")
    coords = {TIME: starts + half, "period_start": (TIME, starts)}
    coords.update({k: (TIME, v) for k, v in (extra_coords or {}).items()})
    ds = xr.Dataset({name: (DIMS, values, dict(CF_ATTRS.get(name, {})))
                     for name, values in variables.items()}, coords=coords)
    return with_geobox(ds, geobox)


def parse_assets(text: str | None, default: CollectionSpec | None,
                 roles: Iterable[str]) -> CollectionSpec | None:
    """Override asset keys from ``"red=B04,nir=B08"`` (CLI helper)."""
    if not text or default is None:
        return default
    mapping = dict(default.assets)
    for part in text.split(","):
        role, _, asset = part.partition("=")
        if role.strip() not in roles or not asset.strip():
            raise ConfigError(f"asset mapping {part!r} must look like ROLE=ASSET with ROLE one "
                              f"of {list(roles)}.")
        mapping[role.strip()] = asset.strip()
    return CollectionSpec(default.id, default.sensor, tuple(mapping.items()), default.units)


def sign_hook(spec: str | None) -> Callable[[str], str] | None:
    """``planetary-computer`` or ``module:function`` → a URL-signing callable (None: no signing).

    Raises:
        MissingDependencyError: ``planetary-computer`` without its package.
        ConfigError: ``module:function`` that cannot be imported.
    """
    import importlib

    from fusecube.errors import ConfigError, MissingDependencyError

    if not spec:
        return None
    if spec == "planetary-computer":
        try:
            return importlib.import_module("planetary_computer").sign_url
        except ImportError as exc:
            raise MissingDependencyError("--sign planetary-computer needs the package "
                                         "'planetary-computer': pip install planetary-computer") from exc
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"--sign {spec!r}: give 'planetary-computer' or 'module:function' of an "
                          f"importable function ({exc}).") from exc
