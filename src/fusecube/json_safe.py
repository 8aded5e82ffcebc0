"""JSON as the standard defines it: NaN and infinities become ``null``; numpy values plain."""

from __future__ import annotations

import json
import math


def jsonable(value):
    """``value`` with NaN and ±inf as ``None`` (JSON has neither), recursively; numpy included."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalar or array
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value, *, indent: int | None = None) -> str:
    """Strict JSON text of ``value`` (:func:`jsonable`; paths, dates and the like as text)."""
    return json.dumps(jsonable(value), indent=indent, default=str, allow_nan=False)
