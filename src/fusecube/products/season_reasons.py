"""Why season slots are empty, for people: counts per reason and a map of the main reason.

``season_reason`` (written by :mod:`fusecube.stages.season_extras`) holds bit flags per pixel
and season slot, 0 where the slot holds a season. Here they become a table (paddy pixels per
slot: how many have a season, and how many empty slots carry each reason; a slot may carry
several) and one categorical code per pixel and slot, the *main* reason, for the report's map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from fusecube.cube import PADDY_MASK, SEASON
from fusecube.kernels.season_reasons import (
    AMPLITUDE_BELOW_THRESHOLD,
    CUT_BY_SERIES_EDGE,
    IMPLAUSIBLE_LENGTH_OR_PEAK,
    NOT_PADDY,
    REASON_FLAGS,
    TOO_FEW_OBSERVATIONS,
)
from fusecube.storage.atomic import atomic_path

#: The main reason of an empty slot is the first of these it carries: a missing input
#: explains more than what the detection made of the curve.
PRIORITY = (TOO_FEW_OBSERVATIONS, CUT_BY_SERIES_EDGE, IMPLAUSIBLE_LENGTH_OR_PEAK,
            AMPLITUDE_BELOW_THRESHOLD)
#: Categories of :func:`main_reason`, in code order: 0 season found, 1.. the PRIORITY reasons,
#: then not paddy.
CATEGORIES = ("season found", *(name.replace("_", " ") for flag in PRIORITY
                                for name, bit in REASON_FLAGS.items() if bit == flag),
              "not paddy")
#: Map colours of the categories (season found green, reasons warm to grey, not paddy white).
COLORS = ("#4caf50", "#d73027", "#fc8d59", "#fee090", "#91bfdb", "#ffffff")


def main_reason(reason: np.ndarray) -> np.ndarray:
    """Category code (index into :data:`CATEGORIES`) of each ``season_reason`` value."""
    reason = np.asarray(reason)
    code = np.full(reason.shape, len(CATEGORIES) - 1, np.int8)  # not paddy unless found below
    for i, flag in reversed(list(enumerate(PRIORITY, start=1))):
        code = np.where((reason & flag) != 0, np.int8(i), code)
    code = np.where(reason == 0, np.int8(0), code)
    return np.where((reason & NOT_PADDY) != 0, np.int8(len(CATEGORIES) - 1), code)


def reason_rows(ds: xr.Dataset) -> list[dict]:
    """Per season slot: paddy pixels, those with a season, and empty slots per reason.

    Empty slots with no reason would break the rule "no NaN without a reason"; they are
    counted as ``unexplained`` (expected 0).
    """
    if "season_reason" not in ds:
        return []
    # the run's mask where it has one: a run over every pixel flags none as not paddy
    mask = (np.asarray(ds[PADDY_MASK].values) > 0) if PADDY_MASK in ds else True
    rows = []
    for i in range(ds.sizes[SEASON]):
        reason = np.asarray(ds["season_reason"].isel({SEASON: i}).values)
        paddy = mask & ((reason & NOT_PADDY) == 0)
        row = {"slot": _slot_label(ds, i), "paddy": int(paddy.sum()),
               "with_season": int((paddy & (reason == 0)).sum())}
        for name, bit in REASON_FLAGS.items():
            if bit != NOT_PADDY:
                row[name] = int((paddy & ((reason & bit) != 0)).sum())
        if "pos_doy" in ds:
            empty = ~np.isfinite(np.asarray(ds["pos_doy"].isel({SEASON: i}).values, float))
            row["unexplained"] = int((paddy & empty & (reason == 0)).sum())
        rows.append(row)
    return rows


def _slot_label(ds: xr.Dataset, i: int) -> str:
    if "season_label" in ds:
        return str(ds["season_label"].values[i])
    return f"season{i + 1}"


def write_reason_csv(rows: list[dict], path: str | Path) -> str:
    """The table of :func:`reason_rows` as CSV (one row per season slot), written atomically.

    Returns ``""`` when there is nothing to write.
    """
    if not rows:
        return ""
    with atomic_path(path) as staged:
        pd.DataFrame(rows).to_csv(staged, index=False)
    return str(path)
