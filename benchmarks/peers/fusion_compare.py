"""Fusion comparison driver (``make bench-fusion-peers``): fusecube fusion vs FuseTS MOGPR.

Runs in the main virtualenv. Exports the input (``fusion_export.py``), runs fusecube's fusion
and baselines (``fusion_run_fusecube.py``, main venv) and MOGPR (``fusion_run_mogpr.py``, in
``.venv-peers-fusets`` with GPy), one thread each, scores every method on the same hidden
values and writes ``benchmarks/results/fusion_peers.json`` and ``fusion_peers.md``.

Scores: RMSE, MAE and bias of the reconstruction at the hidden values only (real: the hidden
observations; synthetic: the true NDVI under wet-season clouds, and under every cloud). Cost:
milliseconds per series (a series is one pixel, or one hiding case of the real field), all
measured in the same run, and the ratio MOGPR / method.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))  # the sibling driver, whether run as a script or loaded by path
from compare import run_logged  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PEER_VENV = ROOT / ".venv-peers-fusets"
METHODS = {"fusion": "fusecube fusion (neural)", "guided": "fusecube guided Whittaker (LOO)",
           "ridge": "fusecube ridge fusion", "mogpr": "FuseTS MOGPR",
           "mogpr_periods": "FuseTS MOGPR, time in periods", "whittaker": "Whittaker-only",
           "linear": "linear"}
#: fusecube methods compared with MOGPR by a paired bootstrap.
FUSECUBE_FUSIONS = ("fusion", "guided", "ridge")
SETS = {"real": "Real field (mogpr_input.csv, 2019; NDVI + RVI descending)",
        "synth": "Synthetic Demak-like crop (held-out paddy pixels; true NDVI under clouds)"}


def errors(pred: np.ndarray, target: np.ndarray, scored: np.ndarray) -> dict:
    """RMSE, MAE and bias of ``pred`` at the ``scored`` positions of ``(N, T)`` arrays.

    A prediction that is missing (NaN) where it is scored counts in ``missing_share`` and not
    in the errors.
    """
    sel = scored & np.isfinite(target)
    diff = (np.asarray(pred, np.float64) - target)[sel]
    ok = np.isfinite(diff)
    if not ok.any():
        return {"n": 0, "rmse": None, "mae": None, "bias": None, "missing_share": 1.0}
    d = diff[ok]
    return {"n": int(ok.sum()), "rmse": float(np.sqrt(np.mean(d**2))),
            "mae": float(np.mean(np.abs(d))), "bias": float(np.mean(d)),
            "missing_share": float(1 - ok.mean())}


def rmse_difference_interval(pred_a: np.ndarray, pred_b: np.ndarray, target: np.ndarray,
                             scored: np.ndarray, *, draws: int = 2000, seed: int = 0) -> dict:
    """RMSE(a) - RMSE(b) and its 95 % interval by a paired bootstrap over series (rows).

    Rows (pixels, or hiding cases of the real field) are resampled with replacement; both
    methods are scored on the same draw. Negative: ``a`` is more accurate.
    """
    sel = scored & np.isfinite(target) & np.isfinite(pred_a) & np.isfinite(pred_b)
    sq_a = np.where(sel, (pred_a - target) ** 2, 0.0).sum(axis=1)
    sq_b = np.where(sel, (pred_b - target) ** 2, 0.0).sum(axis=1)
    count = sel.sum(axis=1)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, count.size, size=(draws, count.size))
    n = np.maximum(count[rows].sum(axis=1), 1)
    diff = np.sqrt(sq_a[rows].sum(axis=1) / n) - np.sqrt(sq_b[rows].sum(axis=1) / n)
    point = np.sqrt(sq_a.sum() / max(count.sum(), 1)) - np.sqrt(sq_b.sum() / max(count.sum(), 1))
    low, high = np.percentile(diff, [2.5, 97.5])
    return {"difference": float(point), "low": float(low), "high": float(high), "draws": draws}


def score_set(pred: np.ndarray, data, name: str) -> dict:
    """All the scores of one method on one data set (groups: all, and per case or gap kind)."""
    target, scored = data[f"{name}__target"], data[f"{name}__scored"]
    n = pred.shape[0]  # a capped quick run may hold fewer series
    target, scored = target[:n], scored[:n]
    out = {"all": errors(pred, target, scored)}
    if name == "real":
        cases = data["real__case"][:n]
        for case in np.unique(cases):
            out[str(case)] = errors(pred[cases == case], target[cases == case], scored[cases == case])
    else:
        out["every_cloud_gap"] = errors(pred, target, data["synth__gap"][:n])
    return out


def ms_per_series(name: str, method: str, fusecube: dict, mogpr: dict) -> dict:
    """Cost of a method per series (pixel or case) in milliseconds."""
    if method.startswith("mogpr"):
        r = mogpr.get("real" if name == "real" else method.replace("mogpr", "synth"), {})
        return {"ms": r["seconds"] / r["series"] * 1e3} if r.get("series") else {}
    r = fusecube.get(name, {})
    if not r:
        return {}
    if method == "guided":  # one vectorised call for all series: its time / series
        return {"ms": r["guided"]["seconds"] / r["series"] * 1e3}
    if method == "ridge":  # fitted on the scene and filling it: amortised over its pixels
        return {"ms": r["ridge"]["seconds"] / r["ridge"]["scene_pixels"] * 1e3}
    if method != "fusion":
        return {"ms": r["baseline_s"][method] / r["series"] * 1e3}
    f = r["fusion"]
    if name == "real":  # one training per field series, then its prediction
        predict = f["predict_s"] / f["series"] * 1e3
        return {"ms": f["train_s"] / f["models"] * 1e3 + predict, "predict_ms": predict}
    pixels = f["scene_pixels"]  # trained once per scene: amortised over the scene's pixels
    return {"ms": (f["train_s"] + f["predict_s"]) / pixels * 1e3,
            "predict_ms": f["predict_s"] / pixels * 1e3}


def key_of(name: str, method: str) -> str:
    """Array name of a method's output on a data set (``fusecube_fusion.npz`` / ``mogpr.npz``)."""
    if not method.startswith("mogpr"):
        return f"{method}__{name}"
    return "real__ndvi" if name == "real" else method.replace("mogpr", "synth") + "__ndvi"


