"""Whittaker smoothing and season detection speed at Demak size (671 x 893 pixels, 62 steps).

Writes benchmarks/results/bench_smooth.json. One thread (OMP_NUM_THREADS=1 is set before
numpy loads) so numbers compare with the peer tools' single-thread figures.

    .venv/bin/python benchmarks/bench_smooth.py [--pixels N] [--subset N]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from fusecube.kernels.seasons import detect_seasons  # noqa: E402
from fusecube.stages.phenology import PhenologyConfig  # noqa: E402
from fusecube.stages.smooth import SmoothConfig, smooth_array  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEMAK_PIXELS = 671 * 893


def rice_like(n: int, n_t: int = 62, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two- and three-season rice-like curves on 12-day steps, noisy, half the values hidden."""
    rng = np.random.default_rng(seed)
    days = np.arange(n_t) * 12.0
    period = np.where(rng.random(n) < 0.4, 120.0, 180.0)[:, None]
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    clean = 0.45 + 0.3 * np.sin(2 * np.pi * days[None, :] / period + phase)
    noisy = (clean + rng.normal(0, 0.03, clean.shape)).astype(np.float32)
    noisy[rng.random(noisy.shape) < 0.5] = np.nan
    return days, noisy, clean.astype(np.float32)


def timed(func, *args, repeat: int = 3):
    """Best wall time of ``repeat`` runs (the machine is shared) and the last result."""
    best, result = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pixels", type=int, default=DEMAK_PIXELS)
    parser.add_argument("--subset", type=int, default=65536,
                        help="pixels for the slower variants (GCV, V-curve, seasons)")
    args = parser.parse_args()
    days, noisy, clean = rice_like(args.pixels)
    weights = np.isfinite(noisy).astype(np.float32)
    results: dict[str, dict] = {}
    variants = {
        "whittaker_fixed": (SmoothConfig(envelope_iterations=0), args.pixels),
        "whittaker_envelope1": (SmoothConfig(envelope_iterations=1), args.pixels),
        "whittaker_gcv": (SmoothConfig(method="gcv", envelope_iterations=0), args.subset),
        "whittaker_vcurve": (SmoothConfig(method="vcurve", envelope_iterations=0), args.subset),
    }
    for name, (config, n) in variants.items():
        seconds, smoothed = timed(smooth_array, noisy[:n], weights[:n], days, config,
                                  repeat=1 if n > 100000 else 3)
        rmse = float(np.sqrt(np.nanmean((smoothed - clean[:n]) ** 2)))
        results[name] = {"pixels": n, "seconds": seconds, "us_per_pixel": seconds / n * 1e6,
                         "rmse_vs_clean": rmse, "lambda_candidates": len(config.lambdas)
                         if config.method != "fixed" else 1}
        print(f"{name:22s} {n:>8d} px  {seconds:7.2f} s  {seconds / n * 1e6:7.2f} µs/px  rmse {rmse:.4f}")
    rules = PhenologyConfig().rules
    curves = clean[: args.subset]
    chunk = PhenologyConfig().chunk_pixels

    def seasons(values):
        return [detect_seasons(values[k : k + chunk], days, rules) for k in range(0, len(values), chunk)]

    seconds, _ = timed(seasons, curves)
    results["detect_seasons"] = {"pixels": len(curves), "seconds": seconds,
                                 "us_per_pixel": seconds / len(curves) * 1e6}
    print(f"{'detect_seasons':22s} {len(curves):>8d} px  {seconds:7.2f} s  "
          f"{seconds / len(curves) * 1e6:7.2f} µs/px")
    fixed = results["whittaker_fixed"]
    results["demak_whittaker_seconds"] = fixed["us_per_pixel"] * DEMAK_PIXELS / 1e6
    results["environment"] = {"python": platform.python_version(), "numpy": np.__version__,
                              "machine": platform.machine(), "cpus": os.cpu_count(),
                              "threads": os.environ.get("OMP_NUM_THREADS")}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "bench_smooth.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
