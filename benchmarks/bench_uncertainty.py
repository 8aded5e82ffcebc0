"""Is the uncertainty honest? Coverage of ``ndvi_sigma`` and of the season-date intervals.

- **σ on held-out values** (synthetic scene and every real cube of ``../shared/data/real``): the
  cube is split in two halves along x; σ is fitted on the values hidden in one half (the run's
  protocol: whole dates and cloud-like runs, :mod:`fusecube.evaluate.uncertainty`) and checked
  on values hidden with another seed in the other half, and the other way round. Target: the
  hidden observation lies within ±1.96 σ of the filled value for 95 ± 3 % of them.
- **σ against the synthetic truth**: in a full run on the synthetic scene, the share of
  cloud-hidden values whose noise-free truth lies within ±1.96 ``ndvi_sigma`` of ``ndvi_fused``
  (σ includes the observation noise, so this is expected above 95 %).
- **season dates**: the share of true SOS/POS/EOS/planting/harvest within ``± <date>_pm_days``
  of the detected date (matched by peak within 40 days), paddy pixels.
- **reason codes**: paddy season slots that are empty without a reason (target 0).

Writes ``benchmarks/results/uncertainty.json`` and prints a table.

    .venv/bin/python benchmarks/bench_uncertainty.py [--size 671x893] [--no-real]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import xarray as xr

from fusecube.config import CubeSource, RunConfig
from fusecube.cube import NDVI, NDVI_FUSED, PADDY_MASK, X, read_cube
from fusecube.evaluate.accuracy import DATE_KEYS, match_seasons
from fusecube.evaluate.selection import SelectionConfig
from fusecube.evaluate.uncertainty import coverage, fit_sigma, held_out_residuals
from fusecube.grid.periods import to_days
from fusecube.quality.gates import apply_screen, screen_periods
from fusecube.stages.provenance import NDVI_SIGMA
from fusecube.testing.realdata import REAL_CUBES, real_data_root

RESULTS = Path(__file__).parent / "results" / "uncertainty.json"
LAM = 1.0  # the run's default Whittaker lambda


def split_coverage(cube: xr.Dataset, method: str, mask: xr.DataArray | None = None) -> dict:
    """σ fitted on one x-half, coverage on the other (hidden with another seed), both ways."""
    nx = cube.sizes[X]
    halves = [slice(0, nx // 2), slice(nx // 2, nx)]
    window = max(8, min(128, cube.sizes["y"], nx // 2))
    inside, n, per_fold = 0.0, 0, []
    for fit_half, test_half in (halves, halves[::-1]):
        def part(half, seed):
            sub = cube.isel({X: half})
            return held_out_residuals(sub, method, lam=LAM,
                                      mask=None if mask is None else mask.isel({X: half}),
                                      config=SelectionConfig(window=window, seed=seed))
        model = fit_sigma(part(fit_half, 0), method)
        got = coverage(model, part(test_half, 1))
        per_fold.append(got)
        inside += got["coverage"] * got["n"]
        n += got["n"]
    return {"method": method, "coverage": inside / max(n, 1), "n": n, "folds": per_fold}


def synthetic(size: str, workdir: Path) -> dict:
    """Run the pipeline on a synthetic scene and check σ, date intervals and reason codes."""
    from fusecube.runner import run
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize

    width, height = (int(v) for v in size.split("x"))
    scene = workdir / f"scene-{size}"
    if not (scene / "cube.zarr").exists():
        synthesize(SceneConfig(width=width, height=height), scene)
    t0 = time.perf_counter()
    summary = run(RunConfig(source=CubeSource(path=scene / "cube.zarr"), out=workdir / "run",
                            report=False)).to_json()
    seconds = time.perf_counter() - t0
    method = summary.get("gapfill", {}).get("chosen") or "linear"
    cube = read_cube(scene / "cube.zarr")
    truth = xr.open_zarr(scene / "truth.zarr", consolidated=False)
    result = xr.open_zarr(workdir / "run" / "result.zarr", consolidated=False)
    screened = apply_screen(cube.load(), screen_periods(cube))
    out = {"size": size, "run_seconds": round(seconds, 2), "method": method,
           "held_out": split_coverage(screened, method, truth[PADDY_MASK])}
    hidden = cube[NDVI].isnull().values
    fused, sigma = result[NDVI_FUSED].values, result[NDVI_SIGMA].values
    truth_ndvi = truth["ndvi_true"].values
    ok = hidden & np.isfinite(fused) & np.isfinite(sigma) & np.isfinite(truth_ndvi)
    out["truth_in_gaps"] = {"n": int(ok.sum()), "coverage": float(
        (np.abs(fused - truth_ndvi)[ok] <= 1.96 * sigma[ok]).mean())}
    paddy = truth[PADDY_MASK].values.reshape(-1) > 0

    def flat(var):
        values = var.values
        values = to_days(values) if np.issubdtype(values.dtype, np.datetime64) else values
        return values.reshape(values.shape[0], -1).T[paddy]

    match = match_seasons(flat(truth["true_pos"]), flat(result["pos"]), 40.0)
    dates = {}
    for key in DATE_KEYS:
        true_k = flat(truth[f"true_{key}"])
        det = np.take_along_axis(flat(result[key]), np.maximum(match, 0), axis=1)
        pm = np.take_along_axis(flat(result[f"{key}_pm_days"]), np.maximum(match, 0), axis=1)
        both = (match >= 0) & np.isfinite(true_k) & np.isfinite(det) & np.isfinite(pm)
        dates[key] = {"n": int(both.sum()),
                      "coverage": float((np.abs(det - true_k)[both] <= pm[both]).mean()),
                      "median_pm_days": float(np.median(pm[both])),
                      "mae_days": float(np.abs(det - true_k)[both].mean())}
    out["season_dates"] = dates
    reason = flat(result["season_reason"])
    empty = ~np.isfinite(flat(result["pos"]))
    out["reasons"] = {"empty_paddy_slots": int(empty.sum()),
                      "unexplained": int((empty & (reason == 0)).sum()),
                      "by_flag": {str(v): int((empty & (reason == v)).sum())
                                  for v in np.unique(reason[empty])}}
    return out


def real(methods: tuple[str, ...]) -> dict:
    """Held-out σ coverage on every real cube, per gap-fill method."""
    out = {}
    for name, load in REAL_CUBES.items():
        cube = load()
        screened = apply_screen(cube, screen_periods(cube))
        out[name] = {m: split_coverage(screened, m) for m in methods}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="671x893")
    parser.add_argument("--workdir", default="/tmp/fusecube-bench-uncertainty")
    parser.add_argument("--no-real", action="store_true")
    args = parser.parse_args()
    result = {"machine": {"python": platform.python_version()},
              "synthetic": synthetic(args.size, Path(args.workdir))}
    if not args.no_real and real_data_root() is not None:
        result["real"] = real(("linear", "whittaker"))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    syn = result["synthetic"]
    print(f"\nσ coverage (±1.96 σ, held-out half, target 95 ± 3 %), synthetic {args.size}:")
    print(f"{'cube':<28}{'method':<11}{'coverage':>9}{'n':>9}")
    held = syn["held_out"]
    print(f"{'synthetic':<28}{held['method']:<11}{100 * held['coverage']:>8.1f}%{held['n']:>9}")
    for name, per in result.get("real", {}).items():
        for method, got in per.items():
            print(f"{name:<28}{method:<11}{100 * got['coverage']:>8.1f}%{got['n']:>9}")
    print(f"synthetic truth in cloud gaps within ±1.96 σ: "
          f"{100 * syn['truth_in_gaps']['coverage']:.1f} % of {syn['truth_in_gaps']['n']}")
    print(f"\n{'date':<10}{'coverage':>9}{'median ±d':>11}{'MAE d':>8}{'n':>8}")
    for key, got in syn["season_dates"].items():
        print(f"{key:<10}{100 * got['coverage']:>8.1f}%{got['median_pm_days']:>11.1f}"
              f"{got['mae_days']:>8.1f}{got['n']:>8}")
    print(f"\nempty paddy season slots: {syn['reasons']['empty_paddy_slots']}, unexplained: "
          f"{syn['reasons']['unexplained']}")


if __name__ == "__main__":
    main()
