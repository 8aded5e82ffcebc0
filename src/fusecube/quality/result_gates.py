"""Result gates: a run's results checked after the blocks, before they replace anything.

Input and stage gates judge what goes in; these judge what comes out. A run whose NDVI was
scaled 0-10000, or held no observation at all, passes every block and yields maps with no
rice season anywhere: without these gates it would exit 0 and replace a good earlier output.
The gates, in the order they are judged (the first failure is raised):

- ``ndvi_fused_all_nan``, ``ndvi_smooth_all_nan``: the layer holds no finite value over the
  paddy (over every pixel without a mask);
- ``ndvi_fused_range``, ``ndvi_smooth_range``: NDVI outside [-1, 1];
- ``paddy_without_season``: more than ``max_paddy_without_season`` (default 0.5) of the paddy
  pixels have no season in any year. Without a mask every pixel counts and only a result
  without any season fails (non-rice land has none);
- ``season_dates_all_nan``: no season date map (planting, sos, pos, eos, harvest) holds a date;
- ``season_dates_range``: season dates outside the series (its first period start to one
  time step after its last time).

All statistics come from one lazy pass over the result store. A failure raises
:class:`~fusecube.errors.ResultGateFailed`; with ``RunConfig.result_gates = False`` (CLI
``--allow-empty-results``) failures are recorded as warnings and the results are published.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dask
import numpy as np
import xarray as xr

from fusecube.cube import NDVI_FUSED, NDVI_SMOOTH, PADDY_MASK, TIME, YEAR, read_cube
from fusecube.errors import ResultGateFailed
from fusecube.quality.results import GateResult, GateThresholds

log = logging.getLogger(__name__)

#: The (time, y, x) NDVI layers of a result and their physical range.
NDVI_LAYERS = (NDVI_FUSED, NDVI_SMOOTH)
#: The season date maps of a result.
SEASON_DATES = ("planting", "sos", "pos", "eos", "harvest")
#: Where these gates run, as recorded in a gate result.
STAGE = "result"
RELAX = ("To publish such results anyway, pass --allow-empty-results (result_gates: false in "
         "the config).")


def _statistics(ds: xr.Dataset) -> dict:
    """Counts and extremes of every gated layer, in one lazy pass."""
    paddy = ds[PADDY_MASK] == 1 if PADDY_MASK in ds else None
    lazy: dict = {}
    for name in (n for n in NDVI_LAYERS if n in ds):
        values = ds[name]
        finite = np.isfinite(values) if paddy is None else np.isfinite(values) & paddy
        lazy[f"{name}:finite"] = finite.sum()
        lazy[f"{name}:min"] = values.min(skipna=True)
        lazy[f"{name}:max"] = values.max(skipna=True)
    for name in (n for n in SEASON_DATES if n in ds):
        lazy[f"{name}:count"] = ds[name].notnull().sum()
        # as int64 nanoseconds (NaT is the smallest): dask before 2025.12 cannot reduce NaT dates
        nanos = ds[name].astype("datetime64[ns]").astype("int64")
        lazy[f"{name}:min"] = nanos.where(ds[name].notnull(), np.iinfo(np.int64).max).min()
        lazy[f"{name}:max"] = nanos.max()
    if "season_count" in ds:
        seasons = ds["season_count"].fillna(0)
        seasons = seasons.sum(YEAR) if YEAR in seasons.dims else seasons
        without = seasons == 0
        lazy["pixels"] = paddy.sum() if paddy is not None else without.size
        lazy["without"] = (without & paddy).sum() if paddy is not None else without.sum()
    keys = list(lazy)
    values = dask.compute(*[lazy[k] for k in keys])
    return {k: (v.values if hasattr(v, "values") else v) for k, v in zip(keys, values, strict=True)}


def _series_bounds(ds: xr.Dataset) -> tuple[np.datetime64, np.datetime64]:
    """First period start to one time step after the last time: where a season can lie."""
    times = ds[TIME].values
    first = min(times[0], ds["period_start"].values[0]) if "period_start" in ds.coords else times[0]
    step = np.median(np.diff(times)) if len(times) > 1 else np.timedelta64(0, "ns")
    return first, times[-1] + step


def _day(value) -> str:
    return str(np.datetime_as_string(np.datetime64(value, "D")))


def result_gates(ds: xr.Dataset, thresholds: GateThresholds | None = None) -> list[GateResult]:
    """Judge a run's result dataset; returns every result gate (pass, fail or skip)."""
    thresholds = thresholds or GateThresholds()
    stats = _statistics(ds)
    masked = PADDY_MASK in ds
    where = "paddy pixels" if masked else "pixels"
    results = []
    for name in (n for n in NDVI_LAYERS if n in ds):
        finite = int(stats[f"{name}:finite"])
        results.append(GateResult(
            f"{name}_all_nan", STAGE, "fail" if finite == 0 else "pass", finite, 0,
            f"{name} holds no finite value over the {where}" if finite == 0
            else f"{name}: {finite} finite values over the {where}.",
            fix="check the input NDVI with `fusecube check CUBE`: a scale such as 0-10000, a "
                "nodata value or a series without any observation leaves nothing to fill."))
        low, high = thresholds.ndvi_range
        vmin, vmax = float(stats[f"{name}:min"]), float(stats[f"{name}:max"])
        outside = finite > 0 and (vmin < low or vmax > high)
        results.append(GateResult(
            f"{name}_range", STAGE, "fail" if outside else "pass" if finite else "skip",
            vmax if vmax > high else vmin, high if vmax > high else low,
            f"{name} ranges from {vmin:.4g} to {vmax:.4g}, outside the physical NDVI range "
            f"[{low:g}, {high:g}]" if outside else f"{name} inside [{low:g}, {high:g}].",
            fix="the input NDVI is scaled (e.g. 0-10000): convert it to [-1, 1] (fusecube "
                "import-geotiff --ndvi-scale 0.0001, or divide the variable) and run again."))
    if "without" in stats:
        pixels, without = int(stats["pixels"]), int(stats["without"])
        share = without / pixels if pixels else 0.0
        limit = thresholds.max_paddy_without_season if masked else 1.0
        failed = pixels > 0 and (share > limit if masked else without == pixels)
        results.append(GateResult(
            "paddy_without_season", STAGE, "fail" if failed else "pass" if pixels else "skip",
            round(share, 4), limit,
            f"{without} of {pixels} {where} ({100 * share:.1f} %) have no rice season in any "
            f"year" + (f" (at most {100 * limit:.0f} % allowed)" if masked else ""),
            fix="an NDVI scaled 0-10000, a series without observations or a mask outside the "
                "rice fields give this: check the cube and mask with `fusecube check CUBE "
                "--mask MASK`.", pixels=without))
    dates = [n for n in SEASON_DATES if n in ds]
    if dates:
        count = sum(int(stats[f"{n}:count"]) for n in dates)
        results.append(GateResult(
            "season_dates_all_nan", STAGE, "fail" if count == 0 else "pass", count, 0,
            f"the season date maps ({', '.join(dates)}) hold no date at all" if count == 0
            else f"{count} season dates found.",
            fix="the series shows no rice season anywhere: check the NDVI scale, the time axis "
                "and the mask with `fusecube check CUBE --mask MASK`."))
        first, last = _series_bounds(ds)
        found = [(n, np.datetime64(int(stats[f"{n}:min"]), "ns"), np.datetime64(int(stats[f"{n}:max"]), "ns"))
                 for n in dates if int(stats[f"{n}:count"])]
        bad = [(n, lo, hi) for n, lo, hi in found if lo < first or hi > last]
        results.append(GateResult(
            "season_dates_range", STAGE, "fail" if bad else "pass" if found else "skip",
            len(bad), 0,
            "season dates outside the series " + f"({_day(first)} to {_day(last)}): "
            + ", ".join(f"{n} {_day(lo)} to {_day(hi)}" for n, lo, hi in bad) if bad
            else "every season date lies inside the series.",
            fix="the cube's time axis does not match its data (shifted or mislabelled dates): "
                "check it with `fusecube check CUBE`."))
    return results


