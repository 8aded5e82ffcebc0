"""What a STAC fetch reads and how: collection specs, known catalogues, fetch options and hooks.

A :class:`CollectionSpec` says which asset plays which role (``red``/``nir``/``scl`` for
Sentinel-2, ``vv``/``vh`` for Sentinel-1) and in which units; :data:`CATALOGUES` names the
public APIs fusecube knows; :class:`StacOptions` groups the options of a fetch by concern.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from fusecube.errors import ConfigError
from fusecube.sources.retry import RetryPolicy

Sensor = Literal["s2", "s1"]


Progress = Callable[[str, int, int], None]


SignURL = Callable[[str], str]


S2_ROLES = ("red", "nir", "scl")


S1_ROLES = ("vv", "vh")


#: SCL classes kept as clear: vegetation, bare soil, water, snow. Dropped: no data (0),
#: saturated (1), dark/topographic shadow (2), cloud shadow (3), unclassified (7),
#: cloud medium/high probability (8, 9), thin cirrus (10).
DEFAULT_VALID_SCL = (4, 5, 6, 11)


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
    max_pages: int = 2000
    """Most result pages one search may follow (``next`` links) before it stops with an error."""
    max_items: int = 50000
    """Most items one search may return before it stops with an error."""
    max_search_s: float = 900.0
    """Most seconds one search (all its pages and retries) may take before it stops with an
    error."""


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
