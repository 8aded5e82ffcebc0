"""Which pixels were ever observed: no gap-fill answer invents a series where nothing was seen.

A pixel without a single NDVI observation has nothing for a gap-fill to fill *between*: the
optical baselines leave it NaN, and a radar network would answer with a value learnt on pixels
that had optical history (out of its training conditions). Served answers keep such pixels NaN
and say how many there were; a run's radar-only values are shown only when the run's own
validation chose that radar method, and then labelled as radar-only.
"""

from __future__ import annotations

import numpy as np

#: Gap-fill methods that predict NDVI from Sentinel-1 radar (not only from optical history).
RADAR_METHODS: tuple[str, ...] = ("fusion", "ridge")


def observed_pixels(ndvi: np.ndarray) -> np.ndarray:
    """``(Y, X)`` bool: pixels with at least one NDVI observation in ``(T, Y, X)`` ``ndvi``.

    Periods whose observed values are all exactly 0 (a broken composite) are not observations,
    as in the gap-fill methods themselves.
    """
    valid = np.isfinite(ndvi)
    n_valid = valid.sum(axis=(1, 2))
    broken = (n_valid > 1) & ((valid & (ndvi != 0)).sum(axis=(1, 2)) == 0)
    return (valid & ~broken[:, None, None]).any(axis=0)


def unobserved_note(count: int, total: int) -> str:
    """The sentence an answer carries when ``count`` of ``total`` pixels were never observed."""
    if not count:
        return ""
    if count == total:
        what = f"None of the {total} pixels has an NDVI observation; ndvi_fused is null (NaN) everywhere"
    else:
        what = f"{count} of {total} pixels have no NDVI observation; their ndvi_fused is null (NaN)"
    return (f"{what}: fusecube does not make up a series where nothing was observed, and this "
            "server has no validated radar-only method.")
