"""The rule of the validated gap-fill choice: which candidate a run uses, and why.

:func:`fusecube.evaluate.selection.score_candidates` scores the candidates on hidden values
(and :func:`fusion_score` reads the neural model's own validation); :func:`decide` applies the
rule: a radar method (``ridge``, ``fusion``) is used only when it beats the best optical
baseline in at least ``confidence`` of the bootstrap resamples, a method that validates worse
than the best baseline is never used, and a gain is credited to S1 only when the radar check
says S1 brings it. The outcome is a :class:`GapfillChoice`: every score, the method used, the
reason and the one-line verdict a run prints.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from fusecube.evaluate.selection import BASELINES, RADAR_METHODS, MethodScore, SelectionConfig

log = logging.getLogger(__name__)

MIN_RADAR_GAIN = 2.0
"""% by which ridge must beat itself on shuffled radar for its gain to be credited to S1:
refitting on radar that is noise moves the score by up to about 1.4 % (measured on 48 x 48
synthetic scenes without radar skill)."""


@dataclass
class GapfillChoice:
    """The outcome of the validation: every score, the method used and why."""

    requested: str
    """What the configuration asked for (``auto`` or a method)."""
    chosen: str
    """The method the run uses."""
    baseline: str
    """The best optical baseline on this scene."""
    scores: list[MethodScore]
    reason: str
    """Why ``chosen`` (one sentence)."""
    verdict: str
    """The one-line summary printed by the run."""
    hidden: dict = field(default_factory=dict)
    """What was hidden: windows, dates, values per scheme."""

    def score(self, method: str) -> MethodScore | None:
        """The score of ``method``, if it was a candidate."""
        return next((s for s in self.scores if s.method == method), None)

    @property
    def linear_below(self) -> int:
        """The validated ``linear_below`` of the chosen Whittaker baseline (0 otherwise)."""
        chosen = self.score(self.chosen) if self.chosen == "whittaker" else None
        return int(chosen.params.get("linear_below", 0)) if chosen else 0

    def to_dict(self) -> dict:
        """JSON-able dictionary (``run.json``'s ``gapfill``)."""
        return asdict(self)


def fusion_score(metrics: dict) -> MethodScore | None:
    """The neural model's score from its own validation, or None when it recorded none.

    Its held-out tests (``heldout_dates``, ``heldout_spans``) score the baselines on the same
    hidden values; ``win_share`` is 1 when it beats the best of them on every test, else 0.
    Its radar check (the network fed radar shuffled between pixels) fills ``params`` as
    ridge's does; ``radar_wins`` is 1 when it beats its shuffled self on every test, else 0.
    """
    tests = [metrics[k] for k in ("heldout_dates", "heldout_spans") if k in metrics]
    if not tests:
        return None

    def rmse(test: dict, method: str) -> float:
        return float(test.get(method, {}).get("all", {}).get("rmse", np.nan))

    fused = [rmse(t, "fusion") for t in tests]
    best_base = [min(rmse(t, m) for m in BASELINES) for t in tests]
    wins = all(f < b for f, b in zip(fused, best_base, strict=True))
    shuffled = [rmse(t, "fusion:radar-shuffled") for t in tests]
    params = {}
    if np.isfinite(shuffled).all():  # the radar check (models trained before it have none)
        params = {"rmse_radar_shuffled": float(np.mean(shuffled)),
                  "radar_gain": 100 * (1 - np.mean(fused) / np.mean(shuffled)),
                  "radar_wins": 1.0 if all(f < r for f, r in zip(fused, shuffled, strict=True))
                  else 0.0}
    seen = " (on training pixels: no spatial hold-out was possible)" if metrics.get(
        "pixels_seen") else ""
    return MethodScore(method="fusion", rmse=float(np.mean(fused)), low=None, high=None,
                       n=int(metrics.get("n_pixels", 0)), win_share=1.0 if wins else 0.0,
                       params=params,
                       by_scheme={k: rmse(metrics[k], "fusion") for k in
                                  ("heldout_dates", "heldout_spans") if k in metrics},
                       note="scored by the model's own validation (spatial blocks with a buffer, "
                            f"held-out dates and spans){seen}; its baselines there: "
                            + ", ".join(f"{m} {np.mean([rmse(t, m) for t in tests]):.4f}"
                                        for m in BASELINES))


def _beats(method: MethodScore, base: MethodScore, config: SelectionConfig) -> bool:
    """Lower RMSE than ``base``, in at least ``config.confidence`` of the resamples."""
    share = method.wins.get(base.method, method.win_share)
    return (bool(np.isfinite(method.rmse)) and method.rmse < base.rmse
            and (share is None or share >= config.confidence))


def decide(requested: str, scores: list[MethodScore], config: SelectionConfig | None = None,
           hidden: dict | None = None, *, enforce: bool = True) -> GapfillChoice:
    """Apply the rule to the scores: the method a run uses, and why.

    The baseline is linear interpolation unless Whittaker beats it with the same confidence.
    A baseline asked for by name is used as asked. A radar method (asked for, or under
    ``auto``) is used only when it beat the best baseline in at least ``config.confidence``
    of the resamples; otherwise the best baseline is used and the reason says by how much the
    radar method lost.
    """
    config = config or SelectionConfig()
    by_name = {s.method: s for s in scores}
    if not any(np.isfinite(s.rmse) for s in scores if s.method in BASELINES):
        fallback = requested if requested in BASELINES else "linear"
        reason = ("nothing to validate on: no observed value could be hidden and refilled "
                  f"(too few observations in the validation windows); {fallback} used.")
        return GapfillChoice(requested, fallback, "linear", scores, reason,
                             f"not validated, {fallback} used (too few observations)",
                             hidden or {})
    base = by_name.get("linear") or min((s for s in scores if s.method in BASELINES),
                                        key=lambda s: s.rmse)
    other = by_name.get("whittaker")
    if other is not None and base.method == "linear" and _beats(other, base, config):
        base = other  # smoothing the gaps is better here, and not by luck
    for s in scores:
        if s.method != base.method:
            s.win_share = s.wins.get(base.method, s.win_share)

    def gain(s: MethodScore) -> float:
        return 100 * (1 - s.rmse / base.rmse) if base.rmse > 0 else 0.0

    def earns(s: MethodScore) -> bool:
        return s.method in RADAR_METHODS and _beats(s, base, config)

    radar = [s for s in scores if s.method in RADAR_METHODS]
    if requested in BASELINES:
        chosen = by_name[requested]
        better = [s for s in radar if earns(s)]
        reason = f"{requested} was asked for."
        if better:
            top = min(better, key=lambda s: s.rmse)
            reason += f" {top.method} validated {gain(top):.0f} % better (gapfill: auto would use it)."
        verdict = f"gap-fill {requested} (as configured; held-out RMSE {chosen.rmse:.4f})"
        return GapfillChoice(requested, requested, base.method, scores, reason, verdict,
                             hidden or {})
    pool = [s for s in radar if requested in ("auto", s.method)]
    winners = [s for s in pool if earns(s)]
    if winners:
        top = min(winners, key=lambda s: s.rmse)
        share = "" if top.win_share is None else f", better in {100 * top.win_share:.0f} % of resamples"
        reason = (f"{top.method} validated {gain(top):.0f} % better than {base.method} on held-out "
                  f"data (RMSE {top.rmse:.4f} vs {base.rmse:.4f}{share}).")
        verdict = (f"S1 fusion ({top.method}): {gain(top):.0f} % better than {base.method} on "
                   "held-out data, used")
        check = top.params
        if "radar_gain" in check:  # what S1 itself brings to that gain
            from_radar = (check["radar_gain"] >= MIN_RADAR_GAIN and check["radar_wins"] is not None
                          and check["radar_wins"] >= config.confidence)
            if from_radar:
                reason += (f" S1 brings {check['radar_gain']:.0f} % (with the radar shuffled "
                           f"between pixels {top.method} scores {check['rmse_radar_shuffled']:.4f}).")
                verdict = (f"S1 fusion ({top.method}): {gain(top):.0f} % better than {base.method} "
                           f"on held-out data (S1 brings {check['radar_gain']:.0f} %), used")
            else:
                reason += (f" S1 itself adds nothing: with the radar shuffled between pixels "
                           f"{top.method} scores {check['rmse_radar_shuffled']:.4f}, so the gain "
                           "comes from its model of the optical series.")
                verdict = (f"{top.method}: {gain(top):.0f} % better than {base.method} on held-out "
                           "data, used; the gain is from its optical model, S1 adds nothing")
        return GapfillChoice(requested, top.method, base.method, scores, reason, verdict,
                             hidden or {})
    if pool and not enforce and requested in RADAR_METHODS:
        asked = by_name.get(requested) or pool[0]
        reason = (f"{requested} used as asked (gapfill_enforce: false) although it did not "
                  f"validate better than {base.method} (RMSE {asked.rmse:.4f} vs "
                  f"{base.rmse:.4f}).")
        log.warning(reason)
        return GapfillChoice(requested, requested, base.method, scores, reason,
                             f"{requested} used as asked, not validated better than "
                             f"{base.method}", hidden or {})
    if pool:
        top = min(pool, key=lambda s: s.rmse)
        how = (f"{-gain(top):.0f} % worse than" if top.rmse >= base.rmse
               else f"only {gain(top):.1f} % better than (not in {100 * config.confidence:.0f} % "
                    "of resamples)")
        reason = (f"{top.method} validated {how} {base.method} on held-out data (RMSE "
                  f"{top.rmse:.4f} vs {base.rmse:.4f}): S1 adds nothing here, {base.method} used.")
        if "radar_gain" in top.params:  # S1 may carry some signal, just not enough to win
            reason += (f" (Its radar is worth {top.params['radar_gain']:.0f} % to {top.method}: "
                       f"with it shuffled between pixels it scores "
                       f"{top.params['rmse_radar_shuffled']:.4f}.)")
    else:
        reason = f"no radar method could be scored; {base.method} is the best baseline."
    verdict = f"S1 adds nothing here, {base.method} used ({reason.split(':')[0]})"
    return GapfillChoice(requested, base.method, base.method, scores, reason, verdict,
                         hidden or {})