def check_results(result: str | Path, thresholds: GateThresholds | None = None, *,
                  enforce: bool = True, keep: str = "") -> list[GateResult]:
    """Run the result gates on a result store; raise for the first failure when enforced.

    Args:
        result: The run's ``result.zarr`` (still in its staging folder).
        thresholds: The run's gate thresholds.
        enforce: Raise on a failure; False turns failures into warnings (logged and returned).
        keep: What the failure leaves untouched, said in the message (e.g. the previous output).

    Returns:
        Every result gate (``GateResult``); failures are ``warn`` when not enforced.

    Raises:
        ResultGateFailed: The first failing gate, with what was found, why and the fix.
    """
    with dask.config.set(scheduler="synchronous"):  # one chunk at a time: bounded memory
        gates = result_gates(read_cube(result, chunks={}), thresholds)
    for gate in gates:
        if gate.status != "fail":
            continue
        if enforce:
            text = (f"Result gate {gate.gate!r} failed for {result}: {gate.message}. "
                    f"Fix: {gate.fix} {keep}{RELAX}")
            raise ResultGateFailed(gate.gate, float(gate.value or 0), float(gate.threshold or 0),
                                   " ".join(text.split()))
        gate.status = "warn"
        gate.action = "published anyway (result gates relaxed)"
        log.warning("result gate %s failed (relaxed): %s", gate.gate, gate.message)
    return gates


def gates_line(gates: list) -> str:
    """A run's result gates in one line, for its ledger row and the CLI's final message.

    ``result gates: 7 passed`` when every gate passed (or was skipped: ``, 1 skipped``);
    relaxed failures are named with what they found: ``result gates: 6 passed; relaxed,
    published anyway: paddy_without_season (0.93 > 0.5)``.

    Args:
        gates: :class:`~fusecube.quality.results.GateResult` values or their dicts (``run.json``).
    """
    rows = [g if isinstance(g, dict) else g.to_dict() for g in gates]
    if not rows:
        return "result gates: not run"
    counts = {s: sum(r["status"] == s for r in rows) for s in ("pass", "skip")}
    line = f"result gates: {counts['pass']} passed" + (
        f", {counts['skip']} skipped" if counts["skip"] else "")
    relaxed = [r for r in rows if r["status"] in ("warn", "fail")]
    if relaxed:
        line += "; relaxed, published anyway: " + ", ".join(
            f"{r['gate']} ({float(r['value']):.3g} vs {float(r['threshold']):.3g})"
            if r.get("value") is not None and r.get("threshold") is not None else r["gate"]
            for r in relaxed)
    return line
