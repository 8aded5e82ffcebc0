"""Provenance and uncertainty of every NDVI value: ``ndvi_source`` and ``ndvi_sigma``.

``ndvi_source`` (uint8, CF flag values) says where each value of ``ndvi_fused`` /
``ndvi_smooth`` comes from; ``ndvi_sigma`` (float32) how far a clear-sky observation would
be from ``ndvi_fused`` (one standard deviation), from the run's calibration
(:class:`~fusecube.evaluate.uncertainty.SigmaModel`).

=====  ===============  ==========================================================
value  meaning          when
=====  ===============  ==========================================================
0      none             no value at all (no observation in the whole series)
1      observed         a clear observation, kept as it is
2      s1_fused         filled by a radar method (ridge, fusion) on a date with S1
3      interpolated     filled from the optical series alone (linear, Whittaker, or
                        a radar method bridging a date without S1)
4      smoothed_only    left open by the gap-fill, filled by the smoother
5      screened_out     observed, but removed by the input screen (a broken period
                        or an out-of-range value); the value shown is a fill
=====  ===============  ==========================================================
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from fusecube.cube import DIMS, NDVI, NDVI_FUSED, NDVI_SMOOTH, PADDY_MASK, TIME, VH, VV, X, Y
from fusecube.errors import CubeSchemaError
from fusecube.grid.periods import to_days
from fusecube.kernels.gaps import days_to_observation
from fusecube.kernels.provenance_compiled import provenance_rows

NDVI_SOURCE, NDVI_SIGMA = "ndvi_source", "ndvi_sigma"
SOURCE_FLAGS = ("none", "observed", "s1_fused", "interpolated", "smoothed_only", "screened_out")
"""Meaning of each ``ndvi_source`` value (its index)."""
NONE, OBSERVED, S1_FUSED, INTERPOLATED, SMOOTHED_ONLY, SCREENED_OUT = range(len(SOURCE_FLAGS))
RADAR_METHODS = ("ridge", "fusion")

SOURCE_ATTRS = {
    "long_name": "Provenance of the NDVI value",
    "flag_values": np.arange(len(SOURCE_FLAGS), dtype=np.uint8),
    "flag_meanings": " ".join(SOURCE_FLAGS),
    "valid_range": np.array([0, len(SOURCE_FLAGS) - 1], dtype=np.uint8),
}


def source_codes(raw: np.ndarray, observed: np.ndarray, fused: np.ndarray, smoothed: np.ndarray,
                 radar: np.ndarray | None) -> np.ndarray:
    """``ndvi_source`` codes (uint8) from what the stages knew, all arrays of one shape.

    Args:
        raw: NDVI before the input screen.
        observed: NDVI after the screen (what the gap-fill saw).
        fused: ``ndvi_fused``.
        smoothed: ``ndvi_smooth``.
        radar: Where a radar method had S1 (VV and VH finite), or None for optical methods.
    """
    codes = np.full(raw.shape, NONE, np.uint8)
    codes[np.isfinite(smoothed)] = SMOOTHED_ONLY
    has_fill = np.isfinite(fused)
    codes[has_fill] = INTERPOLATED
    if radar is not None:
        codes[has_fill & radar] = S1_FUSED
    codes[np.isfinite(raw) & ~np.isfinite(observed)] = SCREENED_OUT
    codes[np.isfinite(observed)] = OBSERVED
    return codes


def reference_kernel(raw, observed, fused, smoothed, radar, days, sigma, paddy):
    """``(codes, sigma)`` of ``(N, T)`` series with numpy.

    The readable reference of :func:`fusecube.kernels.provenance_compiled.provenance_rows`.
    """
    codes = source_codes(raw, observed, fused, smoothed, radar)
    if sigma is None:
        return codes, np.full(raw.shape, np.nan, np.float32)
    distance = days_to_observation(np.isfinite(observed), days)
    values = sigma.sigma_of(distance, None if paddy is None else paddy[:, None])
    largest = np.float32(max(sigma.sigma["all"]))
    values = np.where(codes == SMOOTHED_ONLY, largest, values)  # beyond what was validated
    values = np.where(codes == NONE, np.float32(np.nan), values)
    return codes, values.astype(np.float32)


def _kernel(raw, observed, fused, smoothed, *rest, names, days, sigma, radar_method):
    """``(..., T)`` arrays → ``(codes, sigma)``: the kernel under :func:`provenance`."""
    given = dict(zip(names, rest, strict=True))
    shape = raw.shape
    rows = [a.reshape(-1, shape[-1]) for a in (raw, observed, fused, smoothed)]
    radar = None
    if radar_method:
        radar = (np.isfinite(given[VV]) & np.isfinite(given[VH])).reshape(-1, shape[-1])
    paddy = given[PADDY_MASK].reshape(-1) > 0 if PADDY_MASK in given else None
    codes, values = provenance_rows(*rows, radar, days, sigma, paddy)
    return codes.reshape(shape), values.reshape(shape)


def provenance(block: xr.Dataset, *, raw_ndvi: xr.DataArray, method: str,
               sigma=None) -> xr.Dataset:
    """``ndvi_source`` and ``ndvi_sigma`` of a gap-filled, smoothed block.

    Args:
        block: The block after the stages: screened ``ndvi``, ``ndvi_fused``, ``ndvi_smooth``
            (and ``vv``/``vh``, ``paddy_mask`` where present).
        raw_ndvi: The block's NDVI before the input screen.
        method: The gap-fill method the run used.
        sigma: The run's :class:`~fusecube.evaluate.uncertainty.SigmaModel` (None: σ is NaN).

    Returns:
        A dataset with ``ndvi_source`` (uint8) and ``ndvi_sigma`` (float32) on ``(time, y, x)``.
    """
    missing = [n for n in (NDVI, NDVI_FUSED, NDVI_SMOOTH) if n not in block]
    if missing:
        raise CubeSchemaError(f"provenance() needs {missing} in the block; run the gap-fill and "
                              "smoothing stages first.")
    method = str(block[NDVI_FUSED].attrs.get("gapfill_method", method))  # ridge may fall back
    radar_method = method in RADAR_METHODS and VV in block and VH in block
    names = tuple(n for n in ((VV, VH) if radar_method else ()) if n in block)
    names += (PADDY_MASK,) if PADDY_MASK in block else ()
    series = [raw_ndvi, block[NDVI], block[NDVI_FUSED], block[NDVI_SMOOTH],
              *(block[n] for n in names if n != PADDY_MASK)]
    series = [v.transpose(*DIMS) for v in series]
    inputs = [*series, *([block[PADDY_MASK].transpose(Y, X)] if PADDY_MASK in names else [])]
    core = [[TIME]] * len(series) + [[]] * (len(inputs) - len(series))
    codes, sigmas = xr.apply_ufunc(
        _kernel, *inputs, input_core_dims=core, output_core_dims=[[TIME], [TIME]],
        kwargs={"names": names, "days": to_days(block[TIME].values), "sigma": sigma,
                "radar_method": radar_method},
        dask="parallelized", output_dtypes=[np.uint8, np.float32])
    sigma_attrs = {"long_name": "Uncertainty of the gap-filled NDVI (one standard deviation)",
                   "units": "1", "gapfill_method": method,
                   "comment": "truth within ±1.96 sigma for 95 % of held-out values; observed "
                              "values carry the observation noise"}
    if sigma is not None:
        sigma_attrs["calibration"] = sigma.to_json()
    return xr.Dataset({
        NDVI_SOURCE: (DIMS, codes.transpose(*DIMS).data, dict(SOURCE_ATTRS)),
        NDVI_SIGMA: (DIMS, sigmas.transpose(*DIMS).data, sigma_attrs),
    }, coords={TIME: block[TIME], Y: block[Y], X: block[X]})
