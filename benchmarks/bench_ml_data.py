"""ML data benchmark: patch export throughput, epoch throughput, peak RSS over a big shard set.

1. Export: synthesise a scene (not timed), export 256 px patches (vv, vh, stride 128).
2. Epoch throughput (patches/s) of 256 x 256 single-channel patches with the DataModule's
   training transform (dB, clip, [0, 1], flips/rotations), batch 8: lazy memory-mapped vs in
   memory, DataLoader with 0 and 2 workers.
3. Peak memory while iterating a shard set several times larger than the RSS target (default
   4 GB of shards, target 1 GB) in a fresh process, sampled every 50 ms: RSS of the main
   process, RSS summed over main + workers (counts shared pages once per process) and PSS
   summed over them (shared pages split fairly; the number compared with the target).

Writes benchmarks/results/ml_data.json (ml_data_quick.json with --quick) and prints a table.

    python benchmarks/bench_ml_data.py            # 4 GB shard set
    python benchmarks/bench_ml_data.py --quick    # 0.5 GB, under a minute or two
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
SIZE = 256
PATCH_MB = SIZE * SIZE * 4 / 2**20


def bench_export(workdir: Path, width: int, height: int, periods: int) -> dict:
    from fusecube.ml.patches import PatchExportConfig, export_patches
    from fusecube.sources.synthetic import SceneConfig, synthesize

    t0 = time.perf_counter()
    paths = synthesize(SceneConfig(width=width, height=height, seed=0, n_periods=periods),
                       workdir / "scene")
    synth_s = time.perf_counter() - t0
    cfg = PatchExportConfig(size=SIZE, stride=SIZE // 2, variables=("vv", "vh"), db=True,
                            shard_size=64)
    t0 = time.perf_counter()
    ps = export_patches(paths["cube"], workdir / "exported", cfg)
    seconds = time.perf_counter() - t0
    mb = sum(p.stat().st_size for p in ps.shard_paths) / 2**20
    return {"scene": f"{width}x{height}x{periods}", "synth_s": round(synth_s, 2),
            "patches": ps.count, "skipped": ps.meta["counts"]["skipped_invalid"],
            "channels": 2, "seconds": round(seconds, 3),
            "patches_per_s": round(ps.count / seconds, 1), "mb_per_s": round(mb / seconds, 1)}


def write_set(root: Path, n: int, shard_size: int = 256, seed: int = 0) -> None:
    """A synthetic single-channel linear sigma0 patch set of ``n`` 256 px patches."""
    from fusecube.ml.patches import ShardWriter, write_metadata

    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    base = (0.02 * rng.gamma(4.5, 1 / 4.5, size=(shard_size, 1, SIZE, SIZE))).astype(np.float32)
    writer = ShardWriter(root, shard_size)
    side = int(np.ceil(np.sqrt(n)))
    for start in range(0, n, shard_size):
        k = min(shard_size, n - start)
        idx = np.arange(start, start + k)
        writer.add(base[:k] * np.float32(1 + 0.1 * (start // shard_size % 7)), {
            "source": [0] * k, "time": ["2024-01-01T00:00:00"] * k, "time_index": [0] * k,
            "row": ((idx // side) * SIZE).tolist(), "col": ((idx % side) * SIZE).tolist(),
            "bbox": [[0, 0, 1, 1]] * k})
    writer.close()
    write_metadata(root, shards=writer.shards, table=writer.table, variables=["vh"],
                   patch_shape=(1, SIZE, SIZE), sources=[{"path": "bench", "times": ["t"]}],
                   preprocessing={"units": {"vh": "linear"}}, counts={})


def epoch(root: Path, *, lazy: bool, workers: int, batch: int = 8) -> dict:
    import torch

    from fusecube.ml.datamodules import SARDataModule

    torch.set_num_threads(1)
    dm = SARDataModule(root, batch_size=batch, num_workers=workers, lazy=lazy, pin_memory=False,
                       block_size=4 * SIZE)
    t0 = time.perf_counter()
    dm.setup()
    setup_s = time.perf_counter() - t0
    n = 0
    t0 = time.perf_counter()
    for b in dm.train_dataloader():
        n += b["image"].shape[0]
    seconds = time.perf_counter() - t0
    return {"lazy": lazy, "workers": workers, "patches": n, "setup_s": round(setup_s, 2),
            "seconds": round(seconds, 2), "patches_per_s": round(n / seconds, 1),
            "mb_per_s": round(n * PATCH_MB / seconds, 1)}


def _iterate_child(root: str, workers: int, epochs: int) -> None:
    """Run in a fresh process: iterate the lazy dataset, print patches and seconds."""
    import torch
    from torch.utils.data import DataLoader

    from fusecube.ml.datasets import LazyPatchDataset
    from fusecube.ml.samplers import SeededShuffle
    from fusecube.ml.sar import SARPreprocessing
    from fusecube.ml.transforms import Compose, FlipRotate, Preprocess

    torch.set_num_threads(1)
    params = SARPreprocessing.from_dict({"db": True, "norm": "minmax", "mean": [], "std": [],
                                         "clip": {"method": "fixed", "low": [-30.0],
                                                  "high": [0.0], "params": {}}})
    ds = LazyPatchDataset(root, transform=Compose([Preprocess(params), FlipRotate()]))
    sampler = SeededShuffle(len(ds), 0)
    loader = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=workers)
    n, t0 = 0, time.perf_counter()
    for e in range(epochs):
        sampler.set_epoch(e)
        for b in loader:
            n += b["image"].shape[0]
    print(json.dumps({"patches": n, "seconds": time.perf_counter() - t0}))


def peak_rss(root: Path, workers: int, epochs: int) -> dict:
    import psutil

    proc = subprocess.Popen([sys.executable, __file__, "--child", str(root), str(workers),
                             str(epochs)], stdout=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak_main = peak_total = peak_pss = 0.0
    while proc.poll() is None:
        try:
            procs = [ps, *ps.children(recursive=True)]
            rss = [p.memory_info().rss / 2**20 for p in procs]
            # PSS shares pages between the processes fairly (RSS sums count shared libs twice)
            pss = sum(p.memory_full_info().pss for p in procs) / 2**20
        except psutil.Error:
            continue
        peak_main = max(peak_main, rss[0])
        peak_total = max(peak_total, sum(rss))
        peak_pss = max(peak_pss, pss)
        time.sleep(0.05)
    out = json.loads(proc.stdout.read().strip().splitlines()[-1])
    return {"workers": workers, "epochs": epochs, "patches": out["patches"],
            "seconds": round(out["seconds"], 1),
            "patches_per_s": round(out["patches"] / out["seconds"], 1),
            "peak_rss_mb": round(peak_total, 0), "peak_rss_main_mb": round(peak_main, 0),
            "peak_pss_all_mb": round(peak_pss, 0)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _iterate_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--big-gb", type=float, default=None, help="size of the big shard set")
    ap.add_argument("--rss-target-mb", type=float, default=1024.0)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    big_gb = args.big_gb or (0.5 if args.quick else 4.0)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fusecube-bench-ml-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        export = bench_export(work, *((256, 256, 8) if args.quick else (512, 512, 24)))
        print(f"export  {export['patches']} patches ({export['scene']}, 2 ch, stride 128): "
              f"{export['patches_per_s']} patches/s, {export['mb_per_s']} MB/s")
        small_n = 128 if args.quick else 1024
        write_set(work / "small", small_n)
        epochs = []
        for lazy in (True, False):
            for workers in (0, 2):
                r = epoch(work / "small", lazy=lazy, workers=workers)
                epochs.append(r)
                print(f"epoch   {'lazy  ' if lazy else 'memory'} workers={workers}: "
                      f"{r['patches_per_s']} patches/s ({r['patches']} patches, "
                      f"{r['seconds']} s, setup {r['setup_s']} s)")
        big_n = int(big_gb * 2**30 / (SIZE * SIZE * 4))
        t0 = time.perf_counter()
        write_set(work / "big", big_n)
        write_s = time.perf_counter() - t0
        big_mb = big_n * PATCH_MB
        rss = []
        for workers in (0, 2):
            r = peak_rss(work / "big", workers, epochs=1)
            r["under_target"] = r["peak_pss_all_mb"] <= args.rss_target_mb
            rss.append(r)
            print(f"rss     {big_mb / 1024:.1f} GB set, workers={workers}: peak RSS main "
                  f"{r['peak_rss_main_mb']:.0f} MB, all processes {r['peak_rss_mb']:.0f} MB "
                  f"(PSS {r['peak_pss_all_mb']:.0f} MB; target {args.rss_target_mb:.0f} MB), "
                  f"{r['patches_per_s']} patches/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import torch

    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "torch": torch.__version__,
                    "note": "shared machine; wall-clock numbers are noisy"},
        "export": export, "epoch": epochs,
        "big_set": {"patches": big_n, "mb": round(big_mb, 0), "write_s": round(write_s, 1),
                    "rss_target_mb": args.rss_target_mb, "runs": rss},
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("ml_data_quick.json" if args.quick else "ml_data.json")
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
