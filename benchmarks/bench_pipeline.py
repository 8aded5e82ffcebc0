"""Whole-pipeline benchmark at Demak size: seconds per stage, peak RSS, accuracy vs truth.

Writes benchmarks/results/pipeline.json (``pipeline-<gapfill>.json`` for another gap-fill than
linear) and prints a table. The scene is synthesised first
(timed separately); the pipeline is then run on the written cube, as a user would.

    python benchmarks/bench_pipeline.py [--size 671x893] [--gapfill linear] [--extras both]

``--extras`` switches the issue-22 layers (``ndvi_source``, ``ndvi_sigma``, ``<date>_pm_days``,
``season_reason``: ``provenance`` in the run config) on, off, or runs both and reports the
overhead (target: at most 15 % more pipeline time at Demak size; off, on, off, on, the
best of each).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _child(size: str, gapfill: str, workdir: Path, extras: bool = True) -> dict:
    """Run in a fresh process so peak RSS belongs to the pipeline alone."""
    code = f"""
import json, time, resource
from pathlib import Path
from fusecube.config import CubeSource, RunConfig
from fusecube.runner import run
out = Path({str(workdir)!r})
t0 = time.perf_counter()
res = run(RunConfig(source=CubeSource(path=out / 'input' / 'cube.zarr'), out=out / 'run', gapfill={gapfill!r},
                    provenance={extras!r}))
print(json.dumps(res.to_json()))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="671x893")
    parser.add_argument("--gapfill", default="linear")
    parser.add_argument("--workdir", default="/tmp/fusecube-bench-pipeline")
    parser.add_argument("--extras", choices=("on", "off", "both"), default="on",
                        help="provenance/uncertainty/reason layers on, off, or both (overhead)")
    args = parser.parse_args()
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize

    width, height = (int(v) for v in args.size.split("x"))
    workdir = Path(args.workdir)
    t0 = time.perf_counter()
    synthesize(SceneConfig(width=width, height=height), workdir / "input")
    synth_s = time.perf_counter() - t0
    extras = {"extras": args.extras}
    if args.extras == "both":  # off, on, off, on: the best of each (first runs warm caches)
        runs = {False: [], True: []}
        for _ in range(2):
            for on in (False, True):
                runs[on].append(_child(args.size, args.gapfill, workdir, extras=on))
        summary, plain = (min(runs[on], key=lambda r: r["seconds"]["total"]) for on in (True, False))
        on, off = summary["seconds"]["total"], plain["seconds"]["total"]
        extras.update(seconds_on=on, seconds_off=off, overhead=round(on / off - 1, 4),
                      stage_seconds_off={k: v for k, v in plain["seconds"].items() if k != "total"})
    else:
        summary = _child(args.size, args.gapfill, workdir, extras=args.extras == "on")
    acc = summary["accuracy"]
    gap = acc.get("gapfill_hidden", {})
    ph = acc.get("phenology", {})
    stage_s = {k: v for k, v in summary["seconds"].items() if k != "total"}
    result = {
        "size": args.size, "pixels": width * height, "gapfill": args.gapfill,
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "synth_seconds": round(synth_s, 2), "stage_seconds": stage_s,
        "total_seconds": summary["seconds"]["total"], "peak_rss_mb": summary["peak_rss_mb"],
        "accuracy": acc, **extras,
    }
    RESULTS.mkdir(exist_ok=True)
    name = "pipeline.json" if args.gapfill == "linear" else f"pipeline-{args.gapfill}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2))
    print(f"\nfusecube pipeline at {args.size} ({width * height:,} px, 62 periods), gap-fill {args.gapfill}")
    print(f"{'stage':<14}{'seconds':>10}")
    for k, v in stage_s.items():
        print(f"{k:<14}{v:>10.2f}")
    print(f"{'TOTAL':<14}{summary['seconds']['total']:>10.2f}   (synthesis, not included: {synth_s:.1f} s)")
    print(f"peak RSS {summary['peak_rss_mb']:.0f} MB")
    if "overhead" in extras:
        print(f"issue-22 layers: {extras['seconds_on']:.2f} s on, {extras['seconds_off']:.2f} s off: "
              f"{100 * extras['overhead']:+.1f} % (target <= +15 %)")
    print(f"\n{'accuracy (cloud-hidden, vs truth)':<36}{'RMSE':>8}{'R2':>8}")
    for k in ("fused_paddy", "smooth_paddy", "fused_paddy_wet", "fused_paddy_dry"):
        if k in gap:
            print(f"{k:<36}{gap[k]['rmse']:>8.3f}{gap[k]['r2']:>8.3f}")
    if ph:
        print(f"SOS MAE {ph['sos_mae_days']:.1f} d  EOS MAE {ph['eos_mae_days']:.1f} d  "
              f"planting MAE {ph['planting_mae_days']:.1f} d  season count correct "
              f"{100 * ph['season_count_accuracy']:.1f} %  detection rate {100 * ph['detection_rate']:.1f} %")


if __name__ == "__main__":
    main()