def collect(work: Path) -> dict:
    """Score every method's output in ``work`` and gather the costs."""
    data = np.load(work / "fusion_input.npz")
    fusecube = json.loads((work / "fusecube_fusion.json").read_text())
    fc = np.load(work / "fusecube_fusion.npz")
    mogpr = json.loads((work / "mogpr.json").read_text()) if (work / "mogpr.json").exists() \
        else {"skipped": "not run"}
    mo = np.load(work / "mogpr.npz") if "skipped" not in mogpr else {}
    results: dict = {"sets": {}, "mogpr": {k: v for k, v in mogpr.items()
                                           if k not in ("real", "synth", "synth_periods")}}
    for name in SETS:
        if f"{name}__ndvi" not in data:
            results["sets"][name] = {"skipped": "input not exported (real data absent?)"}
            continue
        entry: dict = {"label": SETS[name], "series": int(data[f"{name}__ndvi"].shape[0]),
                       "time_steps": int(data[f"{name}__days"].size),
                       "scored_values": int(data[f"{name}__scored"].sum()), "methods": {}}
        if name == "real":
            entry["cases"] = {str(c): int(n) for c, n in
                              zip(*np.unique(data["real__case"], return_counts=True), strict=True)}
        else:
            entry["scene"] = str(data["synth__label"])
            entry["held_out_paddy_pixels"] = int(data["synth__held_out_paddy"])
            entry["fusion_training"] = fusecube[name]["fusion"].get("trained_on")
        for method in METHODS:
            key = key_of(name, method)
            source = mo if method.startswith("mogpr") else fc
            if name == "real" and method == "mogpr_periods" or key not in source:
                continue
            pred = np.asarray(source[key])
            entry["methods"][method] = {"label": METHODS[method], "series": int(pred.shape[0]),
                                        **score_set(pred, data, name),
                                        **ms_per_series(name, method, fusecube, mogpr)}
        if "mogpr" in entry["methods"]:
            n = int(np.asarray(mo[key_of(name, "mogpr")]).shape[0])
            entry["minus_mogpr_rmse"] = {
                method: rmse_difference_interval(
                    np.asarray(fc[f"{method}__{name}"], np.float64)[:n],
                    np.asarray(mo[key_of(name, "mogpr")], np.float64),
                    data[f"{name}__target"][:n], data[f"{name}__scored"][:n])
                for method in FUSECUBE_FUSIONS if method in entry["methods"]}
        base = entry["methods"].get("mogpr", {}).get("ms")
        for r in entry["methods"].values():
            if base and r.get("ms"):
                r["mogpr_x"] = base / r["ms"]
                if r.get("predict_ms"):
                    r["mogpr_x_predict"] = base / r["predict_ms"]
        if name == "real":
            entry["fusion"] = fusecube[name]["fusion"]
        else:
            f = fusecube[name]["fusion"]
            entry["fusion"] = {k: f[k] for k in ("scene_pixels", "train_s", "predict_s")}
        results["sets"][name] = entry
    env_file = work / "environment.json"  # written right after the runs (rescoring keeps it)
    results["environment"] = (json.loads(env_file.read_text()) if env_file.exists()
                              else environment())
    return results


def environment() -> dict:
    """The machine and its load (the machine is shared: timings are best read as ratios)."""
    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "threads": 1, "load_average": os.getloadavg()}


