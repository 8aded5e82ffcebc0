"""Synthesis benchmark: seconds and peak RSS to write a Demak-size scene (and larger ones).

Each measurement runs in a fresh process (peak RSS is its own). ``--scale`` multiplies the
scene's area (4 = twice the width and the height); ``--workers`` lists thread counts;
``--baseline-src`` points at another ``src`` folder (e.g. ``git archive HEAD src`` unpacked
somewhere) to time that version the same way, for a before/after table. Results go to
``benchmarks/results/synthesis.json`` and a table is printed.

    python benchmarks/bench_synthesis.py [--scale 1 16] [--workers 1 2] [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DEMAK = (671, 893, 62)

_CHILD = """
import inspect, json, resource, sys, time
from fusecube.sources.synthetic.scene import SceneConfig
from fusecube.sources.synthetic.writer import synthesize
width, height, periods, workers, out = sys.argv[1:6]
cfg = SceneConfig(width=int(width), height=int(height), n_periods=int(periods), seed=0)
kwargs = {"workers": int(workers)} if "workers" in inspect.signature(synthesize).parameters else {}
t0 = time.perf_counter()
synthesize(cfg, out, **kwargs)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "parallel": bool(kwargs)}))
"""


def measure(scale: float, workers: int, src: str | None) -> dict:
    """Synthesise one scene in a child process; seconds, peak RSS and pixels per second."""
    side = math.sqrt(scale)
    width, height = round(DEMAK[0] * side), round(DEMAK[1] * side)
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = str(Path(src).resolve())
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as out:
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(width), str(height), str(DEMAK[2]),
                               str(workers), out], capture_output=True, text=True, env=env, check=True)
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update(version="baseline" if src else "current", scale=scale, width=width, height=height,
               periods=DEMAK[2], workers=workers if row["parallel"] else 1,
               mpix_per_s=round(width * height / row["seconds"] / 1e6, 3))
    row["seconds"] = round(row["seconds"], 2)
    row["peak_rss_mb"] = round(row["peak_rss_mb"], 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, nargs="+", default=[1.0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--baseline-src", default=None,
                        help="a src folder of another version to time as the baseline (1 worker)")
    parser.add_argument("--out", type=Path, default=RESULTS / "synthesis.json")
    args = parser.parse_args()
    rows = []
    for scale in args.scale:
        if args.baseline_src:
            rows.append(measure(scale, 1, args.baseline_src))
        rows.extend(measure(scale, w, None) for w in args.workers)
    for r in rows:
        print(f"{r['version']:9s} x{r['scale']:<5g} {r['width']}x{r['height']}x{r['periods']} "
              f"workers={r['workers']}  {r['seconds']:8.2f} s  {r['mpix_per_s']:.3f} Mpx/s  "
              f"peak {r['peak_rss_mb']:.0f} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                "platform": platform.platform()},
                                    "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
