"""Reading one STAC item onto the AOI GeoBox: odc-stac, asset by asset, only the COG tiles needed.

Sentinel-2 DN become reflectance with the item's scale/offset (or 1e-4 and the -1000 DN
offset of processing baseline >= 04.00); SCL masks clouds and shadows; the result is NDVI.
Sentinel-1 becomes linear sigma0; its unit is decided from the values, and a collection
whose stated unit (``--s1-units``) contradicts them is refused.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from fusecube.errors import CubeSchemaError
from fusecube.sources.bands import backscatter_units
from fusecube.sources.compose import (
    to_naive_utc,
)
from fusecube.sources.gdal_net import clear_http_cache
from fusecube.sources.retry import RetriesExhausted, with_retries
from fusecube.sources.stac.catalogues import S1_ROLES, CollectionSpec, SignURL, StacOptions
from fusecube.units import from_db

#: GDAL errors after which its cache of the file must be dropped before a retry: a failed
#: open (after a 5xx/429 GDAL keeps answering "HTTP response code: 503" without asking the
#: server again) and a truncated range ("Read failed").
CACHE_POISON_MARKERS = ("does not exist", "Read failed", "HTTP response code")


@dataclass(frozen=True)
class _Task:
    item: Any  # pystac.Item
    spec: CollectionSpec
    period: int

    @property
    def key(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.spec.id}__{self.item.id}")


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
        # GDAL caches a failed open (e.g. after a 500) as "file does not exist" or as the
        # HTTP error itself, and may keep a truncated range as data ("Read failed"): forget
        # that file before the next try. Other failures (timeouts) keep the cache, so the
        # retry fetches only the ranges still missing.
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


def s1_units(values: np.ndarray, spec: CollectionSpec, item_id: str, role: str) -> str:
    """The unit of a Sentinel-1 asset as read, decided from its values; a contradicting spec is an error.

    Raises:
        CubeSchemaError: The values are dB where the collection says linear (or the reverse;
            the message gives the ``--s1-units`` that fits), or neither unit.
    """
    values = np.where(values == 0, np.nan, values)  # 0: fill outside the swath, not a measurement
    if not np.isfinite(values).any():
        return spec.units
    asset = spec.asset(role)
    found = backscatter_units(xr.DataArray(values, dims=("y", "x")), name=asset,
                              source=f"item {item_id} ({spec.id})")
    if found != spec.units:
        finite = values[np.isfinite(values)]
        raise CubeSchemaError(
            f"Asset {asset!r} of item {item_id} ({spec.id}) is read as {spec.units} but its values are "
            f"{'dB (mostly negative)' if found == 'db' else 'linear sigma0 (positive, mostly below 1)'}: "
            f"median {float(np.median(finite)):.4g}, {float(np.mean(finite < 0)):.0%} negative. "
            f"Pass --s1-units {found} (s1_units: {found} in a config).")
    return found


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
            if s1_units(values, spec, item.id, role) == "db":
                values = from_db(values)
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
