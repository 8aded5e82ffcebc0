"""Scale benchmark: 1x, 4x and 16x Demak through the runner, the plan beside what was measured.

Writes ``benchmarks/results/scale.json`` and ``benchmarks/results/scale.md`` (the tables) and
prints them. For every size (k x Demak: 671 x 893 px x 62 periods, each edge times sqrt(k))
and method (ridge; neural = ``gapfill: fusion``), one run in a fresh subprocess:

- ``blocks``: the block runner under ``--memory-limit``;
- ``dask``: with ``--dask-processes N``, the same blocks on a local multi-process cluster
  (``--scheduler local:N``).

Measured per run: seconds (the run, and each stage), pixels/s per worker, peak RSS of the runner
process and of a worker (from the blocks), bytes read and written (``/proc/self/io`` ``rchar`` /
``wchar`` of the runner process, as ``--max-bytes`` counts them). Before each run,
``fusecube.runner.plan.plan_run`` gives its estimates (with this machine's calibration:
``--calibrate`` measures one first); they are reported beside the measurements with their ratio.
From the measured seconds against pixels (least squares over the sizes) the time of a
Java-wide run (52 M pixels at 50 m, 62 periods) is projected per method and mode.

The scene of each size is synthesised once (``fusecube synth``; timed) and read by the runs as a
zarr cube, so run times exclude synthesis.

Usage::

    python benchmarks/bench_scale.py                       # 1x, 4x, 16x; ridge and neural
    python benchmarks/bench_scale.py --sizes 1,4 --methods ridge --dask-processes 2
    python benchmarks/bench_scale.py --quick               # one tiny scene, ridge: proves it works
    python benchmarks/bench_scale.py --replan              # new plans for the stored rows
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEMAK = (671, 893, 62)
JAVA_PIXELS = 52_000_000
METHODS = {"ridge": "ridge", "neural": "fusion"}

CHILD = r"""
import json, sys, time
from pathlib import Path
from fusecube.config import CubeSource, RunConfig
from fusecube.runner.budget import io_bytes
from fusecube.runner.execution import run
from fusecube.runner.memory import peak_rss_bytes
import psutil

args = json.loads(sys.argv[1])
config = RunConfig.model_validate(args["config"])
io = psutil.Process().io_counters()
t0 = time.perf_counter()
result = run(config)
seconds = time.perf_counter() - t0
io2 = psutil.Process().io_counters()
print("RESULT " + json.dumps({
    "seconds": seconds, "stages": result.seconds, "n_blocks": result.n_blocks,
    "block_edge": result.block_edge, "peak_rss_mb": peak_rss_bytes() / 2**20,
    "worker_peak_rss_mb": result.worker_peak_rss_mb, "gapfill": result.gapfill.get("chosen"),
    "read_bytes": io2.read_chars - io.read_chars, "write_bytes": io2.write_chars - io.write_chars,
}))
"""


def size_of(k: float) -> tuple[int, int]:
    """Edges of a scene ``k`` times the Demak area."""
    s = math.sqrt(k)
    return max(16, round(DEMAK[0] * s)), max(16, round(DEMAK[1] * s))


def synthesise(work: Path, width: int, height: int) -> tuple[Path, float]:
    """The scene's cube (made once), and the seconds its synthesis took (0 when reused)."""
    folder = work / f"scene-{width}x{height}"
    cube = folder / "cube.zarr"
    if cube.exists():
        return cube, 0.0
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fusecube", "synth", "--out", str(folder),
                    "--size", f"{width}x{height}"], check=True, capture_output=True)
    return cube, time.perf_counter() - t0


def one_run(config: dict) -> dict:
    """Run ``config`` in a fresh process; its measurements."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps({"config": config})],
                          capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``(intercept, slope)``; through the origin for a single point."""
    if len(xs) == 1:
        return 0.0, ys[0] / xs[0]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
    return my - slope * mx, slope


