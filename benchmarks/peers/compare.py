"""Peer comparison driver (``make bench-peers``): fusecube vs FuseTS, TIMESAT, whittaker-eilers.

Runs in the main virtualenv. Exports one synthetic crop of paddy pixels, runs each tool in its
own virtualenv on the same input (one thread each), scores everything against the scene's
truth and writes ``benchmarks/results/peers.json`` and ``benchmarks/results/peers.md``.

Scoring, the same for every tool:
- speed: ms per pixel for smoothing and for phenology (TIMESAT does both in one call: only the
  total), each as a ratio to fusecube measured in the same run;
- seasons whose peak lies inside the series are matched to true seasons by peak date
  (within 40 days); SOS/EOS MAE in days over matched seasons;
- season count: seasons per agricultural year (Nov-Oct, at most 3), right in every year;
- impossible values: share of pixels with a season whose peak NDVI is outside [-1, 1], whose
  length is <= 0 or > 365 days, or whose SOS/POS/EOS are out of order.
FuseTS reports one season per series as days of year: each is placed in the calendar year
that puts its peak nearest a true peak (the benefit of the doubt), SOS before and EOS after it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

from fusecube.evaluate.accuracy import match_seasons
from fusecube.stages.phenology import assign_to_years

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TOOLS = ("fusecube", "fusecube_gcv", "fusets", "timesat", "whittaker_eilers")
LABELS = {"fusecube": "fusecube (fixed λ)", "fusecube_gcv": "fusecube (GCV λ per pixel)",
          "fusets": "FuseTS 2.0.1", "timesat": "TIMESAT 4.4.1", "whittaker_eilers": "whittaker-eilers 0.2.0"}
MATCH_DAYS = 40.0


def single_thread_env() -> dict[str, str]:
    """This process's environment with every BLAS/OpenMP pool held to one thread."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def run_logged(cmd: list[str], log: Path) -> int:
    """Run a peer runner single-threaded from the repository root, its output to ``log``."""
    with log.open("w") as out:
        return subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=single_thread_env(),
                               cwd=ROOT)


def run_tools(work: Path, lam: float) -> None:
    """Run every runner; a missing peer virtualenv becomes a 'skipped' report."""
    main_py = sys.executable
    run_logged([main_py, str(HERE / "run_fusecube.py"), str(work)], work / "fusecube.log")
    peers = {"fusets": (ROOT / ".venv-peers-fusets", ["run_fusets.py"], ("fusets",)),
             "timesat": (ROOT / ".venv-peers-timesat", ["run_timesat.py", str(lam)],
                         ("timesat", "whittaker_eilers"))}
    for name, (venv, script, outputs) in peers.items():
        python = venv / "bin" / "python"
        for tool in outputs:
            (work / f"{tool}.json").unlink(missing_ok=True)
        if not python.exists():
            reason = (f"virtualenv {venv.name} missing: run benchmarks/peers/setup_venvs.sh "
                      "(make bench-peers does)")
        else:
            code = run_logged([str(python), str(HERE / script[0]), str(work), *script[1:]],
                        work / f"{name}.log")
            reason = f"runner exited with code {code}; see {work / (name + '.log')}"
        for tool in outputs:
            if not (work / f"{tool}.json").exists():
                (work / f"{tool}.json").write_text(json.dumps({"skipped": reason}))


def _fusets_seasons(res, kind: str, data) -> dict[str, np.ndarray]:
    """FuseTS day-of-year metrics → dates, peak placed nearest a true peak."""
    days = data["days"]
    years = np.unique(data["dates"].astype("datetime64[Y]")).astype("datetime64[D]").astype(float)
    jan1 = np.concatenate([years[:1] - 365.0, years, years[-1:] + 365.0])  # one year either side

    def candidates(doy):
        return jan1[None, :] + doy[:, None] - 1.0  # (N, Y)

    pos_c = candidates(res[f"{kind}__pos_times"])
    pos_c = np.where((pos_c >= days[0]) & (pos_c <= days[-1]), pos_c, np.nan)
    true_pos = data["true_pos"]
    dist = np.nanmin(np.abs(pos_c[:, :, None] - true_pos[:, None, :]), axis=2, initial=np.inf)
    dist = np.where(np.isfinite(pos_c), dist, np.inf)
    pick = np.argmin(dist, axis=1)
    rows = np.arange(len(pick))
    pos = np.where(np.isfinite(dist[rows, pick]), pos_c[rows, pick], np.nan)
    sos_c, eos_c = candidates(res[f"{kind}__sos_times"]), candidates(res[f"{kind}__eos_times"])
    sos = np.nanmax(np.where(sos_c <= pos[:, None], sos_c, -np.inf), axis=1)
    eos = np.nanmin(np.where(eos_c >= pos[:, None], eos_c, np.inf), axis=1)
    sos = np.where(np.isfinite(sos), sos, np.nan)
    eos = np.where(np.isfinite(eos), eos, np.nan)
    return {"sos": sos[:, None], "pos": pos[:, None], "eos": eos[:, None],
            "peak_value": res[f"{kind}__pos_values"][:, None],
            "length": res[f"{kind}__los_values"][:, None]}


