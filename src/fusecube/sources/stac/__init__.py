"""STAC source: search a catalogue, read only the AOI windows of the COGs, composite to periods.

Planning, reading and compositing are separate steps, each in its module:

1. :mod:`~fusecube.sources.stac.catalogues` – known catalogues, collection specs (which asset
   plays which role) and the options of a fetch.
2. :mod:`~fusecube.sources.stac.search` – pystac-client search over the AOI and dates, with
   retries; an empty result is turned into a precise reason (no items for the dates, AOI
   outside the footprints, all items above the cloud limit, band missing from the items).
3. :mod:`~fusecube.sources.stac.read` – odc-stac load of one item onto the AOI GeoBox, asset
   by asset, so only the COG tiles overlapping the AOI are fetched.
4. :mod:`~fusecube.sources.stac.composite` – per-period median composites into a cube.
5. :mod:`~fusecube.sources.stac.fetch` – the whole thing, resumable
   (:mod:`~fusecube.sources.stac.resume`): each item read is saved under ``<out>.parts/``; a
   rerun reads only the items that are missing; failures are recorded per item and asset and
   saved with the cube.
"""
