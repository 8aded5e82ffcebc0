"""The run's validated gap-fill choice: which candidates, scored how, and the config it yields."""

from __future__ import annotations

import xarray as xr

from fusecube.config import RunConfig
from fusecube.cube import VH, VV
from fusecube.evaluate.choice import GapfillChoice, decide, fusion_score
from fusecube.evaluate.selection import BASELINES, SelectionConfig, score_candidates
from fusecube.runner.inputs import RunInputs
from fusecube.runner.pipeline import gapfill_config


def candidates_for(config: RunConfig, cube: xr.Dataset) -> tuple[list[str], str]:
    """The methods scored here (fusion is scored by its own validation) and a note on radar."""
    wanted = list(config.gapfill_candidates)
    if config.gapfill not in ("auto", *wanted):
        wanted.append(config.gapfill)
    radar = VV in cube and VH in cube
    note = "" if radar else "the cube has no S1 VV/VH: radar methods cannot be scored"
    scored = [m for m in dict.fromkeys([*BASELINES, *wanted])
              if m in BASELINES or (m == "ridge" and radar)]
    return scored, note


def needs_model(config: RunConfig) -> bool:
    """Whether the run must train or load the neural model (asked for, or a candidate)."""
    return config.gapfill == "fusion" or (config.gapfill == "auto"
                                          and "fusion" in config.gapfill_candidates)


def choose_gapfill(config: RunConfig, screened: xr.Dataset, inputs: RunInputs,
                   model=None, selection: SelectionConfig | None = None) -> GapfillChoice:
    """Score the candidates on held-out data of ``screened`` and pick the method the run uses.

    Args:
        config: The run configuration (``gapfill``, ``gapfill_candidates``, λ, ridge options).
        screened: The cube after the input screen (lazy; only validation windows are read).
        inputs: The run's resolved inputs (the mask gives per-stratum scores).
        model: The trained neural model when fusion is a candidate (its own validation).
        selection: Validation options.

    Returns:
        The choice: every score with its interval, the method used and the reason.
    """
    methods, note = candidates_for(config, screened)
    gap = gapfill_config(config.model_copy(update={"gapfill": "ridge"}))  # its lam and ridge options
    scores, hidden = score_candidates(screened, methods, mask=inputs.mask, lam=gap.lam,
                                      ridge=gap.ridge, config=selection)
    if model is not None:
        fused = fusion_score(getattr(model, "metrics_", {}) or {})
        if fused is not None:
            scores.append(fused)
    if note:
        hidden["note"] = note
    return decide(config.gapfill, scores, selection, hidden, enforce=config.gapfill_enforce)