def score(tool: str, kind: str, res, data) -> dict:
    """Accuracy of one tool on one input against the truth."""
    out: dict = {}
    if f"{kind}__smoothed" in res:
        smoothed = np.asarray(res[f"{kind}__smoothed"], dtype=np.float64)
        err = smoothed - data["true_ndvi"]
        out["smooth_rmse"] = float(np.sqrt(np.nanmean(err**2)))
        out["smooth_nan_share"] = float(np.isnan(smoothed).mean())
    if tool == "fusets":
        seasons = _fusets_seasons(res, kind, data)
    elif f"{kind}__pos" in res:
        seasons = {k: np.asarray(res[f"{kind}__{k}"], dtype=np.float64)
                   for k in ("sos", "pos", "eos", "peak_value", "length")}
    else:
        return out
    days = data["days"]
    inside = np.isfinite(seasons["pos"]) & (seasons["pos"] >= days[0]) & (seasons["pos"] <= days[-1])
    seasons = {k: np.where(inside, v, np.nan) for k, v in seasons.items()}
    pos, sos, eos = seasons["pos"], seasons["sos"], seasons["eos"]
    with np.errstate(invalid="ignore"):
        bad = inside & ((np.abs(seasons["peak_value"]) > 1) | (seasons["length"] <= 0)
                        | (seasons["length"] > 365) | (sos >= pos) | (pos >= eos))
    out["impossible_share"] = float(bad.any(axis=1).mean())
    true_pos = data["true_pos"]
    match = match_seasons(true_pos, pos, MATCH_DAYS)
    has_true = np.isfinite(true_pos)
    matched = (match >= 0) & has_true
    out["detection_rate"] = float(matched.sum() / has_true.sum())
    for key in ("sos", "eos"):
        det = np.take_along_axis(seasons[key], np.maximum(match, 0), axis=1)
        ok = matched & np.isfinite(det) & np.isfinite(data[f"true_{key}"])
        out[f"{key}_mae_days"] = float(np.abs(det - data[f"true_{key}"])[ok].mean()) if ok.any() else None
    metrics = {k: seasons[k] for k in ("sos", "pos", "eos")}
    years = data["years"]
    _, count = assign_to_years(metrics, int(years[0]), len(years), int(data["start_month"]), 3)
    true_count = data["true_count"]
    correct = np.all(count == true_count, axis=1)
    out["count_correct"] = float(correct.mean())
    three = np.nanmax(true_count, axis=1) == 3
    out["count_correct_3season"] = float(correct[three].mean()) if three.any() else None
    out["count_correct_2season"] = float(correct[~three].mean()) if (~three).any() else None
    return out


def speed(report: dict, kind: str) -> dict:
    r = report.get(kind, {})
    n = r.get("pixels")
    if not n:
        return {}
    if "smooth_and_pheno_s" in r:
        return {"total_ms_per_pixel": r["smooth_and_pheno_s"] / n * 1e3}
    s = {"smooth_ms_per_pixel": r["smooth_s"] / n * 1e3}
    if "gapfill_s" in r:
        s["gapfill_ms_per_pixel"] = r["gapfill_s"] / n * 1e3
    if "pheno_s" in r:
        s["pheno_ms_per_pixel"] = r["pheno_s"] / n * 1e3
        s["total_ms_per_pixel"] = (r["smooth_s"] + r["pheno_s"]) / n * 1e3
    return s


