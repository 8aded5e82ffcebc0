"""A whole, resumable STAC fetch: search, read every item (in parallel, with retries), composite.

Each item read is saved under ``<out>.parts/`` (:mod:`fusecube.sources.stac.resume`); a rerun
reads only the items that are missing; failures are recorded per item and asset and saved
with the cube. A fetch in which every item of a collection failed, or whose cube would hold no
valid value at all, raises instead: the cube is written (atomically) only on success, so a
previous cube at ``out`` is kept as it was.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from odc.geo.geobox import GeoBox

from fusecube.cube import NDVI, VH, VV, write_cube
from fusecube.errors import ConfigError, SourceError
from fusecube.grid.geobox import aoi_geometry, resolve_geobox
from fusecube.sources.compose import (
    period_index,
    periods_between,
)
from fusecube.sources.gdal_net import NETWORK_STATS_CONFIG, downloaded_bytes
from fusecube.sources.retry import ItemFailure, RetriesExhausted, is_permanent
from fusecube.sources.stac.catalogues import Progress, SignURL, StacOptions
from fusecube.sources.stac.composite import _composite
from fusecube.sources.stac.read import _Task, read_item
from fusecube.sources.stac.resume import _fingerprint, _parts_dir, _prepare_parts, _save_npz
from fusecube.sources.stac.search import open_catalogue, search_items
from fusecube.storage.atomic import check_replaceable, write_text_atomic

log = logging.getLogger(__name__)


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
        SourceError: nothing usable in the catalogue (with the reason), every item of a
            collection failed (``.failures`` lists them), the cube would hold no valid value,
            or an item failed and ``fail_on_error`` is set. ``out`` is then left as it was.
        OutputWriteError: ``out`` is a file or a folder fusecube did not write (before any
            network request).
    """
    options = options or StacOptions()
    out = Path(out)
    check_replaceable(out, folder=True)
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
    try:
        return _fetch_into(out, parts, region, geobox, starts, start_text, end_text, specs,
                           options, sign_url, progress, on_item)
    except BaseException:
        if not any((parts / "items").glob("*.npz")):
            shutil.rmtree(parts, ignore_errors=True)  # nothing worth resuming: leave no trace
        raise


def _fetch_into(out: Path, parts: Path, region, geobox: GeoBox, starts: np.ndarray,
                start_text: str, end_text: str, specs: Sequence, options: StacOptions,
                sign_url: SignURL | None, progress: Progress,
                on_item: Callable[[ItemReport], None] | None) -> FetchResult:
    cat = options.catalogue
    client = open_catalogue(cat.url, options)
    tasks: list[_Task] = []
    for spec in specs:
        items = search_items(client, spec, region, start_text, end_text, options)
        index = period_index([it.datetime for it in items], starts, options.period_days)
        tasks += [_Task(it, spec, int(p)) for it, p in zip(items, index, strict=True) if p >= 0]
    log.info("%d items to read for %d periods", len(tasks), len(starts))

    failures, retries, n_read, n_bytes = _read_all(tasks, geobox, options, sign_url, parts,
                                                   progress, on_item)
    write_text_atomic(parts / "failures.json",
                      json.dumps([f.to_dict() for f in failures], indent=1))
    _check_every_collection_read(tasks, specs, failures, parts, out)
    cube = _composite(tasks, starts, geobox, options, parts, progress)
    _check_cube_has_values(cube, specs, len(tasks), parts, out)
    cube.attrs.update({"source": "stac", "catalogue": cat.url,
                       "collections": json.dumps([s.id for s in specs]),
                       "period_days": options.period_days,
                       "fetch_failures": json.dumps([f.to_dict() for f in failures])})
    write_cube(cube, out)
    shutil.rmtree(parts, ignore_errors=True)
    return FetchResult(out, len(tasks), n_read, failures, retries, n_bytes)


def _check_every_collection_read(tasks: Sequence[_Task], specs: Sequence, failures:
                                 Sequence[ItemFailure], parts: Path, out: Path) -> None:
    """Raise when no item of some collection could be read (its variables would be all NaN)."""
    read = {t.key for t in tasks if (parts / "items" / f"{t.key}.npz").exists()}
    empty = [s for s in specs if any(t.spec.id == s.id for t in tasks)
             and not any(t.key in read for t in tasks if t.spec.id == s.id)]
    if not empty:
        return
    failed = [f for f in failures if f.collection in {s.id for s in empty}]
    kept = f"; the {len(read)} items read are kept in {parts} for the rerun" if read else ""
    shown = "; ".join(f"{f.item_id}/{f.asset}: {' '.join(f.error.split())}"
                      for f in failed[:3])
    more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
    names = ", ".join(f"{s.id!r}" for s in empty)
    error = SourceError(
        f"Every item of {names} failed to read ({len(failed)} of {len(tasks)} items failed: "
        f"{shown}{more}); the cube would hold no data from it, so nothing was written to "
        f"{out} and a previous cube there is kept{kept}. Fix: {_fix_for(failed)}.")
    error.failures = list(failures)  # type: ignore[attr-defined]
    error.n_items = len(tasks)  # type: ignore[attr-defined]
    raise error


#: Error texts of a server or network that is failing (worth trying again later).
NETWORK_MARKERS = ("HTTP response code: 5", "HTTP response code: 429", "timed out", "Timeout",
                   "Connection", "Read failed", "curl")


def _fix_for(failed: Sequence[ItemFailure]) -> str:
    if failed and all(is_permanent(Exception(f.error)) for f in failed):
        return ("the assets are missing or forbidden: check the catalogue, the asset names "
                "(--s2-assets, --s1-assets) and the URL signing (--sign)")
    if any(marker in f.error for f in failed for marker in NETWORK_MARKERS):
        return ("the data server is failing: try again later (a rerun reads only the missing "
                "items), or raise --retries and --timeout")
    return ("the items cannot be read as published (see the errors): use another catalogue "
            "or mirror (--catalogue), or report the items to its provider")


def _check_cube_has_values(cube, specs: Sequence, n_items: int, parts: Path, out: Path) -> None:
    """Raise when the composite holds no finite value in any variable (all nodata or clouds)."""
    names = [name for name in (NDVI, VV, VH) if name in cube]
    if any(np.isfinite(cube[name].values).any() for name in names):
        return
    for item in (parts / "items").glob("*.npz"):
        item.unlink()  # read without error: a rerun would give the same, nothing to resume
    raise SourceError(
        f"The {n_items} items of {', '.join(repr(s.id) for s in specs)} were read but hold no "
        f"valid pixel over the AOI in any of {names} (all no-data, or every Sentinel-2 pixel "
        f"clouded); nothing was written to {out} and a previous cube there is kept. Check the "
        "AOI and the dates, or raise --max-cloud.")


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
