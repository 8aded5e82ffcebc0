"""Fake STAC items pointing at files served by the loopback server."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import pystac
from odc.geo.geobox import GeoBox


def make_item(
    item_id: str,
    when: datetime,
    geobox: GeoBox,
    assets: Mapping[str, str],
    *,
    collection: str = "sentinel-2-l2a",
    properties: Mapping | None = None,
    asset_extra: Mapping[str, Mapping] | None = None,
) -> pystac.Item:
    """Build a STAC item whose footprint is ``geobox`` and whose assets are ``{name: href}``.

    Args:
        item_id: Item id.
        when: Acquisition time.
        geobox: Grid of the assets (footprint and ``proj`` metadata).
        assets: Asset name → href.
        collection: Collection id.
        properties: Extra item properties (e.g. ``eo:cloud_cover``, ``s2:processing_baseline``).
        asset_extra: Extra fields per asset (e.g. ``raster:bands``).

    Returns:
        The item.
    """
    footprint = geobox.footprint("EPSG:4326", npoints=2)
    props = {"proj:epsg": geobox.crs.epsg, **(properties or {})}
    item = pystac.Item(item_id, footprint.json, list(footprint.boundingbox), when, props,
                       collection=collection)
    for name, href in assets.items():
        extra = {"proj:shape": list(geobox.shape.yx), "proj:transform": list(geobox.affine)[:6],
                 **(asset_extra or {}).get(name, {})}
        item.add_asset(name, pystac.Asset(href, media_type=pystac.MediaType.COG,
                                          roles=["data"], extra_fields=extra))
    item.stac_extensions = [
        "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
        "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    ]
    return item
