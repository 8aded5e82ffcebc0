"""Backscatter units: linear sigma0 ↔ decibels, with one floor policy for all of fusecube.

Floor policy:

- linear → dB is ``10·log10(max(x, DB_FLOOR))``: a positive value below :data:`DB_FLOOR`
  (1e-5, i.e. -50 dB, below the Sentinel-1 noise floor) is raised to it, so weak returns
  give a finite, bounded dB value;
- a value that is not a finite positive number (NaN, 0, negative, ±inf) carries no
  backscatter to convert and becomes NaN (missing, as everywhere in the cube model);
- dB → linear is ``10**(dB/10)``; NaN stays NaN.

Arithmetic happens in the input's float dtype (float32 stays float32: the results are
bit-identical to the numpy expressions above), integer input is converted to float32.
"""

from __future__ import annotations

import numpy as np

DB_FLOOR = 1e-5
"""Linear sigma0 floor before taking dB (-50 dB)."""


def to_db(linear, *, out: np.ndarray | None = None) -> np.ndarray:
    """Linear backscatter → decibels under the module's floor policy.

    Args:
        linear: Linear sigma0 (any shape).
        out: Array to write the result into (may be ``linear`` itself, for in-place float32
            work on scene-sized arrays).

    Returns:
        dB values (a numpy scalar for a scalar), NaN where ``linear`` is not a finite positive
        number.
    """
    linear = np.asarray(linear)
    if linear.dtype.kind != "f":
        linear = linear.astype(np.float32)
    nonpositive = linear <= 0  # NaN compares False and stays NaN through the ufuncs below
    result = np.asarray(np.maximum(linear, DB_FLOOR, out=out))  # 0-d input: an array, not a scalar
    np.log10(result, out=result)
    np.multiply(result, 10.0, out=result)
    invalid = nonpositive | np.isposinf(result)
    if invalid.any():
        result[invalid] = np.nan
    return result if result.ndim else result[()]


def from_db(db):
    """Decibels → linear backscatter, ``10**(dB/10)``.

    Args:
        db: dB values: a number, a numpy array (integer input gives float32) or an
            ``xarray.DataArray`` (stays lazy).

    Returns:
        Linear sigma0 of the same kind and float dtype.
    """
    if isinstance(db, np.ndarray) and db.dtype.kind != "f":
        db = db.astype(np.float32)
    return 10.0 ** (db / 10.0)
