"""One gate summary of a run, shared by the report, the viewer and the API.

A run's gates are its input and mask gates (the screen), its stage gates (counts the blocks
left in the screen) and its result gates, each counted once. Gates that caught a fault the
synthetic demo planted on purpose are marked ``planted`` with a note
(:mod:`fusecube.sources.synthetic.planted`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from fusecube.quality.results import PeriodScreen, stage_results

STATUSES = ("pass", "warn", "fail", "skip")
_KEYS = ("gate", "stage", "status", "message", "periods")


def run_gate_list(screen: PeriodScreen | dict, result_gates: list[dict] | None = None) -> list[dict]:
    """Every gate of a run once: input and mask gates, stage gates, then result gates."""
    data = screen.__dict__ if isinstance(screen, PeriodScreen) else (screen or {})
    gates = list(data.get("gates") or [])
    gates += [g.to_dict() for g in stage_results(data)]
    gates += list(result_gates or [])
    return [{k: g.get(k) for k in _KEYS} for g in gates]


def _is_planted(gate: dict, planted: list[dict]) -> dict | None:
    for fault in planted:
        if gate["gate"] == fault["gate"] and gate["status"] != "pass" and (
                set(gate.get("periods") or []) <= set(fault.get("periods") or [])):
            return fault
    return None


def gate_summary(screen: PeriodScreen | dict, result_gates: list[dict] | None = None,
                 planted: list[dict] | None = None) -> dict:
    """Counts and list of a run's gates, planted faults marked.

    Args:
        screen: The run's screen (``PeriodScreen`` or its ``run.json`` dict).
        result_gates: The result gates (``run.json``'s ``result_gates``).
        planted: Faults the synthetic scene planted
            (:func:`~fusecube.sources.synthetic.planted.planted_faults`).

    Returns:
        ``{"total", "counts", "planted", "text", "gates"}``; each gate has ``planted`` (bool)
        and, when planted, ``note``.
    """
    gates = []
    for gate in run_gate_list(screen, result_gates):
        fault = _is_planted(gate, planted or [])
        gates.append({**gate, "planted": fault is not None,
                      **({"note": fault["note"]} if fault else {})})
    counts = {s: sum(g["status"] == s for g in gates) for s in STATUSES}
    n_planted = sum(g["planted"] for g in gates)
    text = f"{len(gates)} gates: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if n_planted:
        text += f" ({n_planted} planted by the synthetic demo)"
    return {"total": len(gates), "counts": counts, "planted": n_planted, "text": text,
            "gates": gates}


@lru_cache(maxsize=64)
def _cached(path: str, mtime_ns: int) -> dict:
    from fusecube.sources.synthetic.planted import planted_in_store

    summary = json.loads(Path(path).read_text())
    return gate_summary(summary.get("screen") or {}, summary.get("result_gates"),
                        planted_in_store(summary.get("truth")))


def run_gate_summary(out: str | Path) -> dict:
    """:func:`gate_summary` of a finished run folder, from its ``run.json``.

    Returns:
        The summary; with no ``run.json`` yet (a run not finished), zero gates.
    """
    path = Path(out) / "run.json"
    try:
        return _cached(str(path), path.stat().st_mtime_ns)
    except (OSError, ValueError):
        return gate_summary({})


def screened_ndvi_periods(screen: PeriodScreen | dict | None) -> list[int]:
    """Periods whose NDVI the screen treated as missing (all-zero or constant composites).

    Their values are not observations: reports and the viewer never draw them as such.
    """
    data = screen.__dict__ if isinstance(screen, PeriodScreen) else (screen or {})
    constant = (data.get("constant_periods") or {}).get("ndvi") or []
    return sorted({int(i) for i in [*(data.get("zero_periods") or []), *constant]})


def run_screened_periods(out: str | Path) -> list[int]:
    """:func:`screened_ndvi_periods` of a finished run folder, from its ``run.json``."""
    try:
        summary = json.loads((Path(out) / "run.json").read_text())
    except (OSError, ValueError):
        return []
    return screened_ndvi_periods(summary.get("screen"))
