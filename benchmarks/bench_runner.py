"""Runner benchmark: seconds and peak RSS per mode and scene size, and kill -9/resume trials.

Writes ``benchmarks/results/runner.json`` and prints a table.

Modes, each run as ``fusecube run`` in a fresh subprocess (peak RSS is the runner process's
``VmHWM``, from its ``run.json``):

- ``in-memory``: one block covering the whole scene (skipped, with the reason recorded, when
  its estimated memory exceeds 40 % of the RAM available);
- ``blocks``: the block runner under ``--memory-limit`` (default 2GB);
- ``dask``: the same blocks on ``--scheduler local:N``; the runner's peak and the largest
  worker RSS seen at the end of a block are both recorded.

Kill trials: a small scene is run, killed with SIGKILL at a uniformly random moment of its
expected duration (start-up, planning and block writing alike), resumed with ``--resume`` and
its ``result.zarr`` compared byte for byte with an uninterrupted run.

Usage::

    python benchmarks/bench_runner.py                  # Demak and 4x Demak, 20 kill trials
    python benchmarks/bench_runner.py --sizes demak --trials 5 --modes blocks,dask
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "runner.json"
SIZES = {"demak": (671, 893), "4x": (1342, 1786), "small": (96, 96)}
#: Measured peak bytes per pixel-period of processing (see fusecube.runner.memory) + base.
EST_BYTES_PER_PIXEL_PERIOD = 150
EST_BASE = 300 * 1024**2


def store_bytes(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def scene(work: Path, name: str, width: int, height: int) -> Path:
    cube = work / f"scene-{name}" / "cube.zarr"
    if not cube.exists():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fusecube", "synth", "--out", str(cube.parent),
                        "--size", f"{width}x{height}"], check=True, capture_output=True)
        print(f"synthesised {name} ({width}x{height}) in {time.perf_counter() - t0:.0f} s",
              flush=True)
    return cube


def run_cli(work: Path, tag: str, cube: Path, *, block_size: int, memory_limit: str,
            scheduler: str | None = None, env: dict | None = None) -> dict:
    out = work / "runs" / tag
    if out.exists():
        import shutil

        shutil.rmtree(out)
    config = {"source": {"kind": "cube", "path": str(cube)}, "out": str(out),
              "block_size": block_size, "report": False, "memory_limit": memory_limit}
    if scheduler:
        config["scheduler"] = scheduler
    out.mkdir(parents=True)
    cfg = out.parent / f"{tag}.yaml"
    cfg.write_text(yaml.safe_dump(config))
    environ = {**os.environ, "FUSECUBE_LEDGER": str(work / "ledger.sqlite"), **(env or {})}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fusecube", "run", str(cfg)], env=environ,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr[-1500:], "wall_s": round(wall, 2)}
    summary = json.loads((out / "run.json").read_text())
    return {"wall_s": round(wall, 2), "run_s": summary["seconds"]["total"],
            "peak_rss_mb": summary["peak_rss_mb"],
            "worker_peak_rss_mb": summary["worker_peak_rss_mb"],
            "n_blocks": summary["n_blocks"], "block_edge": summary["block_edge"],
            "memory_limit_mb": summary["memory_limit_mb"], "result": str(out / "result.zarr")}


def bench_sizes(work: Path, sizes: list[str], modes: list[str], memory_limit: str,
                workers: int) -> list[dict]:
    rows = []
    for name in sizes:
        width, height = SIZES[name]
        cube = scene(work, name, width, height)
        for mode in modes:
            row = {"size": name, "width": width, "height": height, "mode": mode}
            if mode == "in-memory":
                need = EST_BASE + width * height * 62 * EST_BYTES_PER_PIXEL_PERIOD
                available = psutil.virtual_memory().available
                if need > 0.4 * available:
                    row["skipped"] = (f"one {width}x{height} block needs ~{need / 1e9:.1f} GB, "
                                      f"over 40% of the {available / 1e9:.1f} GB available")
                    rows.append(row)
                    print(row, flush=True)
                    continue
                row |= run_cli(work, f"{name}-{mode}", cube, block_size=max(width, height),
                               memory_limit=f"{max(need * 2, 2e9):.0f}")
            elif mode == "blocks":
                row |= run_cli(work, f"{name}-{mode}", cube, block_size=256,
                               memory_limit=memory_limit)
            else:
                row |= run_cli(work, f"{name}-{mode}", cube, block_size=256,
                               memory_limit=memory_limit, scheduler=f"local:{workers}")
            rows.append(row)
            print({k: v for k, v in row.items() if k != "result"}, flush=True)
        by_mode = {r["mode"]: r for r in rows if r["size"] == name and "result" in r}
        if "blocks" in by_mode and "dask" in by_mode:
            same = store_bytes(Path(by_mode["blocks"]["result"])) == store_bytes(
                Path(by_mode["dask"]["result"]))
            by_mode["dask"]["bit_identical_to_blocks"] = same
    return rows


def kill_trials(work: Path, n: int, seed: int) -> dict:
    rng = random.Random(seed)
    cube = scene(work, "small", *SIZES["small"])
    ref = run_cli(work, "kill-ref", cube, block_size=32, memory_limit="2GB")
    ref_bytes = store_bytes(Path(ref["result"]))
    trials = []
    for i in range(n):
        tag = f"kill-{i}"
        out = work / "runs" / tag
        config = {"source": {"kind": "cube", "path": str(cube)}, "out": str(out),
                  "block_size": 32, "report": False, "memory_limit": "2GB"}
        if out.exists():
            import shutil

            shutil.rmtree(out)
        out.mkdir(parents=True)
        cfg = out.parent / f"{tag}.yaml"
        cfg.write_text(yaml.safe_dump(config))
        environ = {**os.environ, "FUSECUBE_LEDGER": str(work / "ledger.sqlite")}
        cmd = [sys.executable, "-m", "fusecube", "run", str(cfg)]
        delay = rng.uniform(0.2, ref["wall_s"])
        proc = subprocess.Popen(cmd, env=environ, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        partial = list(out.glob(".result.zarr.partial-*"))
        resumed = subprocess.run(cmd + ["--resume"], env=environ, capture_output=True, text=True)
        identical = (resumed.returncode == 0
                     and store_bytes(out / "result.zarr") == ref_bytes)
        trials.append({"kill_after_s": round(delay, 2), "killed": killed,
                       "partial_store_left": bool(partial), "resume_rc": resumed.returncode,
                       "bit_identical": identical})
        print(f"trial {i}: {trials[-1]}", flush=True)
    return {"scene": "small", "width": SIZES["small"][0], "height": SIZES["small"][1],
            "block_size": 32, "n_blocks": ref["n_blocks"], "trials": trials,
            "n_trials": n, "n_killed": sum(t["killed"] for t in trials),
            "n_bit_identical": sum(t["bit_identical"] for t in trials)}


def summarise(args, rows: list[dict], kills: dict | None) -> dict:
    blocks = {r["size"]: r for r in rows if r["mode"] == "blocks" and "peak_rss_mb" in r}
    flat = None
    if "demak" in blocks and "4x" in blocks:
        a, b = blocks["demak"]["peak_rss_mb"], blocks["4x"]["peak_rss_mb"]
        flat = {"demak_mb": a, "4x_mb": b, "ratio": round(b / a, 3),
                "within_10_percent": abs(b - a) <= 0.1 * a, "under_2gb": max(a, b) <= 2048}
    return {
        "benchmark": "runner",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 1e9, 1),
                    "python": platform.python_version(), "platform": platform.platform(),
                    "load_avg_1m": os.getloadavg()[0]},
        "note": "timings on a shared machine; compare modes within one file only",
        "memory_limit": args.memory_limit, "dask_workers": args.workers,
        "rows": [{k: v for k, v in r.items() if k != "result"} for r in rows],
        "peak_rss_flat": flat,
        "kill_resume": kills,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/fusecube-bench-runner"))
    parser.add_argument("--sizes", default="demak,4x")
    parser.add_argument("--modes", default="in-memory,blocks,dask")
    parser.add_argument("--memory-limit", default="2GB")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    kills = kill_trials(args.work, args.trials, args.seed) if args.trials else None
    RESULTS.write_text(json.dumps(summarise(args, [], kills), indent=2))
    rows: list[dict] = []
    for size in [s for s in args.sizes.split(",") if s]:  # results saved after each size
        rows += bench_sizes(args.work, [size], [m for m in args.modes.split(",") if m],
                            args.memory_limit, args.workers)
        RESULTS.write_text(json.dumps(summarise(args, rows, kills), indent=2))
    result = summarise(args, rows, kills)
    RESULTS.write_text(json.dumps(result, indent=2))
    flat = result["peak_rss_flat"]
    print(f"\n{'size':<6} {'mode':<10} {'blocks':>6} {'edge':>5} {'seconds':>8} {'peak MB':>8} "
          f"{'worker MB':>9}")
    for r in rows:
        if "skipped" in r or "error" in r:
            print(f"{r['size']:<6} {r['mode']:<10} {r.get('skipped') or r.get('error')[:60]}")
            continue
        print(f"{r['size']:<6} {r['mode']:<10} {r['n_blocks']:>6} {r['block_edge']:>5} "
              f"{r['run_s']:>8.1f} {r['peak_rss_mb']:>8.0f} {r['worker_peak_rss_mb']:>9.0f}")
    if flat:
        print(f"peak RSS blocks: demak {flat['demak_mb']:.0f} MB, 4x {flat['4x_mb']:.0f} MB "
              f"(ratio {flat['ratio']:.2f})")
    if kills:
        print(f"kill -9/resume: {kills['n_bit_identical']}/{kills['n_trials']} bit-identical "
              f"({kills['n_killed']} killed before finishing)")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
