"""S1/S2 alignment, shared-grid and paddy-coverage gates."""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from fusecube.cube import (
    TIME,
)
from fusecube.quality.results import GateResult, GateThresholds
from fusecube.units import to_db


def _standardise(series: np.ndarray) -> np.ndarray:
    """Per-pixel z-score over time of a ``(time, y, x)`` array (NaN kept, constant → NaN)."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        mean = np.nanmean(series, axis=0)
        std = np.nanstd(series, axis=0)
        return (series - mean) / np.where(std > 0, std, np.nan)


def shift_correlation(ndvi: np.ndarray, vh: np.ndarray,
                      max_shift: int) -> dict[tuple[int, int], float]:
    """Mean per-pixel temporal correlation of NDVI with VH shifted by (dy, dx) pixels.

    Args:
        ndvi: ``(time, y, x)`` NDVI (NaN where not observed).
        vh: ``(time, y, x)`` VH backscatter, linear.
        max_shift: Largest shift searched along each axis.

    Returns:
        ``{(dy, dx): correlation}`` for every shift with enough overlapping pixels.
    """
    z_ndvi, z_vh = _standardise(ndvi), _standardise(to_db(vh))
    ny, nx = z_ndvi.shape[1:]
    out = {}
    for dy in range(-max_shift, max_shift + 1):  # a few dozen shifts, each vectorised
        for dx in range(-max_shift, max_shift + 1):
            a = z_ndvi[:, max(dy, 0):ny + min(dy, 0), max(dx, 0):nx + min(dx, 0)]
            b = z_vh[:, max(-dy, 0):ny + min(-dy, 0), max(-dx, 0):nx + min(-dx, 0)]
            product = a * b
            n = np.isfinite(product).sum(axis=0)
            usable = n >= 5
            if usable.sum() < 16:
                continue
            r = np.nansum(product, axis=0)[usable] / n[usable]
            out[(dy, dx)] = float(r.mean())
    return out


def alignment_gate(ndvi: np.ndarray, vh: np.ndarray,
                   thresholds: GateThresholds = GateThresholds()) -> GateResult:
    """S1/S2 co-registration: NDVI and VH time series must correlate best at the same pixel.

    VH tracks the canopy, and neighbouring fields follow different calendars, so the mean
    per-pixel temporal correlation of NDVI with VH peaks at shift (0, 0) when the grids are
    aligned and moves with any offset between the S1 and S2 grids.

    Args:
        ndvi: ``(time, y, x)`` NDVI window (screened periods NaN).
        vh: ``(time, y, x)`` VH window, linear.
        thresholds: Gate thresholds (``max_alignment_shift``, ``alignment_margin``).
    """
    corr = shift_correlation(ndvi, vh, thresholds.max_alignment_shift)
    if (0, 0) not in corr:
        return GateResult("s1_s2_alignment", "input", "skip",
                          message="too few pixels with both NDVI and VH to test the alignment.")
    zero = corr[(0, 0)]
    best = max(corr, key=corr.get)
    gain = corr[best] - zero
    if best != (0, 0) and gain > thresholds.alignment_margin:
        return GateResult(
            "s1_s2_alignment", "input", "fail", value=float(gain),
            threshold=thresholds.alignment_margin,
            message=f"NDVI at (y + dy, x + dx) follows VH at (y, x) best for (dy, dx) = {best} "
                    f"(r {corr[best]:.3f} vs {zero:.3f} unshifted): the S1 and S2 grids are "
                    "not aligned.",
            fix="load S1 and S2 onto one GeoBox (same CRS, transform and shape), e.g. with "
                "fusecube.load(..., like=...); check pixel-corner vs pixel-centre coordinates.",
            action="reported: gap-filling from S1 would use the wrong pixels")
    return GateResult("s1_s2_alignment", "input", "pass", value=float(max(gain, 0.0)),
                      threshold=thresholds.alignment_margin,
                      message=f"NDVI and VH correlate best at the same pixel (r {zero:.3f}).")


def grids_gate(s1: xr.Dataset | xr.DataArray, s2: xr.Dataset | xr.DataArray, *,
               strict: bool = False) -> GateResult:
    """S1 and S2 loaded separately must share one grid (CRS, pixel size, origin, shape) and times.

    Args:
        s1: The radar data (``vv``/``vh``) on its grid.
        s2: The optical data (``ndvi``) on its grid.
        strict: Raise :class:`GateFailed` when the grids differ.

    Returns:
        The gate result; its message says what differs (CRS, resolution, offset in pixels,
        shape, time steps).
    """
    a, b = s1.odc.geobox, s2.odc.geobox
    problems = []
    if a.crs != b.crs:
        problems.append(f"CRS {a.crs} vs {b.crs}")
    else:
        ra, rb = (a.affine.a, a.affine.e), (b.affine.a, b.affine.e)
        if not np.allclose(ra, rb, rtol=1e-9):
            problems.append(f"pixel size {ra} vs {rb}")
        else:
            dx = (b.affine.c - a.affine.c) / a.affine.a
            dy = (b.affine.f - a.affine.f) / a.affine.e
            if abs(dx) > 1e-6 or abs(dy) > 1e-6:
                problems.append(f"origin offset by (dy, dx) = ({dy + 0.0:.3g}, {dx + 0.0:.3g}) "
                                "pixels")  # + 0.0: no "-0"
        if a.shape != b.shape:
            problems.append(f"shape {tuple(a.shape)} vs {tuple(b.shape)}")
    if TIME in s1.coords and TIME in s2.coords:
        t1, t2 = np.asarray(s1[TIME].values), np.asarray(s2[TIME].values)
        if t1.shape != t2.shape or not np.array_equal(t1, t2):
            problems.append(f"time axes differ ({t1.size} vs {t2.size} periods)")
    if not problems:
        return GateResult("s1_s2_grids", "input", "pass", value=0.0, threshold=0.0,
                          message="S1 and S2 share one grid and one time axis.")
    result = GateResult(
        "s1_s2_grids", "input", "fail", value=float(len(problems)), threshold=0.0,
        message="S1 and S2 grids differ: " + "; ".join(problems) + ".",
        fix="load both onto one GeoBox and one set of periods (fusecube.load(..., like=...), "
            "or s2.odc.reproject(s1.odc.geobox, resampling='nearest')).",
        action="none: S1 and S2 cannot be stacked into one cube")
    if strict:
        raise result.error()
    return result


def coverage_gate(mask: np.ndarray | None, thresholds: GateThresholds = GateThresholds(),
                  source: str = "paddy_mask") -> GateResult:
    """Paddy coverage: the mask must cover enough of the area of interest to be meaningful."""
    if mask is None:
        return GateResult("paddy_coverage", "mask", "skip",
                          message="no paddy mask: every pixel is processed.")
    mask = np.asarray(mask)
    pixels = int((mask > 0).sum())
    fraction = pixels / max(mask.size, 1)
    ok = fraction >= thresholds.min_paddy_fraction and pixels >= thresholds.min_paddy_pixels
    text = f"mask {source} covers {pixels} of {mask.size} pixels ({100 * fraction:.2f} %)"
    if ok:
        return GateResult("paddy_coverage", "mask", "pass", value=fraction,
                          threshold=thresholds.min_paddy_fraction, pixels=pixels,
                          message=text + ".")
    return GateResult(
        "paddy_coverage", "mask", "fail", value=fraction, threshold=thresholds.min_paddy_fraction,
        pixels=pixels,
        message=text + f", below {100 * thresholds.min_paddy_fraction:.2f} % or "
                       f"{thresholds.min_paddy_pixels} pixels.",
        fix="check that the mask is the paddy area of this AOI (and its CRS), or use --mask none.",
        action="reported: phenology runs on the few paddy pixels there are")