def collect(work: Path) -> dict:
    data = np.load(work / "input.npz")
    results: dict = {"scene": str(data["scene"]), "pixels": int(data["cloudy"].shape[0]),
                     "time_steps": int(data["cloudy"].shape[1]),
                     "true_seasons": int(np.isfinite(data["true_pos"]).sum()),
                     "three_season_pixels": int((np.nanmax(data["true_count"], axis=1) == 3).sum()),
                     "threads": 1, "tools": {}}
    for tool in TOOLS:
        report = json.loads((work / f"{tool}.json").read_text())
        entry: dict = {"label": LABELS[tool], **{k: v for k, v in report.items()
                                                 if k not in ("cloudy", "fused")}}
        if "skipped" not in report:
            res = np.load(work / f"{tool}.npz")
            for kind in ("fused", "cloudy"):
                entry[kind] = {**speed(report, kind), **score(tool, kind, res, data)}
        results["tools"][tool] = entry
    base = results["tools"]["fusecube"]
    for entry in results["tools"].values():
        for kind in ("fused", "cloudy"):
            for key in ("smooth_ms_per_pixel", "pheno_ms_per_pixel", "total_ms_per_pixel"):
                if key in entry.get(kind, {}) and key in base.get(kind, {}):
                    ratio_key = key.replace("_ms_per_pixel", "_x_fusecube")
                    entry[kind][ratio_key] = entry[kind][key] / base[kind][key]
    results["environment"] = {"python": platform.python_version(), "machine": platform.machine(),
                              "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    return results


def _fmt(value, spec: str = ".3g", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def markdown(results: dict) -> str:
    lines = [f"# Peer comparison ({results['scene']}, {results['pixels']} paddy pixels x "
             f"{results['time_steps']} steps, {results['three_season_pixels']} with 3 seasons "
             "a year; one thread each)", ""]
    for kind, title in (("fused", "Gap-free input (truth + N(0, 0.02) noise)"),
                        ("cloudy", "Cloudy input (observed NDVI, NaN under clouds, quality weights)")):
        lines += [f"## {title}", "",
                  "| tool | smoothing ms/px (× fusecube) | phenology ms/px (× fusecube) | "
                  "total ms/px (× fusecube) | smoothing RMSE | SOS MAE d | EOS MAE d | "
                  "seasons found | count right (2-season / 3-season) | impossible |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for entry in results["tools"].values():
            if "skipped" in entry:
                lines.append(f"| {entry['label']} | skipped: {entry['skipped']} |||||||||")
                continue
            r = entry.get(kind, {})

            def cell(key, r=r):
                ms, ratio = r.get(f"{key}_ms_per_pixel"), r.get(f"{key}_x_fusecube")
                return "—" if ms is None else f"{ms:.4g} ({ratio:.3g}×)"

            count = ("—" if "count_correct" not in r else
                     f"{r['count_correct']:.1%} ({_fmt(r['count_correct_2season'], '.1%')} / "
                     f"{_fmt(r['count_correct_3season'], '.1%')})")
            lines.append(
                f"| {entry['label']} | {cell('smooth')} | {cell('pheno')} | {cell('total')} | "
                f"{_fmt(r.get('smooth_rmse'), '.4f')} | {_fmt(r.get('sos_mae_days'), '.1f')} | "
                f"{_fmt(r.get('eos_mae_days'), '.1f')} | {_fmt(r.get('detection_rate'), '.1%')} | "
                f"{count} | {_fmt(r.get('impossible_share'), '.1%')} |")
        lines.append("")
    fill = results["tools"]["fusecube"].get("cloudy", {}).get("gapfill_ms_per_pixel")
    lines += [f"On the cloudy input fusecube first gap-fills linearly ({_fmt(fill, '.3g')} ms/px, "
              "its own pipeline stage, not counted above); the peers smooth the NaN-holed "
              "series directly. "
              "TIMESAT smooths and extracts seasons in one call: its time is in the total column. "
              "FuseTS reports one season per series (days of year, placed as described in "
              "benchmarks/peers/compare.py). whittaker-eilers smooths only. "
              f"Times are the best of {os.environ.get('PEERS_REPEAT', '3')} runs (PEERS_REPEAT), "
              "one thread per tool. "
              f"Load average during the run: {results['environment']['load_average']}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=RESULTS / "peers-work")
    parser.add_argument("--size", type=int, default=128, help="synthetic scene edge (pixels)")
    parser.add_argument("--pixels", type=int, default=2000, help="paddy pixels in the crop")
    parser.add_argument("--lam", type=float, default=1.0, help="λ for whittaker-eilers (= fusecube's)")
    parser.add_argument("--score-only", action="store_true", help="rescore the last run")
    args = parser.parse_args()
    if not args.score_only:
        args.work.mkdir(parents=True, exist_ok=True)
        (args.work / ".gitignore").write_text("*\n")  # benchmark scratch: never committed
        code = run_logged([sys.executable, str(HERE / "export_input.py"), "--work", str(args.work),
                     "--size", str(args.size), "--pixels", str(args.pixels)],
                    args.work / "export.log")
        if code != 0:
            raise SystemExit(f"export failed (exit {code}); rerun {HERE / 'export_input.py'} by hand")
        run_tools(args.work, args.lam)
    results = collect(args.work)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "peers.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (RESULTS / "peers.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