def bench(args: argparse.Namespace) -> dict:
    from fusecube.config import RunConfig
    from fusecube.runner.calibration import calibrate, load_costs
    from fusecube.runner.plan import plan_run

    if args.calibrate:
        t0 = time.perf_counter()
        calibrate(tuple(METHODS[m] for m in args.methods))
        print(f"calibrated in {time.perf_counter() - t0:.0f} s", flush=True)
    costs = load_costs()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    modes = [("blocks", None, 1)]
    if args.dask_processes:
        modes.append(("dask", f"local:{args.dask_processes}", args.dask_processes))
    rows = []
    for k in args.sizes:
        width, height = size_of(k)
        cube, synth_s = synthesise(work, width, height)
        print(f"{k:g}x Demak: {width}x{height} px" + (f", synthesised in {synth_s:.0f} s"
                                                      if synth_s else ""), flush=True)
        for method in args.methods:
            for mode, scheduler, workers in modes:
                out = work / f"run-{k:g}x-{method}-{mode}"
                config = RunConfig(source={"kind": "cube", "path": str(cube)}, out=out,
                                   gapfill=METHODS[method], memory_limit=args.memory_limit,
                                   scheduler=scheduler, report=args.report,
                                   ledger=str(work / "ledger.sqlite"), result_gates=False)
                plan = plan_run(config, workers=workers, costs=costs)
                if out.exists():
                    import shutil

                    shutil.rmtree(out)
                measured = one_run(config.model_dump(mode="json"))
                pixels = width * height
                row = {
                    "size": f"{k:g}x", "width": width, "height": height, "pixels": pixels,
                    "periods": DEMAK[2], "method": method, "mode": mode, "workers": workers,
                    "synth_seconds": round(synth_s, 1), **{
                        key: measured[key] for key in ("seconds", "n_blocks", "block_edge",
                                                       "peak_rss_mb", "worker_peak_rss_mb",
                                                       "read_bytes", "write_bytes", "stages")},
                    "pixels_per_s_per_worker": pixels / measured["seconds"] / workers,
                    "memory_limit": args.memory_limit, "report": args.report,
                    "scheduler": scheduler, "cube": str(cube),
                }
                row.update(plan_columns(plan, row))
                rows.append(row)
                print(f"  {method:>6} {mode:>6}: {measured['seconds']:.1f} s (plan "
                      f"{plan.seconds:.1f}), peak RSS {measured['peak_rss_mb']:.0f} MB, "
                      f"{row['pixels_per_s_per_worker']:.0f} px/s/worker", flush=True)
    return summarise(rows, costs, args)


def plan_columns(plan, row: dict) -> dict:
    """The plan's estimates for a measured ``row``, and their ratios to what was measured."""
    return {
        "plan": {"seconds": round(plan.seconds, 1), "read_bytes": plan.read_bytes,
                 "write_bytes": plan.write_bytes, "blocks": plan.blocks,
                 "peak_memory_mb": round(plan.peak_memory_per_worker / 2**20),
                 "stages": {s: round(v, 1) for s, v in plan.stages.items()},
                 "calibrated": plan.calibrated},
        "plan_ratio": {
            "seconds": round(plan.seconds / row["seconds"], 2),
            "read_bytes": round(plan.read_bytes / max(1, row["read_bytes"]), 2),
            "write_bytes": round(plan.write_bytes / max(1, row["write_bytes"]), 2)}}


def replan(data: dict) -> dict:
    """``data`` (a results JSON) with every row's plan made again from the stored calibration.

    The measured figures are kept; only the estimates change. For a plan made with a
    calibration measured after the runs (``fusecube plan --calibrate`` on an idle machine).
    """
    from fusecube.config import RunConfig
    from fusecube.runner.calibration import load_costs
    from fusecube.runner.plan import plan_run

    costs = load_costs()
    work = Path(data.get("work", Path(tempfile.gettempdir()) / "fusecube-scale"))
    for row in data["rows"]:
        cube = row.get("cube") or work / f"scene-{row['width']}x{row['height']}" / "cube.zarr"
        scheduler = row.get("scheduler", None if row["mode"] == "blocks"
                            else f"local:{row['workers']}")
        config = RunConfig(source={"kind": "cube", "path": str(cube)}, out="replan",
                           gapfill=METHODS[row["method"]],
                           memory_limit=row.get("memory_limit", data["memory_limit"]),
                           scheduler=scheduler, report=row.get("report", data["report"]),
                           result_gates=False)
        row.update(plan_columns(plan_run(config, workers=row["workers"], costs=costs), row))
    data["calibration"] = {"calibrated": costs.calibrated, "machine": costs.machine,
                           "created": costs.created, "replanned": True}
    return data


