"""Units and scales of a cube's bands, decided from the values (never from a label).

A band in the wrong unit or scale is not a few bad values to mask: masking would delete the
whole band, and a run would go on with nothing. The range gates of
:mod:`fusecube.quality.input_gates` therefore fail in every mode, not only ``--strict``, when
:func:`backscatter_problem` or :func:`ndvi_problem` finds one. Backscatter units are decided by
the same rule as every reader (:func:`fusecube.sources.bands.backscatter_units`), on the central
window the input gates read anyway; the NDVI scale from the counts of the one data pass.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from fusecube.cube import DIMS, SENTINEL_VALUES
from fusecube.errors import CubeSchemaError
from fusecube.sources.bands import LINEAR_MEDIAN_MAX, backscatter_units

NDVI_SCALED_SHARE = 0.5
"""NDVI with at least this share of its values outside [-1, 1] is stored scaled (x 10000, 0-255)."""
DB_NEGATIVE_SHARE = 0.5
"""Backscatter with at least this share of negative values is dB (the rule of ``backscatter_units``)."""


def backscatter_problem(name: str, window: np.ndarray, n_negative: int,
                        n_usable: int) -> tuple[str, str] | None:
    """``(message, fix)`` when backscatter ``name`` is not linear sigma0, else None.

    Linear sigma0 with a few negative values (noise removal over water) is not a unit problem:
    the range gate masks those values. dB, and values that are neither unit with a median
    outside linear sigma0's (e.g. linear x 10000), are.

    Args:
        name: ``vv`` or ``vh``.
        window: ``(time, y, x)`` values of the central window (sentinels and ±inf ignored).
        n_negative: Negative values in the whole cube (used when the window holds no value).
        n_usable: Finite, non-sentinel values in the whole cube.
    """
    sample = np.asarray(window, dtype=np.float64)
    sample = np.where(np.isfinite(sample) & ~np.isin(sample, SENTINEL_VALUES), sample, np.nan)
    try:
        if np.isfinite(sample).any():
            units = backscatter_units(xr.DataArray(sample, dims=DIMS), name=name, source="the cube")
        else:
            units = "db" if n_usable and n_negative >= DB_NEGATIVE_SHARE * n_usable else "linear"
    except CubeSchemaError as exc:  # neither unit: scaled or uncalibrated, or linear with defects
        finite = sample[np.isfinite(sample)]
        if 0 < float(np.median(finite)) <= LINEAR_MEDIAN_MAX:
            return None  # linear sigma0 with some negative values: the range gate masks them
        return (str(exc), f"divide {name} by its scale (e.g. ds[{name!r}] / 10000 for linear x 10000) "
                          "and write the cube again, or convert the source with fusecube convert.")
    if units == "db":
        share = n_negative / max(n_usable, 1)
        return (f"{100 * share:.0f} % of the {name} values are negative: this looks like dB, fusecube "
                "expects linear sigma0, and masking them would delete the band.",
                f"convert {name} to linear with 10 ** (db / 10) and write the cube again (fusecube "
                "convert does it for a band labelled units='dB').")
    return None


def ndvi_problem(n_out: int, n_usable: int) -> tuple[str, str] | None:
    """``(message, fix)`` when most NDVI values lie outside [-1, 1] (a scaled NDVI), else None."""
    if not n_usable or n_out < NDVI_SCALED_SHARE * n_usable:
        return None
    return (f"{100 * n_out / n_usable:.1f} % of the ndvi values lie outside [-1, 1]: NDVI is stored "
            "scaled (x 10000 or 0-255), and masking them would delete the band.",
            "divide ndvi by its scale (ds['ndvi'] / 10000 for NDVI x 10000) and write the cube again, "
            "or import with the scale: --ndvi-scale 0.0001 (fusecube import-geotiff) or "
            "scale_factor attributes (fusecube convert).")
