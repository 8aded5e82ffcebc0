"""The CRS of a STAC item's grid, from whichever projection field the catalogue fills in.

odc-stac places an asset by its ``proj:shape`` and ``proj:transform`` in the CRS given by
``proj:epsg``; catalogues that follow projection extension v2 give ``proj:code`` instead (and
some only ``proj:wkt2`` or ``proj:projjson``). :func:`check_projection` makes every item
readable by any supported odc-stac release (``proj:code`` also written as ``proj:epsg`` or
``proj:wkt2``), and refuses, naming the items, a grid with no CRS at all or one that cannot
be parsed: such an item would otherwise fail to read, retried, and leave its period empty.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from fusecube.errors import SourceError
from fusecube.sources.stac.catalogues import CollectionSpec

log = logging.getLogger(__name__)

#: Fields that say where an asset's pixels are (they need a CRS to mean anything).
GRID_FIELDS = ("proj:shape", "proj:transform")

#: Fields that give the CRS, in the order they are trusted.
CRS_FIELDS = ("proj:epsg", "proj:code", "proj:wkt2", "proj:projjson")


def _crs_of(fields: Mapping) -> tuple[str, object] | None:
    for key in CRS_FIELDS:
        value = fields.get(key)
        if value not in (None, "", {}):
            return key, value
    return None


def _parse(key: str, value: object):
    from odc.geo.geom import CRS

    if key == "proj:epsg":
        return CRS(f"EPSG:{int(value)}")  # type: ignore[call-overload]
    return CRS(value)  # type: ignore[arg-type]


def _normalise(fields: dict, key: str, crs) -> None:
    """Add ``proj:epsg`` (or ``proj:wkt2``) beside a CRS only ``proj:code``/``projjson`` give."""
    if key == "proj:epsg":
        return
    if crs.epsg is not None:
        fields["proj:epsg"] = int(crs.epsg)
    elif key == "proj:code":
        fields["proj:wkt2"] = crs.wkt


def check_projection(items: Sequence, spec: CollectionSpec) -> list:
    """The items of ``spec``, each with a CRS odc-stac can read for every asset fusecube reads.

    The CRS is taken from the asset's own projection fields, else the item's (as odc-stac
    does); an asset without ``proj:shape``/``proj:transform`` is left to odc-stac, which then
    reads the grid from the file itself.

    Args:
        items: pystac items of one collection (changed in place where a field is added).
        spec: The collection and the assets read from it.

    Returns:
        ``items``.

    Raises:
        SourceError: an item's grid has no CRS (none of ``proj:epsg``, ``proj:code``,
            ``proj:wkt2``, ``proj:projjson``) or a CRS that cannot be parsed; names the items.
    """
    from pyproj.exceptions import CRSError

    missing: list[str] = []
    unparsable: list[str] = []
    for item in items:
        for _, asset_key in spec.assets:
            asset = item.assets[asset_key]
            own = asset.extra_fields
            if not any(k in own or k in item.properties for k in GRID_FIELDS):
                continue
            found = _crs_of(own)
            holder = own
            if found is None:
                found, holder = _crs_of(item.properties), item.properties
            if found is None:
                missing.append(f"{item.id}/{asset_key}")
                continue
            try:
                crs = _parse(*found)
            except (CRSError, ValueError, TypeError) as exc:
                unparsable.append(f"{item.id}/{asset_key} {found[0]}={str(found[1])[:60]!r} "
                                  f"({type(exc).__name__})")
                continue
            _normalise(holder, found[0], crs)
    if missing:
        raise SourceError(
            f"{len(missing)} asset(s) of {spec.id!r} give a grid (proj:shape/proj:transform) "
            f"without a CRS: {_listed(missing)}; none of {', '.join(CRS_FIELDS)} is set, so "
            "their pixels cannot be placed. Use a catalogue or mirror whose items carry "
            "proj:code or proj:epsg (--catalogue, stac_url), or ask the provider to add it.")
    if unparsable:
        raise SourceError(
            f"{len(unparsable)} asset(s) of {spec.id!r} give a CRS that cannot be parsed: "
            f"{_listed(unparsable)}. Use a catalogue or mirror with valid projection fields "
            "(--catalogue, stac_url), or ask the provider to fix them.")
    return list(items)


def _listed(names: Sequence[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
