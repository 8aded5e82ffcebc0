"""Two GDAL network functions rasterio does not expose: cache clearing and byte counts.

Both are called through ctypes on the GDAL library rasterio itself loaded (the wheel's
bundled ``libgdal`` or the system one), so they act on the same caches and counters.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import json
import logging
import os
from collections.abc import Iterable
from functools import cache

log = logging.getLogger(__name__)


@cache
def _gdal() -> ctypes.CDLL | None:
    import rasterio

    candidates = sorted(glob.glob(os.path.join(os.path.dirname(rasterio.__file__) + ".libs",
                                               "libgdal*")))
    system = ctypes.util.find_library("gdal")
    for path in [*candidates, *([system] if system else [])]:
        try:
            lib = ctypes.CDLL(path)
            lib.VSICurlPartialClearCache.argtypes = [ctypes.c_char_p]
            lib.VSICurlPartialClearCache.restype = None
            lib.VSINetworkStatsGetAsSerializedJSON.argtypes = [ctypes.c_void_p]
            lib.VSINetworkStatsGetAsSerializedJSON.restype = ctypes.c_void_p
            lib.VSIFree.argtypes = [ctypes.c_void_p]
            return lib
        except (OSError, AttributeError):
            continue
    log.warning("GDAL library not found through ctypes: retries after a failed open may not "
                "reach the server again, and bytes read are not counted")
    return None


def clear_http_cache(url: str) -> bool:
    """Forget what GDAL's ``/vsicurl/`` cached about ``url`` (including "does not exist").

    GDAL remembers a failed open (e.g. after an HTTP 500) as a missing file, and can keep a
    truncated range, so a retry would fail without asking the server again.

    Returns:
        Whether the cache could be cleared.
    """
    lib = _gdal()
    if lib is None:
        return False
    lib.VSICurlPartialClearCache(("/vsicurl/" + url).encode())
    return True


#: GDAL config that turns the byte counters on (pass to rasterio/odc-stac environments).
NETWORK_STATS_CONFIG = {"CPL_VSIL_NETWORK_STATS_ENABLED": "YES"}


def enable_network_stats() -> None:
    """Turn GDAL's byte counters on for this process, before its first network read.

    GDAL decides once, at the first ``/vsicurl/`` access, whether it counts bytes; a remote
    read made without the option (a GeoTIFF stack, a mask) would leave every later fetch
    reporting 0 bytes. Setting the environment when :mod:`fusecube.sources` is imported
    makes the counters independent of what was read first.
    """
    for key, value in NETWORK_STATS_CONFIG.items():
        os.environ.setdefault(key, value)


def downloaded_bytes(urls: Iterable[str]) -> dict[str, int]:
    """Bytes GDAL has downloaded so far (this process) for each URL; 0 when unknown."""
    urls = list(urls)
    lib = _gdal()
    if lib is None:
        return dict.fromkeys(urls, 0)
    pointer = lib.VSINetworkStatsGetAsSerializedJSON(None)
    if not pointer:
        return dict.fromkeys(urls, 0)
    try:
        stats = json.loads(ctypes.string_at(pointer).decode())
    finally:
        lib.VSIFree(pointer)
    files = stats.get("handlers", {}).get("vsicurl", {}).get("files", {})
    return {url: int(files.get("/vsicurl/" + url, {}).get("methods", {}).get("GET", {})
                     .get("downloaded_bytes", 0)) for url in urls}