def _f(value, spec: str) -> str:
    return "—" if value is None else f"{value:{spec}}"


def markdown(results: dict) -> str:
    """The comparison tables."""
    lines = ["# Fusion vs MOGPR (FuseTS 2.0.1): accuracy at hidden values, cost per series", ""]
    for name, entry in results["sets"].items():
        if "skipped" in entry:
            lines += [f"## {SETS[name]}", "", f"skipped: {entry['skipped']}", ""]
            continue
        groups = list(entry["cases"]) if name == "real" else ["every_cloud_gap"]
        head = "wet-season cloud gaps" if name == "synth" else "all hidden"
        lines += [f"## {entry['label']}", "",
                  f"{entry['series']} series x {entry['time_steps']} dates, "
                  f"{entry['scored_values']} scored values"
                  + (f"; cases: {entry['cases']}" if name == "real" else
                     f"; {entry['scene']}, {entry['held_out_paddy_pixels']} held-out paddy pixels"),
                  "",
                  f"| method | RMSE {head} | MAE | bias | "
                  + " | ".join(f"RMSE {g.replace('_', ' ')}" for g in groups)
                  + " | ms per series | MOGPR ÷ method |",
                  "|---|---|---|---|" + "---|" * len(groups) + "---|---|"]
        for r in entry["methods"].values():
            a = r["all"]
            ms = _f(r.get("ms"), ".4g")
            if r.get("predict_ms"):
                ms += f" (predict only {r['predict_ms']:.3g})"
            ratio = _f(r.get("mogpr_x"), ".3g")
            if r.get("mogpr_x_predict"):
                ratio += f" (predict only {r['mogpr_x_predict']:.3g})"
            lines.append(f"| {r['label']} | {_f(a['rmse'], '.4f')} | {_f(a['mae'], '.4f')} | "
                         f"{_f(a['bias'], '+.4f')} | "
                         + " | ".join(_f(r.get(g, {}).get("rmse"), ".4f") for g in groups)
                         + f" | {ms} | {ratio} |")
        intervals = entry.get("minus_mogpr_rmse", {})
        if intervals:
            lines.append("")
        for method, ci in intervals.items():
            lines.append(f"RMSE {METHODS[method]} - MOGPR: {ci['difference']:+.4f} (95 % interval "
                         f"{ci['low']:+.4f} .. {ci['high']:+.4f}, paired bootstrap over series)  ")
        lines.append("")
    env = results["environment"]
    lines += ["fusecube fusion (neural) cost: synthetic = (one training on the scene + gap-filling "
              "the whole scene) / scene pixels; real = one training on the field's own series + "
              "its prediction. Guided Whittaker: one call for all series (guide smoothing, every "
              "candidate λ and λ_g, leave-one-out choice) / series. Ridge fusion: (fit on the "
              "scene + gap-filling the whole scene) / scene pixels. One thread per method; MOGPR "
              "fits one GP per series. "
              f"{env['cpus']} CPUs, load average during the run {env['load_average']}. "
              "See docs/fusion-peers.md.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=RESULTS / "fusion-peers-work")
    parser.add_argument("--size", type=int, default=128, help="synthetic scene edge (pixels)")
    parser.add_argument("--pixels", type=int, default=300, help="paddy pixels in the crop")
    parser.add_argument("--score-only", action="store_true", help="rescore the last run")
    args = parser.parse_args()
    work = args.work
    if not args.score_only:
        work.mkdir(parents=True, exist_ok=True)
        (work / ".gitignore").write_text("*\n")  # benchmark scratch: never committed
        code = run_logged([sys.executable, str(HERE / "fusion_export.py"), "--work", str(work),
                     "--size", str(args.size), "--pixels", str(args.pixels)], work / "export.log")
        if code:
            raise SystemExit(f"export failed (exit {code}); see {work / 'export.log'}")
        code = run_logged([sys.executable, str(HERE / "fusion_run_fusecube.py"), str(work)],
                    work / "fusecube.log")
        if code:
            raise SystemExit(f"fusecube runner failed (exit {code}); see {work / 'fusecube.log'}")
        (work / "mogpr.json").unlink(missing_ok=True)
        python = PEER_VENV / "bin" / "python"
        if python.exists():
            code = run_logged([str(python), str(HERE / "fusion_run_mogpr.py"), str(work)],
                        work / "mogpr.log")
            reason = f"runner exited with code {code}; see {work / 'mogpr.log'}"
        else:
            reason = f"{PEER_VENV.name} missing: run benchmarks/peers/setup_venvs.sh"
        if not (work / "mogpr.json").exists():
            (work / "mogpr.json").write_text(json.dumps({"skipped": reason}))
        (work / "environment.json").write_text(json.dumps(environment()))
    results = collect(work)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fusion_peers.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (RESULTS / "fusion_peers.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