def summarise(rows: list[dict], costs, args: argparse.Namespace) -> dict:
    """The results JSON: rows, calibration, and the Java-wide projection per method and mode."""
    projection = []
    modes = sorted({(r["mode"]) for r in rows})
    for method in args.methods:
        for mode in modes:
            mine = [r for r in rows if r["method"] == method and r["mode"] == mode]
            if not mine:
                continue
            a, b = fit_line([r["pixels"] for r in mine], [r["seconds"] for r in mine])
            projection.append({"method": method, "mode": mode, "sizes": len(mine),
                               "intercept_s": round(a, 2), "seconds_per_mpixel": round(b * 1e6, 2),
                               "java_seconds": round(a + b * JAVA_PIXELS),
                               "java_minutes": round((a + b * JAVA_PIXELS) / 60, 1)})
    return {"machine": {"host": platform.node(), "cpus": os.cpu_count(),
                        "python": platform.python_version()},
            "calibration": {"calibrated": costs.calibrated, "machine": costs.machine,
                            "created": costs.created},
            "memory_limit": args.memory_limit, "report": args.report, "work": str(args.work),
            "rows": rows,
            "java": {"pixels": JAVA_PIXELS, "projection": projection},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def tables(data: dict) -> str:
    """The scale, plan-vs-measured and projection tables as markdown."""
    lines = ["| size | px | method | mode | workers | s | px/s/worker | peak RSS MB | "
             "worker RSS MB | blocks |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['size']} | {r['width']}x{r['height']} | {r['method']} | {r['mode']} "
                     f"| {r['workers']} | {r['seconds']:.1f} | {r['pixels_per_s_per_worker']:.0f} "
                     f"| {r['peak_rss_mb']:.0f} | {r['worker_peak_rss_mb']:.0f} | {r['n_blocks']} |")
    lines += ["", "| size | method | mode | s plan / measured | read MB plan / measured | "
              "write MB plan / measured | peak MB plan / measured |", "|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        p = r["plan"]
        lines.append(f"| {r['size']} | {r['method']} | {r['mode']} | {p['seconds']:.1f} / "
                     f"{r['seconds']:.1f} ({r['plan_ratio']['seconds']}) | "
                     f"{p['read_bytes'] / 1e6:.0f} / {r['read_bytes'] / 1e6:.0f} "
                     f"({r['plan_ratio']['read_bytes']}) | {p['write_bytes'] / 1e6:.0f} / "
                     f"{r['write_bytes'] / 1e6:.0f} ({r['plan_ratio']['write_bytes']}) | "
                     f"{p['peak_memory_mb']} / {r['peak_rss_mb']:.0f} |")
    lines += ["", "| method | mode | sizes | s per M px | Java-wide (52 M px) |", "|---|---|---|---|---|"]
    for p in data["java"]["projection"]:
        lines.append(f"| {p['method']} | {p['mode']} | {p['sizes']} | {p['seconds_per_mpixel']} "
                     f"| {p['java_minutes']} min |")
    mark = "calibrated" if data["calibration"]["calibrated"] else "uncalibrated (defaults)"
    lines += ["", f"Plan costs: {mark}, {data['calibration']['machine']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,4,16",
                        help="Scene sizes as multiples of the Demak area, e.g. 1,4,16.")
    parser.add_argument("--methods", default="ridge,neural", help="ridge and/or neural.")
    parser.add_argument("--dask-processes", type=int, default=0,
                        help="Also run on a local cluster of N worker processes.")
    parser.add_argument("--memory-limit", default="2GB", help="The runs' memory budget.")
    parser.add_argument("--report", action="store_true", help="Also write products and report.")
    parser.add_argument("--calibrate", action="store_true",
                        help="Measure this machine's plan costs first (fusecube plan --calibrate).")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "fusecube-scale"),
                        help="Folder for the scenes and runs.")
    parser.add_argument("--quick", action="store_true",
                        help="One tiny scene (1/64 Demak), ridge only: proves the script works.")
    parser.add_argument("--out", default=str(RESULTS / "scale.json"), help="Results JSON.")
    parser.add_argument("--replan", action="store_true",
                        help="Run nothing: make the plans of --out's rows again from the stored "
                             "calibration (after `fusecube plan --calibrate`).")
    args = parser.parse_args(argv)
    args.sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; use ridge and/or neural")
    if args.quick:
        args.sizes, args.methods = [1 / 64], ["ridge"]
    if args.replan:
        data = replan(json.loads(Path(args.out).read_text()))
    else:
        data = bench(args)
        data["quick"] = args.quick
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    text = tables(data)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
