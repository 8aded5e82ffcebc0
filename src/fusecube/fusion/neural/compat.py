"""Does a saved fusion model fit this fusecube, and does a cube fit the model?

A model file records the feature channels its network reads (radar, calendar, optical) and the
time grid it was trained on. :func:`check_state` compares a file with the features this release
builds before any weight is loaded, :func:`load_weights` turns a weight-shape mismatch into a
sentence, and :func:`check_input` compares a cube with the model before it is filled: the
variables the features need, the number of time steps (``mlp`` networks) and the period
length. Each refusal spells out what differs and how to fix it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from fusecube.cube import NDVI, TIME, VH, VV
from fusecube.errors import CubeSchemaError, FusionModelError
from fusecube.fusion.neural.features import (
    CALENDAR_FEATURES,
    OPTICAL_FEATURES,
    RADAR_FEATURES,
    WIDE_FEATURES,
)
from fusecube.grid.periods import to_days

#: Relative difference of period lengths (model vs cube) above which a model is refused.
STEP_TOLERANCE = 0.25
RETRAIN = "train a model on this cube with `fusecube fuse train CUBE --out model.pt`"


def training_periods(times: np.ndarray) -> dict:
    """What a model records about the time grid it was trained on (JSON-able)."""
    days = to_days(np.asarray(times))
    step = float(np.median(np.diff(days))) if days.size > 1 else 0.0
    return {"n_times": int(days.size), "step_days": round(step, 3),
            "first": str(np.datetime_as_string(np.asarray(times)[0], unit="D")) if days.size else "",
            "last": str(np.datetime_as_string(np.asarray(times)[-1], unit="D")) if days.size else ""}


def _differs(kind: str, recorded: Sequence[str], built: Sequence[str]) -> str:
    lacking = [n for n in built if n not in recorded]
    extra = [n for n in recorded if n not in built]
    notes = [f"lacks {lacking}"] if lacking else []
    if extra:
        notes.append(f"has {extra}, which this fusecube does not build")
    if not notes:
        notes.append("has them in another order")
    return (f"{kind} features {list(recorded)} where this fusecube builds {list(built)} "
            f"(the model {' and '.join(notes)})")


def check_state(state: Mapping, path: Path) -> None:
    """Refuse a model file whose feature set differs from the one this release builds.

    Raises:
        FusionModelError: Naming the differing features and the fix.
    """
    problems = []
    for kind, built in (("calendar", CALENDAR_FEATURES), ("optical", OPTICAL_FEATURES)):
        recorded = list(state.get(f"{kind}_features", built))
        if recorded != list(built):
            problems.append(_differs(kind, recorded, built))
    radar = list(state.get("radar_features") or [])
    known = (*RADAR_FEATURES, *WIDE_FEATURES)
    unknown = [n for n in radar if n not in known]
    if unknown:
        problems.append(f"radar features {unknown} are unknown here (known: {list(known)})")
    if problems:
        raise FusionModelError(
            f"Fusion model {path} was trained on another feature set: it records "
            + "; ".join(problems) + f". It was written by another fusecube release; {RETRAIN}.")


def load_weights(net, state_dict: Mapping, path: Path, radar_features: Sequence[str]) -> None:
    """``net.load_state_dict`` with a shape mismatch refused in words.

    Raises:
        FusionModelError: The weights do not fit the network the file's metadata describes.
    """
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in state_dict.items()}
    differ = [f"{k}: file {given[k]}, network {expected[k]}" for k in expected
              if k in given and given[k] != expected[k]]
    missing = [k for k in expected if k not in given]
    extra = [k for k in given if k not in expected]
    if differ or missing or extra:
        channels = len(radar_features) + len(CALENDAR_FEATURES) + len(OPTICAL_FEATURES)
        details = "; ".join(
            [*differ[:3], *([f"missing weights {missing[:3]}"] if missing else []),
             *([f"unexpected weights {extra[:3]}"] if extra else [])])
        raise FusionModelError(
            f"Fusion model {path}: its weights do not fit the network its features describe "
            f"({len(radar_features)} radar + {len(CALENDAR_FEATURES)} calendar + "
            f"{len(OPTICAL_FEATURES)} optical = {channels} input channels per step): {details}. "
            f"The file was altered or written for another feature set; {RETRAIN}.")
    net.load_state_dict(state_dict)


def check_input(cube: xr.Dataset, *, radar_features: Sequence[str], arch: Mapping,
                periods: Mapping | None, name: str = "the fusion model") -> None:
    """Refuse a cube the model cannot fill: missing variables, other time steps or periods.

    Args:
        cube: The cube (or block) to fill.
        radar_features: The model's radar channels (all built from ``vv`` and ``vh``).
        arch: The network's architecture options (``n_times`` for ``mlp``).
        periods: :func:`training_periods` of the model (None for files without it).
        name: How to call the model in messages (its file).

    Raises:
        CubeSchemaError: The cube lacks a variable the model reads.
        FusionModelError: Naming what differs between model and cube, and the fix.
    """
    needed = [VV, VH, NDVI] if radar_features else [NDVI]
    missing = [v for v in needed if v not in cube.data_vars]
    if missing:
        raise CubeSchemaError(
            f"{name} reads {list(radar_features)} from vv and vh, and ndvi; the cube lacks "
            f"{missing} (it has {sorted(cube.data_vars)}). Add the Sentinel-1 bands or use a "
            "baseline gap-fill (gapfill: linear).")
    n_times = cube.sizes.get(TIME, 0)
    wanted = arch.get("n_times")
    if wanted and wanted != n_times:
        raise FusionModelError(
            f"{name} is an mlp network tied to {wanted} time steps; the cube has {n_times}. "
            "Give it a cube on the model's periods, or train a conv/gru model (any series "
            f"length, the default --arch conv): {RETRAIN}.")
    step = float((periods or {}).get("step_days") or 0.0)
    if step > 0 and n_times > 1:
        cube_step = float(np.median(np.diff(to_days(cube[TIME].values))))
        if abs(cube_step - step) > STEP_TOLERANCE * step:
            raise FusionModelError(
                f"{name} was trained on {step:g}-day periods ({periods.get('first')} .. "
                f"{periods.get('last')}); this cube has {cube_step:g}-day periods. Its calendar "
                "and gap-length features would mean other things: composite the cube to "
                f"{step:g}-day periods, or {RETRAIN}.")
